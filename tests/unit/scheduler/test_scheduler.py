"""Tests of fleet.scheduler through ``schedule``: every filter's rejection reason as
``Plan.explain`` words it, the scores' effect on where replicas go, determinism, and
properties over random clusters (no over-commit, counting fresh live usage; constraints,
host state, max_per_host and fixed host ports honoured; every request accounted for once;
the same plan for the same input)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.scheduler import (
    HostView,
    PlacedReplica,
    Placement,
    PlacementStrategy,
    Plan,
    ReplicaRequest,
    Snapshot,
    schedule,
)
from fleet.spec import Constraint

Mi = 1 << 20
Gi = 1 << 30


def host(
    host_id: str,
    *,
    cpu: float = 4.0,
    memory: int = 8 * Gi,
    labels: dict[str, str] | None = None,
    state: str = "ready",
    connected: bool = True,
) -> HostView:
    return HostView(host_id, cpu, memory, labels or {}, state=state, connected=connected)


def request(
    app: str = "web",
    slot: int = 0,
    *,
    cpu: float = 0.0,
    memory: int = 0,
    ports: tuple[str, ...] = (),
    constraints: tuple[str, ...] = (),
    image: str = "",
    placement: PlacementStrategy = "binpack",
    max_per_host: int | None = None,
) -> ReplicaRequest:
    return ReplicaRequest(
        app,
        slot,
        cpu,
        memory,
        frozenset(ports),
        tuple(Constraint.model_validate(c) for c in constraints),
        image=image,
        placement=placement,
        max_per_host=max_per_host,
    )


def placed(
    app: str, slot: int, on: str, *, cpu: float = 0.0, memory: int = 0, ports: tuple[str, ...] = ()
) -> PlacedReplica:
    return PlacedReplica(app, slot, on, cpu, memory, frozenset(ports))


def explain_one(snapshot: Snapshot, req: ReplicaRequest) -> str:
    """Schedule ``req`` alone, check it stayed unplaced, and return the explanation."""
    plan = schedule(snapshot, [req])
    assert plan.placements == []
    assert (req.app, req.slot) in plan.unplaced
    return plan.explain(req.app, req.slot, len(snapshot.hosts))


# ------------------------------------------------------------------ each filter's reason


def test_not_connected_host_is_rejected() -> None:
    """A registered host whose agent is gone takes no replica: "not connected"."""
    snapshot = Snapshot((host("h1", connected=False),))
    assert explain_one(snapshot, request()) == "0/1 hosts fit: 1 not connected"


@pytest.mark.parametrize("state", ["cordoned", "draining", "drained", "maintenance"])
def test_host_not_ready_is_rejected_with_its_state(state: str) -> None:
    """A connected host in any state but ready is rejected, its state being the reason."""
    snapshot = Snapshot((host("h1", state=state),))
    assert explain_one(snapshot, request()) == f"0/1 hosts fit: 1 {state}"


def test_not_connected_wins_over_host_state() -> None:
    """Filters run in order; a host both disconnected and cordoned counts once, as the first."""
    snapshot = Snapshot((host("h1", state="cordoned", connected=False),))
    assert explain_one(snapshot, request()) == "0/1 hosts fit: 1 not connected"


@pytest.mark.parametrize(
    ("constraint", "labels"),
    [
        ("role=edge", {}),  # k=v: the label is missing
        ("role=edge", {"role": "core"}),  # k=v: another value
        ("disk!=hdd", {"disk": "hdd"}),  # k!=v: the same value
        ("gpu", {"role": "edge"}),  # k: the label does not exist
    ],
)
def test_unmet_constraint_is_named(constraint: str, labels: dict[str, str]) -> None:
    """A host whose labels do not satisfy a selector is rejected with the selector's text."""
    snapshot = Snapshot((host("h1", labels=labels),))
    reason = explain_one(snapshot, request(constraints=(constraint,)))
    assert reason == f"0/1 hosts fit: 1 constraint {constraint} not met"


