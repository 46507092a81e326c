"""Tests of ``DesiredPush``: a host's sets follow the state, and changes that keep
coming go out together, no sooner than ``_PUSH_MIN_GAP`` after the host's last set."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import pytest

from fleet.controlplane import desiredpush
from fleet.controlplane.desiredpush import DesiredPush, HostPush
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, Informer
from fleet.store.records import ReplicaRecord, ResourceAmounts
from tests.helpers import eventually
from tests.unit.controlplane.builders import add_app, add_host, app_spec, put_replica
from tests.unit.controlplane.test_controller_settled import LAYOUT, Cluster, settled_cluster
from tests.unit.controlplane.test_edge_push import StubInformer

GAP = 0.6
# A set is timed when the host's reader takes it, a turn of the loop or more after the
# push put it in the outbox and timed its gap from then: on a loaded machine the first
# one's turn came 20 ms late (CI). Each test's set without the gap would come 0.4 s sooner.
LATE_TAKE = 0.1


def one_replica_state() -> ClusterState:
    state = ClusterState(revision=100)
    add_host(state, "h1")
    add_app(state, app_spec(1), revision=1)
    put_replica(state, 0, "h1")
    return state


async def received(outbox: asyncio.Queue[bytes], sets: list[tuple[float, set[int]]]) -> None:
    """Take every set the host is sent, as its agent's stream does."""
    while True:
        message = pb.ServerMessage.FromString(await outbox.get())  # (put serialized)
        sets.append((time.monotonic(), {c.slot for c in message.desired.containers}))
        outbox.task_done()


@dataclass
class OneHost:
    """h1 holding web's slot 0 (``state``, changed through ``informer``), its pushes
    started (``pushed``) and every set it takes (``sets``)."""

    state: ClusterState
    informer: StubInformer
    push: DesiredPush
    pushed: HostPush
    sets: list[tuple[float, set[int]]]


@contextlib.asynccontextmanager
async def one_host() -> AsyncIterator[OneHost]:
    state = one_replica_state()
    informer = StubInformer(state)
    push = DesiredPush(cast(Informer, informer), None)
    outbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
    sets: list[tuple[float, set[int]]] = []
    pushed = push.start("h1", outbox)
    reader = asyncio.create_task(received(outbox, sets))
    try:
        yield OneHost(state, informer, push, pushed, sets)
    finally:
        push.stop(pushed)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await push.close()


async def test_changes_that_keep_coming_go_together_after_the_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(desiredpush, "_PUSH_MIN_GAP", GAP)
    async with one_host() as host:
        state, informer, sets = host.state, host.informer, host.sets
        await eventually(lambda: len(sets) == 1)
        assert sets[0][1] == {0}  # the first set goes at once
        # Four changes, one every 50 ms, right after the first set: the host gets
        # them in one set, not before the gap is over.
        for slot in range(1, 5):
            put_replica(state, slot, "h1")
            informer.change(informer.state())
            await asyncio.sleep(0.05)
        await eventually(lambda: len(sets) >= 2 and sets[-1][1] == {0, 1, 2, 3, 4})
        assert len(sets) == 2
        assert sets[1][0] - sets[0][0] >= GAP - LATE_TAKE
        # After a quiet spell longer than the gap, a change goes at once.
        await eventually(lambda: time.monotonic() - sets[1][0] > GAP)
        changed_at = time.monotonic()
        put_replica(state, 5, "h1")
        informer.change(informer.state())
        await eventually(lambda: len(sets) == 3)
        assert sets[2][1] == {0, 1, 2, 3, 4, 5}
        assert sets[2][0] - changed_at < GAP


