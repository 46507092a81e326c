"""A watch that fell behind takes etcd's answer in pieces (``fragments``), and the
informer shows its state only at the end of a revision, even where a transaction's
changes straddle two pieces. Unfragmented, such an answer came whole: 22,580 reports
(6.3 MB) in a 5,000-host ramp, held in gRPC's buffers, as bytes and as parsed messages
before the first was applied."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, cast

from fleet.store import KeyLayout
from fleet.store._etcd import Etcd, Put, WatchBatch
from fleet.store.informer import Informer
from fleet.store.records import ReplicaRecord, ResourceAmounts
from fleet.testing import EtcdServer

APPS = 120  # one transaction each, of TXN_PUTS replicas: about 2.9 MB in all
TXN_PUTS = 120  # (etcd's --max-txn-ops is 128 by default)
RESERVED = ResourceAmounts(cpu=0.1, memory=1 << 20)


async def _write_apps(etcd: Etcd, layout: KeyLayout) -> list[int]:
    """One transaction an app, each its own revision; the revisions."""
    revisions = []
    for n in range(APPS):
        app = f"app{n:02d}"
        puts = [
            Put(
                layout.replica(app, slot),
                ReplicaRecord(
                    app=app, slot=slot, revision=1, host=f"host-{slot}", resources=RESERVED
                ).dump(),
            )
            for slot in range(TXN_PUTS)
        ]
        result = await etcd.txn([], puts)
        assert result.succeeded
        revisions.append(await etcd.revision())
    return revisions


def test_a_watch_behind_gets_its_answer_in_pieces(etcd_server: EtcdServer) -> None:
    layout = KeyLayout("/t-watch-fragments/")

    async def run() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            start = await etcd.revision() + 1
            revisions = await _write_apps(etcd, layout)
            seen: list[tuple[bytes, int]] = []
            pieces: list[bool] = []
            watch = etcd.watch_prefix(layout.root, start, fragments=True)
            async for batch in watch:
                pieces.append(batch.fragment)
                seen.extend((event.key, event.mod_revision) for event in batch)
                if len(seen) >= APPS * TXN_PUTS:
                    break
            await watch.aclose()
            # More than one piece, all but the last a fragment; every change once, in order.
            assert len(pieces) >= 2 and all(pieces[:-1]) and not pieces[-1], pieces
            assert len(seen) == APPS * TXN_PUTS
            assert [revision for _, revision in seen] == sorted(
                r for r in revisions for _ in range(TXN_PUTS)
            )

    asyncio.run(run())


class _LateWatch:
    """The etcd client, but its watch starts only once ``gate`` is set (the informer's
    watch falls behind the writes made meanwhile) and notes each piece it passes on."""

    def __init__(self, etcd: Etcd, gate: asyncio.Event) -> None:
        self._etcd = etcd
        self._gate = gate
        self.pieces: list[tuple[bool, int]] = []  # (fragment, its last revision)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._etcd, name)

    async def watch_prefix(self, *args: Any, **kwargs: Any) -> AsyncGenerator[WatchBatch, None]:
        await self._gate.wait()
        async for batch in self._etcd.watch_prefix(*args, **kwargs):
            self.pieces.append((batch.fragment, batch.revision))
            yield batch


def test_the_informer_shows_no_transaction_half_applied(etcd_server: EtcdServer) -> None:
    layout = KeyLayout("/t-informer-fragments/")

    async def run() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            gate = asyncio.Event()
            late = _LateWatch(etcd, gate)
            informer = Informer(cast(Etcd, late), layout)
            task = asyncio.create_task(informer.run())
            try:
                await asyncio.wait_for(informer.wait_synced(), 10)
                subscription = informer.subscribe()
                await subscription.wait()  # (a new subscriber's first look)
                revisions = await _write_apps(etcd, layout)
                gate.set()
                looks: list[dict[str, int]] = []  # each app's replicas, at each wake-up

                async def follow() -> None:
                    while True:
                        await subscription.wait()
                        state = informer.state()
                        looks.append(
                            {f"app{n:02d}": state.replica_count(f"app{n:02d}") for n in range(APPS)}
                        )
                        # Its revision is one the state is whole at.
                        assert state.revision == informer.revision
                        if informer.revision >= revisions[-1]:
                            return

                await asyncio.wait_for(follow(), 30)
            finally:
                task.cancel()
            # The answer came in pieces, and at least one transaction straddled two of them.
            fragments = [revision for fragment, revision in late.pieces if fragment]
            assert fragments, late.pieces
            # Every look saw each app's transaction whole or not at all.
            for look in looks:
                assert set(look.values()) <= {0, TXN_PUTS}, look
            assert set(looks[-1].values()) == {TXN_PUTS}
            assert len(looks) >= 2  # (it was looked at between pieces, not only at the end)

    asyncio.run(run())
