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


def test_the_kept_events_stay_under_their_byte_cap_oldest_dropped_first(
    etcd_server: EtcdServer,
) -> None:
    """Issue #17 (2): 345 MB of events once kept `fleet events` and a restarted control
    plane from working. The total is capped; the oldest batches go first."""

    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            layout = KeyLayout("/t-events-cap/")
            log = EventLog(etcd, layout, max_bytes=200_000)
            for batch in range(40):
                events = [
                    pb.Event(app="web", slot=batch, kind="x", message=f"{batch} {'m' * 900}")
                    for _ in range(20)
                ]
                await log.append("h1", events)
            await log.trim()
            kvs, _ = await etcd.get_prefix(layout.events())
            total = sum(len(kv.value) for kv in kvs)
            assert 150_000 < total <= 200_000
            assert sum(KeyLayout.event_size(kv.key) for kv in kvs) == total
            stored, _ = await log.history()
            slots = sorted({e.slot for e in stored})
            assert slots == list(range(40 - len(slots), 40))  # the newest are kept

    asyncio.run(scenario())


def test_events_are_read_a_page_at_a_time_and_the_last_n_from_the_end(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            log = EventLog(etcd, KeyLayout("/t-events-pages/"))
            for i in range(60):  # 60 batches of 50: three pages of 20 batches
                await log.append("h1", [pb.Event(app="web", slot=i, kind="x")] * 50)
            pages = [page async for page, _ in log.pages()]
            assert [len(p) for p in pages] == [1000, 1000, 1000]
            newest, _ = await log.newest(120, lambda e: e.slot % 2 == 0)
            assert len(newest) == 120 and {e.slot for e in newest} == {54, 56, 58}

    asyncio.run(scenario())