@pytest.mark.parametrize(
    ("constraint", "labels"),
    [
        ("role=edge", {"role": "edge"}),
        ("disk!=hdd", {"disk": "ssd"}),
        ("disk!=hdd", {}),  # a missing label satisfies k!=v, as in Kubernetes
        ("gpu", {"gpu": ""}),  # k only needs the label to exist
    ],
)
def test_met_constraint_places(constraint: str, labels: dict[str, str]) -> None:
    """A host whose labels satisfy the selector takes the replica."""
    plan = schedule(Snapshot((host("h1", labels=labels),)), [request(constraints=(constraint,))])
    assert plan.placements == [Placement("web", 0, "h1")]
    assert plan.unplaced == {}


def test_first_unmet_constraint_is_the_reason() -> None:
    """With several selectors, the first one the host fails is reported."""
    snapshot = Snapshot((host("h1", labels={"role": "edge"}),))
    req = request(constraints=("role=edge", "gpu", "disk=ssd"))
    assert explain_one(snapshot, req) == "0/1 hosts fit: 1 constraint gpu not met"


def test_insufficient_cpu() -> None:
    """CPU reserved by placed replicas plus the request may not exceed the host's cores."""
    snapshot = Snapshot((host("h1", cpu=2.0),), (placed("db", 0, "h1", cpu=1.5),))
    assert explain_one(snapshot, request(cpu=1.0)) == "0/1 hosts fit: 1 insufficient cpu"
    assert schedule(snapshot, [request(cpu=0.5)]).placements == [Placement("web", 0, "h1")]


def test_insufficient_memory() -> None:
    """Memory reserved by placed replicas plus the request may not exceed the host's memory."""
    snapshot = Snapshot((host("h1", memory=1 * Gi),), (placed("db", 0, "h1", memory=768 * Mi),))
    reason = explain_one(snapshot, request(memory=512 * Mi))
    assert reason == "0/1 hosts fit: 1 insufficient memory"
    assert schedule(snapshot, [request(memory=256 * Mi)]).placements == [Placement("web", 0, "h1")]


@pytest.mark.parametrize("used", [1, 2], ids=["full", "over-committed"])
def test_zero_demand_fits_a_full_host(used: int) -> None:
    """A request without reservations is never rejected for capacity, even on a host that
    is full or over-committed (say, it re-registered with less memory)."""
    snapshot = Snapshot(
        (host("h1", cpu=1.0, memory=Gi),), (placed("db", 0, "h1", cpu=used, memory=used * Gi),)
    )
    assert schedule(snapshot, [request()]).placements == [Placement("web", 0, "h1")]


def test_fixed_host_port_taken() -> None:
    """A fixed host port already published on a host rejects it, naming the port."""
    snapshot = Snapshot((host("h1"),), (placed("db", 0, "h1", ports=("80/tcp",)),))
    reason = explain_one(snapshot, request(ports=("443/tcp", "80/tcp")))
    assert reason == "0/1 hosts fit: 1 port 80/tcp taken"


def test_same_port_number_other_protocol_is_free() -> None:
    """80/udp and 80/tcp are different ports."""
    snapshot = Snapshot((host("h1"),), (placed("db", 0, "h1", ports=("80/tcp",)),))
    assert schedule(snapshot, [request(ports=("80/udp",))]).placements == [
        Placement("web", 0, "h1")
    ]


def test_replicas_of_one_plan_do_not_share_a_fixed_port() -> None:
    """Two replicas asking for the same fixed port go to two hosts, a third cannot go anywhere."""
    snapshot = Snapshot((host("h1"), host("h2")))
    plan = schedule(snapshot, [request(slot=s, ports=("80/tcp",)) for s in range(3)])
    assert sorted(p.host for p in plan.placements) == ["h1", "h2"]
    assert plan.explain("web", 2, 2) == "0/2 hosts fit: 2 port 80/tcp taken"


