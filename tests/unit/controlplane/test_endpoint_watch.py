"""Tests of ``endpointwatch``: the list at once, then each change once, including the
one time alone makes (a container becoming available after ``min_ready``: a timer,
no change of the state); over a stand-in informer holding hand-made states."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import cast

from fleet.controlplane.endpointwatch import endpoints_due, watch_endpoints
from fleet.proto import fleet_pb2 as pb
from fleet.store import Informer
from tests.unit.controlplane.builders import NOW, put_replica, report
from tests.unit.controlplane.test_edge_feed import PORTS, edge_state
from tests.unit.controlplane.test_edge_push import StubInformer


def test_due_when_a_running_container_becomes_available() -> None:
    state = edge_state("h1", text="update: {min_ready: 3s}\n")
    assert endpoints_due(state, "web", NOW) is None  # no replica
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ready_since=NOW - 1.0, ports=PORTS)
    assert endpoints_due(state, "web", NOW) == NOW + 2.0
    assert endpoints_due(state, "web", NOW + 2.0) is None  # available: nothing due
    assert endpoints_due(state, "nope", NOW) is None


async def test_the_list_at_once_then_on_the_timer_then_on_a_change_each_once() -> None:
    now = time.time()
    state = edge_state("h1", text="update: {min_ready: 1s}\n")
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ready_since=now - 0.7, ports=PORTS)  # available at now + 0.3
    informer = StubInformer(state)
    got: list[tuple[float, pb.EndpointList]] = []
    arrived = asyncio.Event()

    async def follow() -> None:
        async for found in watch_endpoints(cast(Informer, informer), "web"):
            got.append((time.time(), found))
            arrived.set()

    async def until(count: int) -> pb.EndpointList:
        async with asyncio.timeout(5.0):
            while len(got) < count:
                arrived.clear()
                await arrived.wait()
        return got[count - 1][1]

    task = asyncio.create_task(follow())
    try:
        first = await until(1)
        assert list(first.endpoints) == [] and got[0][0] < now + 0.3  # at once: none yet
        second = await until(2)
        assert [(e.slot, e.address, e.host_port) for e in second.endpoints] == [
            (0, "10.0.0.1", 32768)
        ]
        assert now + 0.3 <= got[1][0] < now + 1.5  # woken when due, not by a poll
        assert second.version > first.version
        # A change that leaves the list as it was sends nothing.
        informer.change(state)
        await asyncio.sleep(0.2)
        assert len(got) == 2
        # Scaled away: the replica is no longer desired, the list is empty again.
        gone = edge_state("h1", text="update: {min_ready: 1s}\n")
        report(gone, "h1", 0, 1, ready_since=now - 5, ports=PORTS)
        informer.change(gone)
        third = await until(3)
        assert list(third.endpoints) == [] and third.version > second.version
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert informer._subscriptions == []  # the watch's end unsubscribed it
