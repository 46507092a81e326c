"""Tests of the replica controller (``ReplicaController._reconcile_all``).

Settled apps: an app whose rollout is progressing but whose plan has nothing to do (its
replicas are placed and running, not yet available) is planned once, then skipped by
later rounds until its own records or reports change, or until its plan's ``wake_at``
comes. Hosts away at its start: given a grace before they count as down (a restart or
a leader change must not move the replicas of hosts whose agents are reconnecting).

No etcd: the informer's states come from a ``LiveState`` fed key by key, the store,
informer and event log are fakes, and the controller's clock is a fake one."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import types
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from fleet._time import iso_at
from fleet.agent.config import AgentConfig
from fleet.controlplane import controller as controller_module
from fleet.controlplane.controller import ReplicaController
from fleet.controlplane.planner import plan_replicas
from fleet.controlplane.server import AGENTS_BACK_WITHIN
from fleet.controlplane.slots import ReplicaPlan
from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppSpec, load_documents
from fleet.store import ClusterState, KeyLayout
from fleet.store.informer import Subscription
from fleet.store.live import LiveState
from fleet.store.records import (
    AppRecord,
    ContainerReport,
    HostRecord,
    LiveRecord,
    ReplicaRecord,
    ResourceAmounts,
    RevisionRecord,
    RolloutRecord,
    StatusRecord,
)

LAYOUT = KeyLayout()
NOW = 1_800_000_000.0
MIN_READY = 10.0
READY_SINCE = NOW - 1.0  # running for a second: available at READY_SINCE + MIN_READY
WAKE_AT = READY_SINCE + MIN_READY
HOSTS = ("h1", "h2")  # slot s runs on HOSTS[s]


def web_spec() -> AppSpec:
    [parsed] = load_documents(
        f"name: web\nimage: img:v1\nreplicas: 2\nupdate: {{min_ready: {MIN_READY:g}}}\n",
        "app.yaml",
    )
    return parsed


# ---------------------------------------------------------------- the cluster


class Cluster:
    """A ``LiveState`` fed key by key, as the informer's watch feeds it."""

    def __init__(self) -> None:
        self.live = LiveState(LAYOUT)
        self.revision = 0

    def put(self, key: bytes, record: Any) -> None:
        self.revision += 1
        self.live.apply(key, record.dump(), self.revision)

    def state(self) -> ClusterState:
        return self.live.snapshot()

    def report(self, slot: int, *, cpu: float = 0.0) -> None:
        """The agent reports ``web``'s ``slot``: running, not yet available."""
        container = ContainerReport(
            app="web",
            slot=slot,
            revision=1,
            spec_hash="x",
            container_id=f"c-{slot}",
            name=f"fleet-web-{slot}",
            state="running",
            ready_since=iso_at(READY_SINCE),
            cpu=cpu,
        )
        self.put(LAYOUT.report(HOSTS[slot], "web", slot, 1), container)

    def host_status(self, host: str, *, cpu: float = 0.0) -> None:
        """``host``'s agent refreshes its usage (no container changed)."""
        status = StatusRecord(
            host_id=host,
            reported_at=iso_at(NOW),
            applied_version=1,
            usage=ResourceAmounts(cpu=cpu, memory=1 << 30),
        )
        self.put(LAYOUT.status(host), status)


def settled_cluster() -> Cluster:
    """``web`` (2 replicas at revision 1, one on each host) running but not available
    until ``WAKE_AT``, with the rollout record its plan keeps as it is."""
    cluster = Cluster()
    spec = web_spec()
    for host in HOSTS:
        capacity = ResourceAmounts(cpu=8.0, memory=16 << 30)
        cluster.put(
            LAYOUT.host(host), HostRecord(host_id=host, capacity=capacity, registered_at="t0")
        )
        cluster.put(LAYOUT.alive(host), LiveRecord(server="cp1", connected_at="t0"))
        cluster.host_status(host)
    cluster.put(
        LAYOUT.revision("web", 1),
        RevisionRecord(
            app="web", revision=1, template_hash=spec.template_hash(), spec=spec, created_at="t0"
        ),
    )
    cluster.put(
        LAYOUT.app("web"),
        AppRecord(spec=spec, generation=1, revision=1, created_at="t0", updated_at="t0"),
    )
    reserved = ResourceAmounts(cpu=spec.resources.cpu, memory=spec.resources.memory)
    for slot, host in enumerate(HOSTS):
        replica = ReplicaRecord(app="web", slot=slot, revision=1, host=host, resources=reserved)
        cluster.put(LAYOUT.replica("web", slot), replica)
        cluster.report(slot)
    # Store the rollout record the plan writes until the plan keeps it as it is.
    for _ in range(3):
        plan = plan_replicas(cluster.state(), "web", NOW)
        if plan.rollout is None:
            break
        cluster.put(LAYOUT.rollout("web"), plan.rollout[0])
    assert plan.is_empty() and not (plan.pending or plan.drain_blocked), plan
    assert plan.wake_at == WAKE_AT
    assert cluster.state().rollouts["web"].value.state == "progressing"
    return cluster


