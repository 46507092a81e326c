"""The report queue never has two reports of one host in flight: a heartbeat that comes
while the host's last report is worked out or written waits for that write, so the two
cannot be stored in the wrong order. A fake store
that holds its writes until told; the real one is in tests/integration/test_report_queue.py."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import cast

import pytest

from fleet.controlplane import reportqueue
from fleet.controlplane.reportqueue import ReportQueue
from fleet.controlplane.reports import ReportWriter
from fleet.errors import FleetError
from fleet.proto import fleet_pb2 as pb
from fleet.store import HostReport, Store
from tests.helpers import eventually


class HeldStore:
    """``report_many`` records each batch and returns only once released."""

    def __init__(self) -> None:
        self.batches: list[list[HostReport]] = []
        self.release = asyncio.Event()

    async def report_many(self, reports: Sequence[HostReport]) -> list[FleetError | None]:
        self.batches.append(list(reports))
        await self.release.wait()
        return [None] * len(reports)


def beat(state: str) -> pb.Heartbeat:
    return pb.Heartbeat(
        applied_version=1,
        containers=[pb.ContainerStatus(app="web", slot=0, revision=1, state=state)],
    )


def test_a_hosts_next_report_waits_for_its_last_to_be_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """h1's newer heartbeat comes while the queue works out a batch holding its older
    one (a batch of 25 hosts takes turns of the loop): it is written after that batch,
    never beside it."""
    monkeypatch.setattr(reportqueue, "_TAKE_SECONDS", 60.0)  # one batch, however slow

    async def scenario() -> None:
        store = HeldStore()
        queue = ReportQueue(cast(Store, store))
        writers = {f"h{i}": ReportWriter(f"h{i}", refresh=60) for i in range(1, 26)}
        for writer in writers.values():
            queue.submit(writer, 1, 7, beat("created"))

        async def newer_heartbeat_during_the_take() -> None:
            for _ in range(10_000):  # turn by turn, until the take has h1
                if "h1" not in queue._waiting:
                    queue.submit(writers["h1"], 1, 7, beat("running"))
                    return
                await asyncio.sleep(0)

        sender = asyncio.create_task(newer_heartbeat_during_the_take())
        runner = asyncio.create_task(queue.run())
        try:
            await eventually(lambda: len(store.batches) == 1, 5, "the first write")
            assert sender.done()
            assert len(store.batches[0]) == 25
            for _ in range(100):  # the queue's turns: nothing more goes out meanwhile
                await asyncio.sleep(0)
            assert len(store.batches) == 1
            store.release.set()
            await eventually(lambda: len(store.batches) == 2, 5, "h1's second write")
            [second] = store.batches[1]
            assert second.host_id == "h1"
            assert [c.state for c in second.changed] == ["running"]
        finally:
            runner.cancel()

    asyncio.run(scenario())


def test_a_report_with_nothing_to_write_frees_its_host_at_once() -> None:
    async def scenario() -> None:
        store = HeldStore()
        store.release.set()
        queue = ReportQueue(cast(Store, store))
        seen: list[float] = []
        queue.observe_write = seen.append
        writer = ReportWriter("h1", refresh=60)
        runner = asyncio.create_task(queue.run())
        try:
            queue.submit(writer, 1, 7, beat("running"))
            await eventually(lambda: len(seen) == 1, 5, "the first report stored")
            queue.submit(writer, 1, 7, beat("running"))  # the same: nothing to write
            await eventually(lambda: len(seen) == 2, 5, "the second timed")
            queue.submit(writer, 1, 7, beat("exited"))
            await eventually(lambda: len(store.batches) == 2, 5, "the change written")
            assert [c.state for c in store.batches[1][0].changed] == ["exited"]
        finally:
            runner.cancel()

    asyncio.run(scenario())


def test_a_batch_is_written_once_it_has_worked_out_for_long_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a loop too busy to work out a whole batch quickly, what was worked out goes
    at the next turn past ``_TAKE_SECONDS`` (here at once: every turn is past it), and
    the rest in the batches after it."""
    monkeypatch.setattr(reportqueue, "_TAKE_SECONDS", 0.0)

    async def scenario() -> None:
        store = HeldStore()
        store.release.set()
        queue = ReportQueue(cast(Store, store))
        for i in range(50):
            queue.submit(ReportWriter(f"h{i}", refresh=60), 1, 7, beat("created"))
        runner = asyncio.create_task(queue.run())
        try:
            await eventually(lambda: sum(map(len, store.batches)) == 50, 5, "every report")
            assert [len(batch) for batch in store.batches] == [20, 20, 10]
        finally:
            runner.cancel()

    asyncio.run(scenario())


def test_a_batch_is_bounded_by_the_keys_it_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts whose reports change many containers fill a batch by their keys before its
    count of hosts: each report here writes its host's record and 9 containers' (10
    keys), so batches of at most 30 keys hold 3 hosts each."""
    monkeypatch.setattr(reportqueue, "_TAKE_SECONDS", 60.0)
    monkeypatch.setattr(reportqueue, "_KEYS_PER_BATCH", 30)
    many = pb.Heartbeat(
        applied_version=1,
        containers=[
            pb.ContainerStatus(app="web", slot=slot, revision=1, state="running")
            for slot in range(9)
        ],
    )

    async def scenario() -> None:
        store = HeldStore()
        store.release.set()
        queue = ReportQueue(cast(Store, store))
        for i in range(7):
            queue.submit(ReportWriter(f"h{i}", refresh=60), 1, 7, many)
        runner = asyncio.create_task(queue.run())
        try:
            await eventually(lambda: sum(map(len, store.batches)) == 7, 5, "every report")
            assert [len(batch) for batch in store.batches] == [3, 3, 1]
            keys = [[1 + len(r.changed) for r in batch] for batch in store.batches]
            assert keys == [[10, 10, 10], [10, 10, 10], [10]]
            assert all(r.status is not None for batch in store.batches for r in batch)
        finally:
            runner.cancel()

    asyncio.run(scenario())


def test_the_queue_never_holds_a_parsed_heartbeat() -> None:
    """A waiting heartbeat is held as sent, and once worked out the batch in flight
    holds what is written. (A parsed heartbeat of 100 containers is 48 KB, 21 KB as
    sent; a restart's storm has every host's first heartbeat waiting at once, and up
    to 16 batches of 200 hosts can be in flight while etcd is slow.)"""

    async def scenario() -> None:
        store = HeldStore()  # holds the batch in flight until released
        queue = ReportQueue(cast(Store, store))
        heartbeat = beat("running")
        alone = sys.getrefcount(heartbeat)
        queue.submit(ReportWriter("h1", refresh=60), 1, 7, heartbeat)
        assert sys.getrefcount(heartbeat) == alone  # waiting, as sent
        runner = asyncio.create_task(queue.run())
        try:
            await eventually(lambda: len(store.batches) == 1, 5, "the write")
            assert [c.state for c in store.batches[0][0].changed] == ["running"]
            assert sys.getrefcount(heartbeat) == alone
            store.release.set()
        finally:
            runner.cancel()

    asyncio.run(scenario())
