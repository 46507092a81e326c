"""A host's session marked alive in one transaction from what an informer shows
(``Store.mark_alive_as_shown``, a restart's storm of unchanged registrations), on a
real etcd: it writes only while etcd holds what was shown, and otherwise nothing."""

from __future__ import annotations

import asyncio

from fleet.store import Etcd, KeyLayout, Store
from fleet.store.records import HostRecord, LiveRecord, ResourceAmounts
from fleet.testing import EtcdServer

HOST = "h1"


def host() -> HostRecord:
    capacity = ResourceAmounts(cpu=4, memory=1 << 30)
    return HostRecord(
        host_id=HOST, capacity=capacity, reported=capacity, registered_at="2026-12-07T00:00:00Z"
    )


def test_a_session_is_marked_alive_as_shown_only_while_etcd_holds_what_was_shown(
    etcd_server: EtcdServer,
) -> None:
    prefix = "/t-alive-shown/"
    layout = KeyLayout(prefix)

    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            store = Store(etcd, layout)
            lease, other = await etcd.grant(60), await etcd.grant(60)
            live = LiveRecord(server="cp", connected_at="2026-12-07T00:00:01Z")
            written = await store.write_host(host(), expected_mod_revision=0)

            async def alive_key() -> tuple[int, int] | None:
                kv = await etcd.get(layout.alive(HOST))
                return None if kv is None else (kv.mod_revision, kv.lease)

            # No liveness key shown, none there: the first session, nothing kept.
            first = await store.mark_alive_as_shown(
                HOST, live, lease, host_revision=written, alive_revision=0
            )
            assert first is not None and not first.kept and first.previous == 0
            assert await alive_key() == (first.session, lease)

            # Shown as it is, bound to this lease: the next session keeps its keys.
            again = await store.mark_alive_as_shown(
                HOST, live, lease, host_revision=written, alive_revision=first.session
            )
            assert again is not None and again.kept and again.previous == first.session
            assert again.session > first.session
            assert await alive_key() == (again.session, lease)

            # What was shown is not what etcd holds: nothing is written.
            refused = [
                # the liveness key shown as an older session (an informer behind)
                dict(host_revision=written, alive_revision=first.session, lease=lease),
                # shown as absent while a session holds it
                dict(host_revision=written, alive_revision=0, lease=lease),
                # bound to another replica's lease
                dict(host_revision=written, alive_revision=again.session, lease=other),
                # the host's record changed since it was shown
                dict(host_revision=written - 1, alive_revision=again.session, lease=lease),
            ]
            for shown in refused:
                result = await store.mark_alive_as_shown(
                    HOST,
                    live,
                    shown["lease"],
                    host_revision=shown["host_revision"],
                    alive_revision=shown["alive_revision"],
                )
                assert result is None, shown
                assert await alive_key() == (again.session, lease), shown

            # mark_alive, which reads what is there, still takes the host over.
            taken = await store.mark_alive(HOST, live, other)
            assert not taken.kept and taken.previous == again.session
            assert await alive_key() == (taken.session, other)
            await etcd.revoke(lease)
            await etcd.revoke(other)

    asyncio.run(scenario())