# ---------------------------------------------------------------- fakes


@dataclass
class FakeStore:
    """Records the plans committed (only a non-empty plan is)."""

    cluster: Cluster
    commits: list[tuple[str, RolloutRecord | None]] = field(default_factory=list)
    put: list[ReplicaRecord] = field(default_factory=list)  # every replica written

    async def commit_replicas(self, app: str, **plan: Any) -> int:
        rollout = plan["rollout"]
        self.commits.append((app, rollout[0] if rollout else None))
        self.put += [replica for replica, _ in plan["put"]]
        return self.cluster.revision + 1

    async def commit_upgrade(self, *step: Any) -> int:
        raise AssertionError("no upgrade walk runs in these tests")

    async def write_host(self, host: HostRecord, *, expected_mod_revision: int) -> int:
        raise AssertionError("no host drains in these tests")


@dataclass
class FakeInformer:
    cluster: Cluster

    def state(self) -> ClusterState:
        return self.cluster.state()

    def subscribe(self) -> asyncio.Event:
        return asyncio.Event()  # rounds are run by hand here

    async def wait_synced(self) -> None:
        pass

    async def wait_for_revision(self, revision: int) -> None:
        pass  # the fake store writes nothing the state would show


class FakeEvents:
    def __init__(self) -> None:
        self.kinds: list[tuple[str, str]] = []  # (kind, host) of every event recorded

    async def append(self, source: str, events: Sequence[pb.Event]) -> None:
        self.kinds += [(e.kind, e.host) for e in events]


@dataclass
class Harness:
    cluster: Cluster
    store: FakeStore
    controller: ReplicaController
    planned: Counter[str]  # app -> how many times plan_replicas ran for it
    clock: types.SimpleNamespace  # .now: what the controller's time.time() returns
    events: FakeEvents

    def round(self) -> None:
        asyncio.run(self.controller.reconcile_all())


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Harness:
    return make_harness(monkeypatch)


def make_harness(monkeypatch: pytest.MonkeyPatch, **controller_args: float | None) -> Harness:
    cluster = settled_cluster()
    clock = types.SimpleNamespace(now=NOW)
    monkeypatch.setattr(
        controller_module,
        "time",
        types.SimpleNamespace(time=lambda: clock.now, monotonic=time.monotonic),
    )
    planned: Counter[str] = Counter()

    def counting(state: ClusterState, app: str, *args: Any) -> ReplicaPlan:
        planned[app] += 1
        return plan_replicas(state, app, *args)

    monkeypatch.setattr(controller_module, "plan_replicas", counting)
    store = FakeStore(cluster)
    events = FakeEvents()
    controller = ReplicaController(store, FakeInformer(cluster), events, **controller_args)
    return Harness(cluster, store, controller, planned, clock, events)


# ---------------------------------------------------------------- tests


def test_progressing_app_with_nothing_to_do_is_planned_once(harness: Harness) -> None:
    for _ in range(3):
        harness.round()
    assert harness.planned["web"] == 1
    assert harness.store.commits == []


def test_a_change_of_its_reports_plans_it_again(harness: Harness) -> None:
    harness.round()
    harness.cluster.host_status("h1", cpu=1.5)  # not one of web's inputs
    harness.round()
    assert harness.planned["web"] == 1

    harness.cluster.report(1, cpu=0.25)  # state.changes.reports["web"] moves
    harness.round()
    assert harness.planned["web"] == 2
    harness.round()  # settled again on the new state
    assert harness.planned["web"] == 2
    assert harness.store.commits == []


def test_its_wake_at_plans_it_again(harness: Harness) -> None:
    harness.round()
    harness.clock.now = WAKE_AT - 0.5
    harness.round()
    assert harness.planned["web"] == 1

    harness.clock.now = WAKE_AT + 0.5  # both replicas are available: the rollout completes
    harness.round()
    assert harness.planned["web"] == 2
    [(app, rollout)] = harness.store.commits
    assert app == "web" and rollout is not None and rollout.state == "complete"


