"""Tests of ``EdgePush``: every edge session gets the table at once and each change of
it once; the table is computed once per change for all sessions, and again exactly
when a container is due to become available, with no change of the state to wake it.
The informer is a stand-in holding hand-made states (the feed itself is pure)."""

from __future__ import annotations

import asyncio
import time
from typing import cast

from fleet.controlplane.edgefeed import HOLD
from fleet.controlplane.edgepush import EdgePush
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, Informer, Subscription
from tests.unit.controlplane.builders import put_replica, report
from tests.unit.controlplane.test_edge_feed import PORTS, edge_state


class StubInformer:
    """The informer's surface the feed uses, over states set by the test."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self._subscriptions: list[Subscription] = []

    async def wait_synced(self) -> None:
        return None

    def state(self) -> ClusterState:
        return self._state

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscriptions.append(subscription)
        subscription.notify()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.remove(subscription)

    def change(self, state: ClusterState) -> None:
        self._state = state
        for subscription in self._subscriptions:
            subscription.notify()


class Edge:
    """One edge session's outbox, read as the stream reads it."""

    def __init__(self, push: EdgePush, host_id: str) -> None:
        self.outbox: asyncio.Queue[pb.ServerMessage] = asyncio.Queue()
        self.got: list[tuple[float, pb.EdgeConfig]] = []
        self.arrived = asyncio.Event()
        self.tasks = [
            asyncio.create_task(push.run(host_id, self.outbox)),
            asyncio.create_task(self._read()),
        ]

    async def _read(self) -> None:
        while True:
            message = await self.outbox.get()
            self.got.append((time.time(), message.edge))
            self.outbox.task_done()
            self.arrived.set()

    async def until(self, count: int) -> pb.EdgeConfig:
        """The ``count``-th table this edge got (waiting at most 5 s for it)."""
        async with asyncio.timeout(5.0):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.got[count - 1][1]

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


async def test_every_session_gets_each_table_once_computed_once_per_change() -> None:
    state = edge_state("h1", text="")
    informer = StubInformer(state)
    push = EdgePush(cast(Informer, informer))
    edges = [Edge(push, "e1"), Edge(push, "e2")]
    try:
        first = [await edge.until(1) for edge in edges]
        assert first[0] == first[1] and list(first[0].routes) == []
        computed = push.computed
        changed = edge_state("h1")  # web now has an ingress
        changed.revision = 105
        put_replica(changed, 0, "h1")
        report(changed, "h1", 0, 1, ready_since=time.time() - 60, ports=PORTS)
        informer.change(changed)
        second = [await edge.until(2) for edge in edges]
        assert second[0] == second[1] and second[0].version > first[0].version
        assert [b.state for b in second[0].routes[0].backends] == ["ready"]
        assert push.computed == computed + 1  # once for both sessions
        # A change that does not change the table sends nothing.
        informer.change(changed)
        await asyncio.sleep(0.2)
        assert [len(edge.got) for edge in edges] == [2, 2]
        # A session that connects later gets the newest table at once.
        late = Edge(push, "e3")
        assert await late.until(1) == second[0]
        late.close()
    finally:
        for edge in edges:
            edge.close()
        await push.close()


async def test_the_table_changes_when_a_container_becomes_available_without_a_change() -> None:
    now = time.time()
    state = edge_state("h1", text="ingress: {port: 8080}\nupdate: {min_ready: 1s}\n")
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ready_since=now - 0.7, ports=PORTS)  # available at now + 0.3
    push = EdgePush(cast(Informer, StubInformer(state)))
    edge = Edge(push, "e1")
    try:
        first = await edge.until(1)
        assert list(first.routes[0].backends) == []
        second = await edge.until(2)
        at = edge.got[1][0]
        assert [b.state for b in second.routes[0].backends] == ["ready"]
        assert now + 0.3 <= at < now + 1.5  # woken when due, not by a poll
        assert second.version > first.version
    finally:
        edge.close()
        await push.close()


async def test_an_edge_back_from_its_agents_restart_finds_its_own_backends_held() -> None:
    """The only edge's agent restarts: while it is away no table is computed, and when
    it is back (registered, not yet reported) its own host is silent. The feed's memory
    of the last table holds its backends until it reports, or for HOLD seconds."""
    offset = 0.0
    push_clock = lambda: time.time() + offset  # noqa: E731
    state = edge_state("h1", "h2")
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ready_since=time.time() - 60, ports=PORTS)
    informer = StubInformer(state)
    push = EdgePush(cast(Informer, informer), clock=push_clock)
    edge = Edge(push, "h1")
    try:
        first = await edge.until(1)
        assert [b.name for b in first.routes[0].backends] == ["web-0-r1-h1"]
        edge.close()  # its agent is killed: its session ends
        silent = edge_state("h1", "h2")
        silent.revision = 110
        put_replica(silent, 0, "h1")  # still desired there; no report (status gone)
        informer.change(silent)
        await asyncio.sleep(0.2)
        edge = Edge(push, "h1")  # back
        again = await edge.until(1)
        assert [b.name for b in again.routes[0].backends] == ["web-0-r1-h1"]
        offset = HOLD  # silent for HOLD seconds: let go
        informer.change(silent)
        gone = await edge.until(2)
        assert list(gone.routes[0].backends) == []
    finally:
        edge.close()
        await push.close()