def test_explain_counts_reasons_most_common_first() -> None:
    """``explain`` counts rejected hosts per reason, the most common reason first."""
    snapshot = Snapshot(
        (
            host("h1", state="cordoned"),
            host("h2", memory=1 * Gi),
            host("h3", memory=1 * Gi),
        )
    )
    reason = explain_one(snapshot, request(memory=2 * Gi))
    assert reason == "0/3 hosts fit: 2 insufficient memory, 1 cordoned"


def test_explain_mixed_reasons() -> None:
    """Every host gets exactly one reason, the first filter that rejects it."""
    snapshot = Snapshot(
        (
            host("h1", connected=False),
            host("h2", state="draining"),
            host("h3", labels={"role": "core"}),
            host("h4", labels={"role": "edge"}, cpu=0.5),
            host("h5", labels={"role": "edge"}, memory=Mi),
            host("h6", labels={"role": "edge"}),
            host("h7", labels={"role": "edge"}),
        ),
        (placed("db", 0, "h6", ports=("80/tcp",)), placed("db", 1, "h7", ports=("80/tcp",))),
    )
    req = request(cpu=1.0, memory=64 * Mi, ports=("80/tcp",), constraints=("role=edge",))
    assert explain_one(snapshot, req) == (
        "0/7 hosts fit: 2 port 80/tcp taken, 1 not connected, 1 draining, "
        "1 constraint role=edge not met, 1 insufficient cpu, 1 insufficient memory"
    )


def test_explain_without_hosts_and_for_placed_replicas() -> None:
    """With no hosts there is no reason to list; a replica that was placed has none either."""
    plan = schedule(Snapshot(()), [request()])
    assert plan.explain("web", 0, 0) == "0/0 hosts fit"
    assert Plan().explain("web", 0, 3) == "0/3 hosts fit"


def test_placed_replicas_on_unknown_hosts_are_ignored() -> None:
    """A reservation on a host that is not in the snapshot does not count anywhere."""
    snapshot = Snapshot((host("h1", cpu=1.0),), (placed("db", 0, "gone", cpu=1.0),))
    assert schedule(snapshot, [request(cpu=1.0)]).placements == [Placement("web", 0, "h1")]


# ------------------------------------------------------------------ live usage, max_per_host


def test_fresh_live_usage_above_reservations_counts() -> None:
    """A host using more than is reserved on it has only capacity less usage free."""
    busy = HostView("h1", 4.0, 8 * Gi, {}, used_cpu=3.5, used_memory=7 * Gi, stats_at=98.0)
    snapshot = Snapshot((busy,), (placed("db", 0, "h1", cpu=1.0, memory=Gi),), now=100.0)
    assert explain_one(snapshot, request(cpu=1.0)) == "0/1 hosts fit: 1 insufficient cpu"
    assert explain_one(snapshot, request(memory=2 * Gi)) == "0/1 hosts fit: 1 insufficient memory"
    assert schedule(snapshot, [request(cpu=0.5, memory=Gi)]).placements == [
        Placement("web", 0, "h1")
    ]


def test_reservations_above_live_usage_count() -> None:
    """A host using less than is reserved on it is judged by its reservations."""
    idle = HostView("h1", 4.0, 8 * Gi, {}, used_cpu=0.5, stats_at=100.0)
    snapshot = Snapshot((idle,), (placed("db", 0, "h1", cpu=3.5),), now=100.0)
    assert explain_one(snapshot, request(cpu=1.0)) == "0/1 hosts fit: 1 insufficient cpu"


@pytest.mark.parametrize(
    ("now", "stats_at"),
    [(100.0, 93.9), (100.0, None), (None, 100.0)],
    ids=["stale", "no-stats", "no-clock"],
)
def test_without_fresh_stats_reservations_alone_count(
    now: float | None, stats_at: float | None
) -> None:
    """Stats older than ``stale_after`` (or none, or no clock to judge them by) are ignored."""
    busy = HostView("h1", 4.0, 8 * Gi, {}, used_cpu=4.0, used_memory=8 * Gi, stats_at=stats_at)
    snapshot = Snapshot((busy,), now=now, stale_after=6.0)
    plan = schedule(snapshot, [request(cpu=4.0, memory=8 * Gi)])
    assert plan.placements == [Placement("web", 0, "h1")]