def test_a_skipping_round_still_wakes_at_the_settled_apps_wake_at(harness: Harness) -> None:
    harness.round()
    assert harness.controller._wake_at == WAKE_AT
    harness.round()  # web is skipped
    assert harness.controller._wake_at == WAKE_AT


def test_hosts_coming_and_going_plan_a_progressing_app_again(harness: Harness) -> None:
    """A rollout under way places replacements where there is room: the hosts count."""
    harness.round()
    harness.cluster.put(LAYOUT.alive("h1"), LiveRecord(server="cp2", connected_at="t1"))
    harness.round()
    assert harness.planned["web"] == 2


def test_hosts_coming_and_going_do_not_plan_a_finished_app_again(harness: Harness) -> None:
    """Once its rollout is over, an app with nothing to do depends on its hosts only
    through those lost: a storm of reconnecting hosts does not plan it at each one."""
    harness.clock.now = WAKE_AT + 0.5
    harness.round()  # the rollout completes
    [(_, rollout)] = harness.store.commits
    assert rollout is not None
    harness.cluster.put(LAYOUT.rollout("web"), rollout)
    harness.round()  # planned on the stored record: settled
    planned = harness.planned["web"]
    for n in range(3):  # an agent reconnects, to another replica: a new liveness key
        harness.cluster.put(LAYOUT.alive("h1"), LiveRecord(server=f"cp{n}", connected_at="t1"))
        harness.round()
    assert harness.planned["web"] == planned
    assert len(harness.store.commits) == 1


# ------------------------------------------- hosts down at the controller's first look


def cut_off(cluster: Cluster, host: str) -> None:
    """``host``'s liveness key goes (its lease expired)."""
    cluster.revision += 1
    cluster.live.apply(LAYOUT.alive(host), None, cluster.revision)


def test_a_host_down_at_the_first_look_is_given_the_start_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = make_harness(monkeypatch, reschedule_after=2.0, start_grace=3.0)
    cut_off(h.cluster, "h2")  # gone with the previous leader's lease, reconnecting
    h.round()
    h.clock.now = NOW + 4.0  # past reschedule_after, not past the grace and it
    h.round()
    assert h.store.put == [], "a restart moved a reconnecting host's replica"
    h.clock.now = NOW + 5.5  # grace (3) + reschedule_after (2): it is lost
    h.round()
    [moved] = h.store.put
    assert (moved.slot, moved.host) == (1, "h1")


def test_a_host_that_goes_down_after_the_grace_is_timed_from_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = make_harness(monkeypatch, reschedule_after=2.0, start_grace=3.0)
    h.round()  # every host connected at the first look
    cut_off(h.cluster, "h2")
    h.clock.now = NOW + 4.0
    h.round()  # seen down now: announced, and timed from now
    assert h.events.kinds == [("host-down", "h2")]
    h.clock.now = NOW + 5.5
    h.round()
    assert h.store.put == []
    h.clock.now = NOW + 6.5  # reschedule_after later
    h.round()
    [moved] = h.store.put
    assert (moved.slot, moved.host) == (1, "h1")


def test_a_host_lost_during_the_grace_is_timed_from_its_end_and_then_announced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = make_harness(monkeypatch, reschedule_after=2.0, start_grace=3.0)
    h.round()  # connected at the first look (the previous leader's lease still held)
    cut_off(h.cluster, "h2")  # that lease expires: the agent is reconnecting
    h.clock.now = NOW + 1.0
    h.round()
    assert h.events.kinds == []
    h.clock.now = NOW + 4.5  # past the grace: still away, so announced
    h.round()
    assert h.events.kinds == [("host-down", "h2")]
    assert h.store.put == []
    h.clock.now = NOW + 5.5  # grace + reschedule_after
    h.round()
    [moved] = h.store.put
    assert (moved.slot, moved.host) == (1, "h1")


def come_back(cluster: Cluster, host: str) -> None:
    """``host``'s agent registered again (with the new leader)."""
    cluster.put(LAYOUT.alive(host), LiveRecord(server="cp2", connected_at="t1"))


