"""The informer on a real etcd follows the watch's revision past the keys it leaves
out (the events): a caller that waits for etcd's current revision, which an event's
write may be, is answered at once, not at the state's next change. An apply that lost
a race to another waited 10 s this way once and failed with "this server's view of
etcd is behind"."""

from __future__ import annotations

import asyncio

import pytest

from fleet.store import KeyLayout
from fleet.store import informer as informer_module
from fleet.store._etcd import Etcd, Put
from fleet.store.informer import Informer
from fleet.store.records import ReplicaRecord, ResourceAmounts
from fleet.testing import EtcdServer
from tests.helpers import eventually


def test_an_events_write_is_a_revision_the_informer_reaches(etcd_server: EtcdServer) -> None:
    layout = KeyLayout("/t-informer-revisions/")
    reserved = ResourceAmounts(cpu=0.1, memory=1 << 20)

    async def run() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            replica = ReplicaRecord(app="web", slot=0, revision=1, host="h1", resources=reserved)
            await etcd.put(layout.replica("web", 0), replica.dump())
            informer = Informer(etcd, layout)
            task = asyncio.create_task(informer.run())
            try:
                await asyncio.wait_for(informer.wait_synced(), 10)
                subscription = informer.subscribe()
                await subscription.wait()  # (a new subscriber's first look)
                # Only the events' folder changes: the state does not, the revision does.
                await etcd.put(layout.events() + b"0001-test", b"[]")
                current = await etcd.revision()
                await asyncio.wait_for(informer.wait_for_revision(current), 5)
                assert informer.revision == current
                assert informer.state().revision == current
                assert sorted(informer.state().replica_slots("web")) == [0]
                # Nothing the subscribers look at changed: they are not woken for it.
                assert not subscription._event.is_set()
                await etcd.put(
                    layout.replica("web", 1), replica.model_copy(update={"slot": 1}).dump()
                )
                await asyncio.wait_for(subscription.wait(), 5)
                assert sorted(informer.state().replica_slots("web")) == [0, 1]
            finally:
                task.cancel()

    asyncio.run(run())


def test_a_waiter_wakes_when_its_revision_is_reached_and_not_before(
    etcd_server: EtcdServer,
) -> None:
    """Callers wait for revisions of their own writes (a storm of registrations, each for
    its liveness write): each wakes once the informer has seen its revision, none at an
    earlier change, and one that gives up leaves the others waiting."""
    layout = KeyLayout("/t-informer-waiters/")
    reserved = ResourceAmounts(cpu=0.1, memory=1 << 20)

    async def run() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            informer = Informer(etcd, layout)
            task = asyncio.create_task(informer.run())
            try:
                await asyncio.wait_for(informer.wait_synced(), 10)
                start = await etcd.revision()
                woken: list[int] = []

                async def wait(ahead: int) -> None:
                    await informer.wait_for_revision(start + ahead)
                    woken.append(ahead)

                waiters = [asyncio.create_task(wait(ahead)) for ahead in (3, 1, 2)]
                gave_up = asyncio.create_task(wait(2))
                for _ in range(3):  # every waiter starts waiting
                    await asyncio.sleep(0)
                gave_up.cancel()
                for slot in range(3):
                    replica = ReplicaRecord(
                        app="web", slot=slot, revision=1, host="h1", resources=reserved
                    )
                    await etcd.put(layout.replica("web", slot), replica.dump())
                    written = start + slot + 1
                    await asyncio.wait_for(informer.wait_for_revision(written), 5)
                    # Those reached wake, in order; one woken early would never match.
                    expected = list(range(1, slot + 2))
                    await eventually(
                        lambda expected=expected: woken == expected, 5, f"waiters to {slot + 1}"
                    )
                await asyncio.wait_for(asyncio.gather(*waiters), 5)
                assert gave_up.cancelled()
            finally:
                task.cancel()

    asyncio.run(run())


def test_a_large_answer_is_applied_in_turns_each_revision_whole(
    etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One answer of etcd's watch holding several transactions (a watch that starts
    behind, as after a slow turn): the informer applies it a revision at a time, lets the
    loop run between revisions once it has applied enough, and a reader in between sees
    only whole transactions. An events' write in the answer is left out and still
    counted in the revision reached."""
    layout = KeyLayout("/t-informer-turns/")
    reserved = ResourceAmounts(cpu=0.1, memory=1 << 20)
    monkeypatch.setattr(informer_module, "_EVENTS_PER_TURN", 40)
    per_txn, txns = 50, 4

    async def run() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            before = await etcd.revision()
            for n in range(txns):
                puts = [
                    Put(
                        layout.replica("web", slot),
                        ReplicaRecord(
                            app="web", slot=slot, revision=1, host="h1", resources=reserved
                        ).dump(),
                    )
                    for slot in range(n * per_txn, (n + 1) * per_txn)
                ]
                await etcd.txn([], puts)
            await etcd.put(layout.events() + b"0001-test", b"[]")
            last = await etcd.revision()
            assert last == before + txns + 1
            informer = Informer(etcd, layout)

            async def listed_before_the_writes() -> None:
                # As if the informer had listed the prefix (empty) before the writes:
                # its watch starts behind them, and etcd answers with all of them.
                informer._live.revision = informer._revision = before
                informer._synced.set()

            monkeypatch.setattr(informer, "_list", listed_before_the_writes)
            seen: list[int] = []  # replicas a reader sees at each turn of the loop
            task = asyncio.create_task(informer.run())
            try:
                async with asyncio.timeout(10):  # (a watch that never gets there: fail)
                    while informer.revision < last:
                        seen.append(len(informer.state().replica_slots("web")))
                        await asyncio.sleep(0)
            finally:
                task.cancel()
            assert len(informer.state().replica_slots("web")) == per_txn * txns
            assert informer.state().revision == last
            # Whole transactions only, and the loop ran between each two (each is past
            # the 40 changes a turn).
            assert all(count % per_txn == 0 for count in seen), seen
            assert {per_txn, 2 * per_txn, 3 * per_txn} <= set(seen), seen

    asyncio.run(run())