def test_a_plan_adds_its_replicas_to_live_usage() -> None:
    """What a plan places comes on top of what the host uses now, not under it."""
    busy = HostView("h1", 4.0, 8 * Gi, {}, used_cpu=2.0, stats_at=100.0)
    plan = schedule(Snapshot((busy,), now=100.0), [request(slot=s, cpu=1.0) for s in range(4)])
    assert [p.slot for p in plan.placements] == [0, 1]
    assert plan.explain("web", 2, 1) == "0/1 hosts fit: 1 insufficient cpu"


def test_max_per_host() -> None:
    """An app with ``max_per_host`` never gets more replicas on a host, counting those there."""
    snapshot = Snapshot((host("h1"), host("h2")), (placed("web", 0, "h1"),))
    plan = schedule(snapshot, [request(slot=s, max_per_host=1) for s in (1, 2)])
    assert plan.placements == [Placement("web", 1, "h2")]
    assert plan.explain("web", 2, 2) == "0/2 hosts fit: 2 max_per_host 1 reached"
    plan = schedule(snapshot, [request(slot=s, max_per_host=2) for s in (1, 2, 3, 4)])
    assert sorted(p.host for p in plan.placements) == ["h1", "h2", "h2"]


# ------------------------------------------------------------------ scores, determinism


def test_small_app_spreads_across_hosts() -> None:
    """Replicas of a small app go to distinct hosts before any host gets a second."""
    snapshot = Snapshot(tuple(host(f"h{i}") for i in range(1, 4)))
    plan = schedule(snapshot, [request(slot=s) for s in range(6)])
    per_host: dict[str, int] = defaultdict(int)
    for placement in plan.placements:
        per_host[placement.host] += 1
    assert sorted(p.host for p in plan.placements[:3]) == ["h1", "h2", "h3"]
    assert dict(per_host) == {"h1": 2, "h2": 2, "h3": 2}


def test_four_small_replicas_on_two_equal_hosts_go_two_and_two() -> None:
    """Bin-packing would put all four on one host; the same-app penalty splits them."""
    snapshot = Snapshot((host("h1"), host("h2")))
    plan = schedule(snapshot, [request(slot=s, cpu=0.1, memory=32 * Mi) for s in range(4)])
    assert [p.host for p in plan.placements] == ["h1", "h2", "h1", "h2"]


def test_same_app_penalty_counts_replicas_already_placed() -> None:
    """A host already running a replica of the app is chosen last."""
    snapshot = Snapshot((host("h1"), host("h2")), (placed("web", 0, "h1"),))
    assert schedule(snapshot, [request(slot=1)]).placements == [Placement("web", 1, "h2")]


def test_binpack_prefers_a_host_in_use() -> None:
    """Other apps' replicas make a host in use: it is filled before an empty one is opened."""
    snapshot = Snapshot((host("h1"), host("h2")), (placed("db", 0, "h2"),))
    assert schedule(snapshot, [request()]).placements == [Placement("web", 0, "h2")]


def test_binpack_fullest_host_wins_and_spread_emptiest() -> None:
    """Bin-pack places on the fullest host after placing; spread on the emptiest."""
    snapshot = Snapshot(
        (host("h1", cpu=4), host("h2", cpu=4)),
        (placed("db", 0, "h1", cpu=1), placed("db", 1, "h2", cpu=2)),
    )
    assert schedule(snapshot, [request(cpu=1)]).placements == [Placement("web", 0, "h2")]
    spread = request(cpu=1, placement="spread")
    assert schedule(snapshot, [spread]).placements == [Placement("web", 0, "h1")]