async def test_a_host_at_rest_holds_no_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host's pushes run in a task only while a set is owed (#24 item 3: a task
    waiting for the next change was 0.9 KiB a connected host)."""
    monkeypatch.setattr(desiredpush, "_PUSH_MIN_GAP", 0.05)
    async with one_host() as host:
        state, informer, pushed, sets = host.state, host.informer, host.pushed, host.sets
        await eventually(lambda: len(sets) == 1 and pushed.task is None)
        put_replica(state, 1, "h1")
        informer.change(informer.state())
        await eventually(lambda: len(sets) == 2 and pushed.task is None)
        assert sets[1][1] == {0, 1}
        # Stopped with a set owed (waiting out its gap): its task ends, and no set goes
        # out after.
        monkeypatch.setattr(desiredpush, "_PUSH_MIN_GAP", 5.0)
        put_replica(state, 2, "h1")
        informer.change(informer.state())
        await eventually(lambda: pushed.task is not None)
        task = pushed.task
        host.push.stop(pushed)
        await asyncio.gather(task, return_exceptions=True)
        assert task is not None and task.cancelled() and pushed.task is None
        await asyncio.sleep(0.2)
        assert len(sets) == 2


async def test_a_set_that_fails_to_build_is_logged_and_built_at_the_next_change(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(desiredpush, "_PUSH_MIN_GAP", 0.05)
    async with one_host() as host:
        state, informer, pushed, sets = host.state, host.informer, host.pushed, host.sets
        await eventually(lambda: len(sets) == 1 and pushed.task is None)
        building = host.push._message

        def failing(host_id: str, inputs: object, sent: str) -> tuple[object, object, str]:
            raise RuntimeError("a spec that does not build")

        host.push._message = failing  # type: ignore[method-assign,assignment]
        put_replica(state, 1, "h1")
        informer.change(informer.state())
        await eventually(lambda: "could not be built" in caplog.text)
        assert "host h1" in caplog.text and "a spec that does not build" in caplog.text
        await eventually(lambda: pushed.task is None)
        host.push._message = building  # type: ignore[method-assign]
        put_replica(state, 2, "h1")
        informer.change(informer.state())
        await eventually(lambda: len(sets) == 2)
        assert sets[1][1] == {0, 1, 2}


class TwoHosts:
    """web's slot 0 on h1 and slot 1 on h2 (a ``LiveState``'s changes), each host's
    sets as it takes them (``sets``), pushed by ``push``."""

    def __init__(self) -> None:
        self.cluster = settled_cluster()
        self.informer = LiveInformer(self.cluster)
        self.push = DesiredPush(cast(Informer, self.informer), None)
        self.sets: dict[str, list[tuple[float, set[int]]]] = {"h1": [], "h2": []}

    def place(self, *slots: tuple[int, str]) -> None:
        """Replicas of web for these (slot, host), in one change."""
        for slot, host in slots:
            reserved = ResourceAmounts(cpu=0.0, memory=0)
            replica = ReplicaRecord(app="web", slot=slot, revision=1, host=host, resources=reserved)
            self.cluster.put(LAYOUT.replica("web", slot), replica)
        self.informer.change(self.informer.state())

    async def first_sets_taken(self) -> None:
        """Each host has its first set, and 0.2 s went by (the dispatcher has looked)."""
        sets = self.sets.values()
        await eventually(lambda: all(len(s) == 1 for s in sets))
        await eventually(lambda: time.monotonic() - max(s[0][0] for s in sets) > 0.2)


@contextlib.asynccontextmanager
async def two_hosts() -> AsyncIterator[TwoHosts]:
    hosts = TwoHosts()
    tasks, pushes = [], []
    for host, sets in hosts.sets.items():
        outbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        pushes.append(hosts.push.start(host, outbox))
        tasks.append(asyncio.create_task(received(outbox, sets)))
    try:
        yield hosts
    finally:
        for push in pushes:
            hosts.push.stop(push)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hosts.push.close()


async def test_a_change_reaching_many_hosts_takes_the_wide_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One look that finds many hosts' replicas changed (an apply, a host loss's moves)
    gives every host the wide gap: their next sets wait for the changes that follow."""
    monkeypatch.setattr(desiredpush, "_PUSH_MIN_GAP", 0.1)
    monkeypatch.setattr(desiredpush, "_PUSH_WIDE_GAP", GAP)
    monkeypatch.setattr(desiredpush, "_WIDE_CHANGE", 2)
    async with two_hosts() as hosts:
        sets = hosts.sets
        await hosts.first_sets_taken()
        hosts.place((2, "h1"), (3, "h2"))  # both hosts get a replica in one change: wide
        await eventually(lambda: all(len(s) == 2 for s in sets.values()))
        assert sets["h1"][1][1] == {0, 2} and sets["h2"][1][1] == {1, 3}
        for s in sets.values():
            assert s[1][0] - s[0][0] >= GAP - LATE_TAKE, "a wide change went before the wide gap"