def test_the_grace_lasts_while_hosts_keep_coming_back(monkeypatch: pytest.MonkeyPatch) -> None:
    h = make_harness(monkeypatch, reschedule_after=2.0, start_grace=3.0)
    cut_off(h.cluster, "h1")
    cut_off(h.cluster, "h2")  # both away at the first look: a restart's reconnect storm
    h.round()
    h.clock.now = NOW + 2.5
    come_back(h.cluster, "h1")  # one is back: others may be on their way
    h.round()
    h.clock.now = NOW + 4.0  # past the first grace (3 s), within the one extended to 7.5
    h.round()
    assert ("host-down", "h2") not in h.events.kinds, "a host still reconnecting announced"
    h.clock.now = NOW + 8.0  # nobody came back for GRACE_WHILE_RETURNING: it is over
    h.round()
    assert [e for e in h.events.kinds if e[0] == "host-down"] == [("host-down", "h2")]
    h.clock.now = NOW + 9.0
    h.round()
    assert h.store.put == [], "timed from the grace's first end, not its last"
    h.clock.now = NOW + 10.0  # the grace's end (7.5) + reschedule_after
    h.round()
    [moved] = h.store.put
    assert (moved.slot, moved.host) == (1, "h1")


def test_a_grace_kept_going_by_returns_ends_at_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    h = make_harness(monkeypatch, reschedule_after=2.0, start_grace=3.0)
    cut_off(h.cluster, "h2")  # away, and never back
    h.round()
    cap = NOW + controller_module.GRACE_MAX_FACTOR * 3.0
    now = NOW
    while now < cap - 1.0:  # h1 flaps: it keeps coming back within the grace
        now += 1.0
        h.clock.now = now
        cut_off(h.cluster, "h1")
        h.round()
        come_back(h.cluster, "h1")
        h.round()
        downs = [e for e in h.events.kinds if e[0] == "host-down"]
        assert downs == [], f"announced at {now - NOW:g} s, before the grace's cap"
    h.clock.now = cap + 0.5
    h.round()
    assert ("host-down", "h2") in h.events.kinds


def test_a_new_leaders_grace_covers_an_agents_reconnect_backoff() -> None:
    [cap] = [f.default for f in dataclasses.fields(AgentConfig) if f.name == "reconnect_max"]
    assert cap == AGENTS_BACK_WITHIN


def test_a_host_that_goes_down_between_rounds_is_timed_from_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pause after a round still watches hosts: a host seen down during it waits
    ``reschedule_after`` from then, not from the next round (#24 item 2: rounds apart
    by seconds put off the moves of a host loss by as long)."""
    h = make_harness(monkeypatch, reschedule_after=2.0)
    h.round()
    h.clock.now = NOW + 1.0
    subscription = Subscription()

    async def pause_while_h2_goes() -> None:
        pausing = asyncio.create_task(h.controller._pause(subscription, 0.5))
        await asyncio.sleep(0)
        cut_off(h.cluster, "h2")
        subscription.notify()  # the informer's wake-up for that change
        await pausing

    asyncio.run(pause_while_h2_goes())
    assert h.events.kinds == [("host-down", "h2")]  # seen during the pause
    assert subscription._event.is_set(), "the next round must look at the change"
    h.clock.now = NOW + 2.9
    h.round()
    assert h.store.put == []
    h.clock.now = NOW + 3.1  # reschedule_after after the pause saw it
    h.round()
    [moved] = h.store.put
    assert (moved.slot, moved.host) == (1, "h1")


class SlowEvents(FakeEvents):
    """An event log whose writes take ``seconds`` (an etcd member away, a lease retried)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def append(self, source: str, events: Sequence[pb.Event]) -> None:
        await asyncio.sleep(self.seconds)
        await super().append(source, events)