def test_fullness_is_that_of_the_scarcer_resource() -> None:
    """A host full on memory but idle on cpu counts as full."""
    snapshot = Snapshot(
        (host("h1", cpu=4, memory=Gi), host("h2", cpu=4, memory=Gi)),
        (placed("db", 0, "h1", memory=768 * Mi), placed("db", 1, "h2", cpu=2)),
    )
    assert schedule(snapshot, [request(cpu=0.5)]).placements == [Placement("web", 0, "h1")]
    spread = request(cpu=0.5, placement="spread")
    assert schedule(snapshot, [spread]).placements == [Placement("web", 0, "h2")]


def test_binpack_opens_the_roomiest_empty_host() -> None:
    """When no host in use fits, the empty host with the most room is opened."""
    snapshot = Snapshot(
        (host("h1", cpu=2, memory=4 * Gi), host("h2", cpu=16, memory=64 * Gi), host("h3")),
        (placed("db", 0, "h3", cpu=4.0),),
    )
    assert schedule(snapshot, [request(cpu=1.0)]).placements == [Placement("web", 0, "h2")]


def test_image_locality_is_a_small_preference() -> None:
    """Among like hosts the one with the image wins; it does not outweigh fullness."""
    snapshot = Snapshot((host("h1"), HostView("h2", 4.0, 8 * Gi, {}, images=frozenset({"i:1"}))))
    plan = schedule(snapshot, [request(image="i:1", cpu=0.5)])
    assert plan.placements == [Placement("web", 0, "h2")]
    fuller = Snapshot(snapshot.hosts, (placed("db", 0, "h1", cpu=1.0),))
    plan = schedule(fuller, [request(image="i:1", cpu=0.5)])
    assert plan.placements == [Placement("web", 0, "h1")]


def test_plan_lists_requests_in_app_and_slot_order() -> None:
    """The plan does not depend on the order the requests come in."""
    snapshot = Snapshot((host("h1"), host("h2")))
    requests = [request("web", 2), request("api", 0), request("web", 0), request("web", 1)]
    plan = schedule(snapshot, requests)
    assert [(p.app, p.slot) for p in plan.placements] == [
        ("api", 0),
        ("web", 0),
        ("web", 1),
        ("web", 2),
    ]
    assert plan == schedule(snapshot, list(reversed(requests)))


def test_apps_share_capacity_that_runs_short() -> None:
    """Apps are placed interleaved: when capacity runs out each got its share of it."""
    snapshot = Snapshot((host("h1", cpu=2.0),))
    requests = [request(app, s, cpu=0.5) for app in ("api", "web") for s in range(4)]
    plan = schedule(snapshot, requests)
    assert sorted((p.app, p.slot) for p in plan.placements) == [
        ("api", 0),
        ("api", 1),
        ("web", 0),
        ("web", 1),
    ]
    assert list(plan.unplaced) == [("api", 2), ("api", 3), ("web", 2), ("web", 3)]


def test_same_input_same_plan() -> None:
    """Scheduling is deterministic, whatever the order of hosts and placed replicas."""
    hosts = tuple(host(f"h{i}", cpu=2, memory=2 * Gi) for i in range(5))
    existing = tuple(placed("db", i, f"h{i % 3}", cpu=0.5, memory=Gi) for i in range(4))
    requests = [request(slot=s, cpu=0.5, memory=512 * Mi) for s in range(7)]
    first = schedule(Snapshot(hosts, existing), requests)
    again = schedule(Snapshot(tuple(reversed(hosts)), tuple(reversed(existing))), requests[::-1])
    assert first == again


# ------------------------------------------------------------------ properties

HOST_IDS = ["h0", "h1", "h2", "h3", "h4"]
APPS = ["api", "db", "web"]
PORTS = ["53/udp", "80/tcp", "443/tcp"]
# Binary fractions keep the sums exact, so the order of additions cannot matter.
CPUS = [0.0, 0.25, 0.5, 1.0, 2.0]
MEMORIES = [0, 64 * Mi, 256 * Mi, 512 * Mi, Gi]
HOST_STATES = ["ready", "ready", "ready", "cordoned", "draining", "drained", "maintenance"]
CONSTRAINTS = [
    Constraint.model_validate(text)
    for text in ("role=edge", "role!=edge", "role=core", "disk!=hdd", "gpu", "disk")
]