async def test_the_wide_gap_ends_once_the_changes_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changes to many hosts that keep coming go together; once they stop for
    ``_PUSH_QUIET``, the sets go out without waiting out the rest of the wide gap (a
    large apply's last sets waited up to 4 s after its last placement)."""
    quiet = 0.3
    monkeypatch.setattr(desiredpush, "_PUSH_MIN_GAP", 0.1)
    monkeypatch.setattr(desiredpush, "_PUSH_WIDE_GAP", 30.0)
    monkeypatch.setattr(desiredpush, "_WIDE_CHANGE", 2)
    monkeypatch.setattr(desiredpush, "_PUSH_QUIET", quiet)
    async with two_hosts() as hosts:
        sets = hosts.sets
        await hosts.first_sets_taken()
        # Three wide changes 0.15 s apart (each a replica for both hosts), then none.
        for first in (2, 4, 6):
            hosts.place((first, "h1"), (first + 1, "h2"))
            last_change = time.monotonic()
            await asyncio.sleep(0.15)
        await eventually(lambda: all(len(s) >= 2 for s in sets.values()))
        # The hosts' first sets had just gone: the changes waited for the wide gap, and
        # went together once quiet, not 30 s later.
        assert sets["h1"][-1][1] == {0, 2, 4, 6}
        assert sets["h2"][-1][1] == {1, 3, 5, 7}
        for s in sets.values():
            assert len(s) <= 3, "changes that kept coming were not folded together"
            assert s[-1][0] - last_change >= quiet - LATE_TAKE, "sent before the changes stopped"
            assert s[-1][0] - last_change < 5, "the wide gap was waited out"


class LiveInformer(StubInformer):
    """Over a ``LiveState`` fed key by key: its snapshots say what changed."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster.state())
        self._cluster = cluster

    def state(self) -> ClusterState:
        return self._cluster.state()


async def test_sets_woken_together_are_built_one_per_turn_of_the_loop() -> None:
    """Many hosts' sets woken at once (their first sets here, a change of every host's
    replicas in a ramp) are built one at a time, each behind what came meanwhile: a
    call arriving while they wait runs before most of them, not after all."""
    hosts = [f"h{i}" for i in range(1, 41)]
    state = ClusterState(revision=100)
    add_app(state, app_spec(1), revision=1)
    for slot, host in enumerate(hosts):
        add_host(state, host)
        put_replica(state, slot, host)
    push = DesiredPush(cast(Informer, StubInformer(state)), None)
    built: list[str] = []
    building = push._message

    def counted(host_id: str, inputs: object, sent: str) -> tuple[object, object, str]:
        built.append(host_id)
        return building(host_id, inputs, sent)

    push._message = counted  # type: ignore[method-assign,assignment]
    outboxes = {h: asyncio.Queue[bytes](maxsize=1) for h in hosts}
    sessions = [push.start(h, outboxes[h]) for h in hosts]
    try:
        await asyncio.sleep(0)  # every session has started and waits to build
        seen_at: list[int] = []
        asyncio.get_running_loop().call_soon(lambda: seen_at.append(len(built)))
        await eventually(lambda: len(built) == len(hosts))
        assert seen_at and seen_at[0] <= 2, f"the call ran after {seen_at} builds"
        assert all(outbox.qsize() == 1 for outbox in outboxes.values())
    finally:
        for session in sessions:
            push.stop(session)
        await push.close()


async def first_set(push: DesiredPush, held: str, within: float) -> pb.DesiredSet | None:
    """The set a session registering with ``held`` is sent within ``within`` seconds, or
    None."""
    outbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
    session = push.start("h1", outbox, held)
    try:
        async with asyncio.timeout(within):
            return pb.ServerMessage.FromString(await outbox.get()).desired
    except TimeoutError:
        return None
    finally:
        push.stop(session)


async def test_a_host_holding_its_set_is_not_sent_it_again() -> None:
    state = one_replica_state()
    informer = StubInformer(state)
    push = DesiredPush(cast(Informer, informer), None)
    try:
        sent = await first_set(push, held="", within=5)
        assert sent is not None and [c.slot for c in sent.containers] == [0]
        assert len(sent.fingerprint) == 64
        # An agent that registers again holding that set (a restart of the control plane)
        # is sent none; not even once the state's revision moved on without the set
        # changing (another host's record).
        add_host(state, "h2")
        state.revision += 10
        informer.change(state)
        assert await first_set(push, held=sent.fingerprint, within=0.3) is None
        # Any other fingerprint (another set, or text that is none) is sent the set.
        for held in ("0" * 64, "not-a-fingerprint", sent.fingerprint.upper()):
            again = await first_set(push, held=held, within=5)
            assert again is not None and again.fingerprint == sent.fingerprint
        # Once the set changes, so does its fingerprint: the holder of the old one is
        # sent the new set.
        put_replica(state, 1, "h1")
        informer.change(state)
        changed = await first_set(push, held=sent.fingerprint, within=5)
        assert changed is not None and {c.slot for c in changed.containers} == {0, 1}
        assert changed.fingerprint != sent.fingerprint
    finally:
        await push.close()
