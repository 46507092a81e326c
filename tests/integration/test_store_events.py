"""The event log on a real etcd: a batch larger than etcd's 128 operations per
transaction is stored whole, in several transactions."""

from __future__ import annotations

import asyncio

from fleet.proto import fleet_pb2 as pb
from fleet.store import Etcd, EventLog, KeyLayout
from fleet.testing import EtcdServer


def test_appending_300_events_stores_all_300(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            log = EventLog(etcd, KeyLayout("/t-events-300/"))
            batch = [
                pb.Event(source="agent", host="h1", app="web", slot=i, kind="start")
                for i in range(300)
            ]
            await log.append("h1", batch)
            stored, _ = await log.history()
            assert sorted(e.slot for e in stored) == list(range(300))
            # Keys sort by time and sequence: history comes back in the order appended.
            assert [e.slot for e in stored] == list(range(300))

    asyncio.run(scenario())


def test_a_flood_of_large_events_is_stored_whole(etcd_server: EtcdServer) -> None:
    """100,000 replicas going unschedulable at once make 100,000 events: stored in
    transactions that stay under etcd's 1.5 MiB request limit."""

    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            log = EventLog(etcd, KeyLayout("/t-events-flood/"))
            batch = [
                pb.Event(source="controlplane", app="web", slot=i, kind="x", message="m" * 1024)
                for i in range(20_000)
            ]
            await log.append("controlplane", batch)
            stored, _ = await log.history()
            assert [e.slot for e in stored] == list(range(20_000))

    asyncio.run(scenario())