def test_a_host_down_event_outlasting_the_pause_is_still_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pause's end must not cut off the write of an event for a host it already
    counted as announced: that host would never get its host-down event."""
    h = make_harness(monkeypatch)
    slow = SlowEvents(0.3)
    h.controller._events = slow
    h.round()
    h.clock.now = NOW + 1.0  # past the (zero) start grace
    subscription = Subscription()

    async def pause_while_h2_goes() -> None:
        pausing = asyncio.create_task(h.controller._pause(subscription, 0.1))
        await asyncio.sleep(0)
        cut_off(h.cluster, "h2")
        subscription.notify()
        await pausing

    asyncio.run(pause_while_h2_goes())
    assert slow.kinds == [("host-down", "h2")]


def test_an_event_log_that_hangs_costs_a_round_its_deadline_not_its_moves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(controller_module, "_EVENT_WRITE_DEADLINE", 0.2)
    h = make_harness(monkeypatch, reschedule_after=2.0)
    h.controller._events = SlowEvents(3600)
    h.round()
    h.clock.now = NOW + 1.0
    cut_off(h.cluster, "h2")
    started = time.monotonic()
    h.round()  # h2 seen down: its host-down event cannot be stored
    h.clock.now = NOW + 3.1
    h.round()
    assert time.monotonic() - started < 2.0
    [moved] = h.store.put
    assert (moved.slot, moved.host) == (1, "h1")
    assert "could not record 1 event(s) (host-down)" in caplog.text


# ------------------------------------------- most of the pool down at once: moves held


def more_hosts(cluster: Cluster, *hosts: str) -> None:
    """Hosts with nothing on them, connected."""
    for host in hosts:
        capacity = ResourceAmounts(cpu=8.0, memory=16 << 30)
        cluster.put(
            LAYOUT.host(host), HostRecord(host_id=host, capacity=capacity, registered_at="t0")
        )
        cluster.put(LAYOUT.alive(host), LiveRecord(server="cp1", connected_at="t0"))


def six_hosts_some_down(
    monkeypatch: pytest.MonkeyPatch, down: Sequence[str], **controller_args: float | None
) -> Harness:
    """h1-h6 (web's two replicas on h1 and h2), a round with all up, then ``down`` cut
    off and seen down by a round a second later (reschedule_after: 2 s)."""
    h = make_harness(monkeypatch, reschedule_after=2.0, **controller_args)
    more_hosts(h.cluster, "h3", "h4", "h5", "h6")
    h.round()
    for host in down:
        cut_off(h.cluster, host)
    h.clock.now = NOW + 1.0
    h.round()
    return h


def test_most_hosts_down_at_once_hold_their_replicas_until_fewer_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """4 of 6 hosts down (67% of them, at least 55%): h2's replica stays on h2 however long
    it waits, with one moves-held event; once two come back (2 of 6 down), a
    moves-resumed event, and h2 is timed from then: its replica moves reschedule_after
    later (the rest of a pool coming back may be a moment away)."""
    h = six_hosts_some_down(monkeypatch, ("h2", "h3", "h4", "h5"))
    for later in (4.0, 30.0, 600.0):
        h.clock.now = NOW + later
        h.round()
    assert h.store.put == [], "a replica of a host silent with most of the pool moved"
    assert h.controller.moves_held
    held = [kind for kind, _ in h.events.kinds if kind.startswith("moves-")]
    assert held == ["moves-held"]
    come_back(h.cluster, "h3")
    come_back(h.cluster, "h4")
    h.clock.now = NOW + 601.0
    h.round()
    assert not h.controller.moves_held
    h.clock.now = NOW + 602.5
    h.round()
    assert h.store.put == [], "a host down in the hold was not given its time after it"
    h.clock.now = NOW + 603.5
    h.round()
    [moved] = h.store.put
    assert moved.slot == 1 and moved.host in ("h1", "h3", "h4", "h6")
    assert [k for k, _ in h.events.kinds if k.startswith("moves-")] == [
        "moves-held",
        "moves-resumed",
    ]


@pytest.mark.parametrize(
    ("down", "hold"),
    [
        (("h2", "h3", "h4"), 0.55),  # 50%: under the share
        (("h2", "h3", "h4", "h5"), None),  # the hold turned off
    ],
)
def test_fewer_down_than_the_share_or_the_hold_off_move_as_ever(
    monkeypatch: pytest.MonkeyPatch, down: tuple[str, ...], hold: float | None
) -> None:
    h = six_hosts_some_down(monkeypatch, down, hold_moves_when_down=hold)
    h.clock.now = NOW + 3.5
    h.round()
    [moved] = h.store.put
    assert moved.slot == 1 and moved.host not in down
    assert not h.controller.moves_held
    assert not any(kind.startswith("moves-") for kind, _ in h.events.kinds)


def test_hosts_deregistered_move_even_while_moves_are_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Removing a host is an operator's act, never a partition's: its replicas move."""
    h = six_hosts_some_down(monkeypatch, ("h3", "h4", "h5", "h6"))
    assert h.controller.moves_held
    h.cluster.revision += 1
    h.cluster.live.apply(LAYOUT.host("h2"), None, h.cluster.revision)  # h2 removed
    h.clock.now = NOW + 2.0
    h.round()
    [moved] = h.store.put
    assert (moved.slot, moved.host) == (1, "h1")