labels_st = st.dictionaries(
    st.sampled_from(["role", "disk", "gpu"]), st.sampled_from(["edge", "core", "hdd", "ssd"])
)
ports_st = st.frozensets(st.sampled_from(PORTS), max_size=2)


NOW = 100.0
STATS_AT = [None, 90.0, 95.0, 100.0]  # none, stale, fresh, fresh (stale_after 6s)


@st.composite
def hosts_st(draw: st.DrawFn) -> tuple[HostView, ...]:
    ids = draw(st.lists(st.sampled_from(HOST_IDS), min_size=0, max_size=5, unique=True))
    return tuple(
        HostView(
            host_id,
            draw(st.sampled_from([0.0, 1.0, 2.0, 4.0])),
            draw(st.sampled_from([0, 512 * Mi, Gi, 2 * Gi])),
            draw(labels_st),
            state=draw(st.sampled_from(HOST_STATES)),
            connected=draw(st.booleans()),
            used_cpu=draw(st.sampled_from([0.0, 0.5, 1.0, 4.0])),
            used_memory=draw(st.sampled_from([0, 256 * Mi, Gi, 4 * Gi])),
            stats_at=draw(st.sampled_from(STATS_AT)),
            images=draw(st.frozensets(st.sampled_from([f"img-{app}" for app in APPS]))),
        )
        for host_id in ids
    )


placed_st = st.builds(
    PlacedReplica,
    app=st.sampled_from(APPS),
    slot=st.integers(0, 9),
    host=st.sampled_from([*HOST_IDS, "gone"]),
    cpu=st.sampled_from(CPUS),
    memory=st.sampled_from(MEMORIES),
    host_ports=ports_st,
)


@st.composite
def requests_st(draw: st.DrawFn) -> list[ReplicaRequest]:
    keys = draw(
        st.lists(st.tuples(st.sampled_from(APPS), st.integers(0, 9)), max_size=12, unique=True)
    )
    # How an app likes to be placed is the app's; what each replica asks for varies here
    # (it does across revisions), which makes a harder test than one shape per app.
    placement = {app: draw(st.sampled_from(["binpack", "spread"])) for app in APPS}
    max_per_host = {app: draw(st.sampled_from([None, None, 1, 2])) for app in APPS}
    return [
        ReplicaRequest(
            app,
            slot,
            draw(st.sampled_from(CPUS)),
            draw(st.sampled_from(MEMORIES)),
            draw(ports_st),
            tuple(draw(st.lists(st.sampled_from(CONSTRAINTS), max_size=2))),
            image=f"img-{app}",
            placement="spread" if placement[app] == "spread" else "binpack",
            max_per_host=max_per_host[app],
        )
        for app, slot in keys
    ]


@st.composite
def scenario_st(draw: st.DrawFn) -> tuple[Snapshot, list[ReplicaRequest]]:
    hosts, placed = draw(hosts_st()), tuple(draw(st.lists(placed_st, max_size=8)))
    now = draw(st.sampled_from([None, NOW]))
    return Snapshot(hosts, placed, now=now, stale_after=6.0), draw(requests_st())


def fresh_usage(snapshot: Snapshot, h: HostView) -> tuple[float, int]:
    """What the host uses now, if its stats are fresh; else nothing."""
    now, at = snapshot.now, h.stats_at
    if now is None or at is None or now - at > snapshot.stale_after:
        return 0.0, 0
    return h.used_cpu, h.used_memory


@settings(max_examples=200, deadline=None)
@given(scenario_st())
def test_property_no_host_is_over_committed(
    scenario: tuple[Snapshot, list[ReplicaRequest]],
) -> None:
    """On a host given a replica that reserves cpu (memory), the larger of the cpu (memory)
    reserved there and its fresh live usage, plus what the plan adds, stays within the
    host's capacity."""
    snapshot, requests = scenario
    plan = schedule(snapshot, requests)
    by_key = {(r.app, r.slot): r for r in requests}
    hosts = {h.host_id: h for h in snapshot.hosts}
    reserved_cpu: dict[str, float] = defaultdict(float)
    reserved_memory: dict[str, int] = defaultdict(int)
    for replica in snapshot.placed:
        reserved_cpu[replica.host] += replica.cpu
        reserved_memory[replica.host] += replica.memory
    cpu: dict[str, float] = defaultdict(float)
    memory: dict[str, int] = defaultdict(int)
    wants_cpu: set[str] = set()
    wants_memory: set[str] = set()
    for placement in plan.placements:
        req = by_key[(placement.app, placement.slot)]
        cpu[placement.host] += req.cpu
        memory[placement.host] += req.memory
        if req.cpu:
            wants_cpu.add(placement.host)
        if req.memory:
            wants_memory.add(placement.host)
    for host_id in wants_cpu:
        used, _ = fresh_usage(snapshot, hosts[host_id])
        taken = max(reserved_cpu[host_id], used) + cpu[host_id]
        assert taken <= hosts[host_id].cpu + 1e-9, (host_id, plan)
    for host_id in wants_memory:
        _, used_memory = fresh_usage(snapshot, hosts[host_id])
        taken_memory = max(reserved_memory[host_id], used_memory) + memory[host_id]
        assert taken_memory <= hosts[host_id].memory, (host_id, plan)


@settings(max_examples=200, deadline=None)
@given(scenario_st())
def test_property_max_per_host_holds(scenario: tuple[Snapshot, list[ReplicaRequest]]) -> None:
    """A host given a replica of an app with ``max_per_host`` holds at most that many of
    the app's replicas, counting those already there."""
    snapshot, requests = scenario
    plan = schedule(snapshot, requests)
    limits = {r.app: r.max_per_host for r in requests}
    count: Counter[tuple[str, str]] = Counter((r.app, r.host) for r in snapshot.placed)
    given_to: set[tuple[str, str]] = set()
    for placement in plan.placements:
        count[(placement.app, placement.host)] += 1
        given_to.add((placement.app, placement.host))
    for app, host_id in given_to:
        limit = limits[app]
        assert limit is None or count[(app, host_id)] <= limit, (app, host_id, plan)


@settings(max_examples=100, deadline=None)
@given(
    replicas=st.integers(2, 12),
    hosts=st.integers(2, 4),
    cpu=st.sampled_from(CPUS),
    memory=st.sampled_from(MEMORIES),
    placement=st.sampled_from(["binpack", "spread"]),
)
def test_property_an_app_never_lands_on_one_host_alone(
    replicas: int, hosts: int, cpu: float, memory: int, placement: PlacementStrategy
) -> None:
    """On empty hosts that could each hold the whole app, an app of several replicas is
    never put on one host only: losing a host never takes it down when capacity allows."""
    snapshot = Snapshot(
        tuple(host(f"h{i}", cpu=replicas * cpu, memory=replicas * memory) for i in range(hosts))
    )
    requests = [
        request(slot=s, cpu=cpu, memory=memory, placement=placement) for s in range(replicas)
    ]
    plan = schedule(snapshot, requests)
    assert len(plan.placements) == replicas
    assert len({p.host for p in plan.placements}) >= 2


@settings(max_examples=200, deadline=None)
@given(scenario_st())
def test_property_placements_honour_constraints_and_host_state(
    scenario: tuple[Snapshot, list[ReplicaRequest]],
) -> None:
    """Every placement is on a known, connected, ready host that meets its constraints."""
    snapshot, requests = scenario
    plan = schedule(snapshot, requests)
    by_key = {(r.app, r.slot): r for r in requests}
    hosts = {h.host_id: h for h in snapshot.hosts}
    for placement in plan.placements:
        target = hosts[placement.host]
        assert target.connected
        assert target.state == "ready"
        for constraint in by_key[(placement.app, placement.slot)].constraints:
            assert constraint.matches(target.labels), (constraint, target)


@settings(max_examples=200, deadline=None)
@given(scenario_st())
def test_property_no_fixed_host_port_is_shared(
    scenario: tuple[Snapshot, list[ReplicaRequest]],
) -> None:
    """A planned replica never shares a fixed host port on its host with a replica already
    there or with another planned one."""
    snapshot, requests = scenario
    plan = schedule(snapshot, requests)
    by_key = {(r.app, r.slot): r for r in requests}
    taken: dict[str, set[str]] = defaultdict(set)
    for replica in snapshot.placed:
        taken[replica.host] |= replica.host_ports
    for placement in plan.placements:
        ports = by_key[(placement.app, placement.slot)].host_ports
        assert not ports & taken[placement.host], (placement, taken[placement.host])
        taken[placement.host] |= ports


@settings(max_examples=100, deadline=None)
@given(scenario_st(), st.randoms(use_true_random=False))
def test_property_same_input_same_plan(
    scenario: tuple[Snapshot, list[ReplicaRequest]], rnd: random.Random
) -> None:
    """The plan, and every explanation in it, depends only on the input's content, not on
    the order of its lists."""
    snapshot, requests = scenario
    first = schedule(snapshot, requests)
    assert schedule(snapshot, list(requests)) == first
    hosts, existing, shuffled = list(snapshot.hosts), list(snapshot.placed), list(requests)
    rnd.shuffle(hosts)
    rnd.shuffle(existing)
    rnd.shuffle(shuffled)
    again = schedule(replace(snapshot, hosts=tuple(hosts), placed=tuple(existing)), shuffled)
    assert again == first
    count = len(hosts)
    assert [again.explain(a, s, count) for a, s in again.unplaced] == [
        first.explain(a, s, count) for a, s in first.unplaced
    ]


@settings(max_examples=200, deadline=None)
@given(scenario_st())
def test_property_every_request_is_placed_or_unplaced_once(
    scenario: tuple[Snapshot, list[ReplicaRequest]],
) -> None:
    """Each request is either placed (exactly once) or unplaced with a reason per host."""
    snapshot, requests = scenario
    plan = schedule(snapshot, requests)
    placed_keys = [(p.app, p.slot) for p in plan.placements]
    assert len(placed_keys) == len(set(placed_keys))
    assert set(placed_keys).isdisjoint(plan.unplaced)
    assert set(placed_keys) | set(plan.unplaced) == {(r.app, r.slot) for r in requests}
    for reasons in plan.unplaced.values():
        # Every host rejected it, each for exactly one reason.
        assert sum(reasons.values()) == len(snapshot.hosts)


def _folded(snapshot: Snapshot) -> Snapshot:
    """``snapshot`` with every placed replica summed into its host's view instead, as
    the control plane builds it."""
    hosts = []
    for h in snapshot.hosts:
        mine = [p for p in snapshot.placed if p.host == h.host_id]
        apps = Counter(p.app for p in mine)
        ports = Counter(port for p in mine for port in p.host_ports)
        hosts.append(
            replace(
                h,
                reserved_nanocpus=sum(round(p.cpu * 1_000_000_000) for p in mine),
                reserved_memory=sum(p.memory for p in mine),
                placed_apps=dict(apps),
                placed_ports=dict(ports),
            )
        )
    return replace(snapshot, hosts=tuple(hosts), placed=())


@given(scenario_st())
def test_property_host_sums_place_as_the_replicas_they_sum(
    scenario: tuple[Snapshot, list[ReplicaRequest]],
) -> None:
    """Hosts given what their replicas reserve as sums place exactly as hosts given the
    replicas themselves: the control plane's O(hosts) view loses nothing."""
    snapshot, requests = scenario
    listed, folded = schedule(snapshot, requests), schedule(_folded(snapshot), requests)
    assert folded.placements == listed.placements
    assert folded.unplaced == listed.unplaced
