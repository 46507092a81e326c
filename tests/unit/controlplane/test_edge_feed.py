"""Tests of ``edgefeed``: which containers the edges route to, in which state, in which
order, and when the table is next due to change (a container becoming available)."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.controlplane.edgefeed import (
    HOLD,
    backend_name,
    edge_routes,
    edge_table,
    feed_inputs,
    hold_ends,
    next_change,
)
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, KeyLayout, Versioned
from fleet.store.live import LiveState
from fleet.store.records import AppRecord, ContainerReport, PortBinding
from tests.unit.controlplane.builders import (
    NOW,
    add_app,
    add_host,
    add_revision,
    app_spec,
    put_replica,
    report,
)

INGRESS = "ingress: {port: 8080, host: web.example.com, path: /api}\n"
PORTS = [PortBinding(host_port=32768, container_port=8080, protocol="tcp")]


def edge_state(*hosts: str, text: str = INGRESS, revisions: int = 1) -> ClusterState:
    """``web`` with an ingress, at ``revisions`` revisions, on hosts with addresses."""
    state = ClusterState(revision=100)
    for i, host in enumerate(hosts, start=1):
        add_host(state, host)
        stored = state.hosts[host]
        address = stored.value.model_copy(update={"address": f"10.0.0.{i}"})
        state.hosts[host] = Versioned(address, stored.mod_revision)
    add_app(state, app_spec(revisions, text), revision=revisions)
    for n in range(1, revisions):
        add_revision(state, app_spec(n, text), n)
    return state


def backends(state: ClusterState, now: float = NOW) -> list[tuple[str, str, int, str]]:
    [route] = edge_routes(state, now)
    return [(b.name, b.address, b.port, b.state) for b in route.backends]


def test_the_route_says_what_the_spec_says() -> None:
    check = "health: {http: 'http://:8080/healthz'}\n"
    state = edge_state("h1", text=INGRESS + check)
    [route] = edge_routes(state, NOW)
    assert (list(route.hosts), route.path, route.tcp_port, route.check_path) == (
        ["web.example.com"],
        "/api",
        0,
        "/healthz",
    )
    assert list(route.backends) == []  # listed without backends: the edge answers 503
    state = edge_state("h1", text="ingress: {port: 8080, tcp: 15432}\n")
    [route] = edge_routes(state, NOW)
    assert (list(route.hosts), route.path, route.tcp_port, route.check_path) == ([], "", 15432, "")


def test_apps_without_ingress_are_not_routed() -> None:
    state = edge_state("h1", text="")
    assert edge_routes(state, NOW) == []
    assert next_change(state, NOW) is None


def test_ready_once_available_and_the_feed_wakes_exactly_then() -> None:
    state = edge_state("h1", text=INGRESS + "update: {min_ready: 3s}\n")
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ready_since=NOW - 1.0, ports=PORTS)
    assert backends(state) == []
    assert next_change(state, NOW) == NOW + 2.0
    assert backends(state, NOW + 2.0) == [("web-0-r1-h1", "10.0.0.1", 32768, "ready")]
    assert next_change(state, NOW + 2.0) is None


def test_not_listed_while_starting_unhealthy_stopped_or_unpublished() -> None:
    state = edge_state("h1")
    put_replica(state, 0, "h1")
    for kwargs in (
        {"health": "starting", "ready_since": None},
        {"health": "unhealthy", "ready_since": None},
        {"status": "exited"},
        {"status": "created", "ready_since": None},
    ):
        report(state, "h1", 0, 1, ports=PORTS, **kwargs)  # type: ignore[arg-type]
        assert backends(state) == [], kwargs
        assert next_change(state, NOW) is None
    report(state, "h1", 0, 1, ports=[])  # running, but the port is not published
    assert backends(state) == []


def test_drain_while_no_longer_desired_but_running_then_removed() -> None:
    state = edge_state("h1", "h2", revisions=2)
    put_replica(state, 0, "h2", revision=2)  # slot 0 moved on: revision 2 on h2
    report(state, "h1", 0, 1, ports=PORTS)  # the old one, in its shutdown delay
    report(state, "h2", 0, 2, ports=PORTS)
    assert backends(state) == [
        ("web-0-r1-h1", "10.0.0.1", 32768, "drain"),
        ("web-0-r2-h2", "10.0.0.2", 32768, "ready"),
    ]
    report(state, "h1", 0, 1, status="exited", ports=PORTS)
    assert backends(state) == [("web-0-r2-h2", "10.0.0.2", 32768, "ready")]


def test_a_rollouts_surge_container_is_ready_beside_the_old_one() -> None:
    state = edge_state("h1", "h2", revisions=2)
    put_replica(state, 0, "h1", revision=1, next=(2, "h2"))
    report(state, "h1", 0, 1, ports=PORTS)
    report(state, "h2", 0, 2, ports=PORTS)
    assert [b[3] for b in backends(state)] == ["ready", "ready"]


def test_a_silent_hosts_backends_are_held_from_the_last_table_for_a_while() -> None:
    """An agent restarting (or every agent reconnecting to a new control plane) takes
    its host's reports away for a few seconds while its containers serve on: the edges
    keep them. Found by the ingress e2e test: h1's agent restarted while h2 died, and
    web's backend was empty for a second (503s)."""
    state = edge_state("h1", "h2")
    put_replica(state, 0, "h1")
    put_replica(state, 1, "h2")
    report(state, "h1", 0, 1, ports=PORTS)
    report(state, "h2", 1, 1, ports=PORTS)
    routes, memory = edge_table(state, NOW, {})
    both = [("web-0-r1-h1", "ready"), ("web-1-r1-h2", "ready")]
    assert [(b.name, b.state) for b in routes[0].backends] == both
    assert hold_ends(memory) is None
    del state.status["h1"]  # its session ended: its reports went with it
    state.alive.pop("h1")
    assert backends(state) == [("web-1-r1-h2", "10.0.0.2", 32768, "ready")]  # no memory
    routes, memory = edge_table(state, NOW + 1, memory)
    assert [(b.name, b.state) for b in routes[0].backends] == both
    assert hold_ends(memory) == NOW + 1 + HOLD
    # Still silent later (a new session, not yet reported): held since it fell silent.
    routes, memory = edge_table(state, NOW + 5, memory)
    assert [(b.name, b.state) for b in routes[0].backends] == both
    assert hold_ends(memory) == NOW + 1 + HOLD
    # Its first report speaks for it again.
    report(state, "h1", 0, 1, ports=PORTS)
    routes, memory = edge_table(state, NOW + 6, memory)
    assert [(b.name, b.state) for b in routes[0].backends] == both
    assert hold_ends(memory) is None


def test_a_ready_backend_stays_ready_when_its_agent_restarts_its_health_checks() -> None:
    """A restarted agent probes its containers afresh: healthy "since" a second ago,
    not available for min_ready yet. Found by the ingress e2e test: the edge's own
    agent restarted, its three replicas left the table for a second, and another
    host dying then emptied web's backend (thousands of 503s)."""
    state = edge_state("h1", text=INGRESS + "update: {min_ready: 3s}\n")
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ports=PORTS)
    _, memory = edge_table(state, NOW, {})
    report(state, "h1", 0, 1, ready_since=NOW, ports=PORTS)  # a new agent's first probe
    routes, memory = edge_table(state, NOW + 0.5, memory)
    assert [(b.name, b.state) for b in routes[0].backends] == [("web-0-r1-h1", "ready")]
    assert backends(state, NOW + 0.5) == []  # a container the table did not list waits
    # Not when its health check fails, nor when it crash-loops.
    for kwargs in ({"health": "unhealthy", "ready_since": None}, {"restarts": 10}):
        report(state, "h1", 0, 1, ports=PORTS, **kwargs)  # type: ignore[arg-type]
        routes, after = edge_table(state, NOW + 1, memory)
        assert list(routes[0].backends) == [] and after == {}, kwargs


def test_the_hold_ends_in_time_when_moved_or_when_the_host_is_removed() -> None:
    state = edge_state("h1", "h2")
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ports=PORTS)
    _, memory = edge_table(state, NOW, {})
    del state.status["h1"]
    _, held = edge_table(state, NOW, memory)
    # Its time is up.
    routes, after = edge_table(state, NOW + HOLD, held)
    assert list(routes[0].backends) == [] and after == {}
    # Fleet moved the replica to h2: the silent host's old container is not held.
    moved = edge_state("h1", "h2")
    put_replica(moved, 0, "h2")
    routes, _ = edge_table(moved, NOW + 1, held)
    assert list(routes[0].backends) == []
    # The host was removed (fleet hosts remove).
    del state.hosts["h1"]
    routes, _ = edge_table(state, NOW + 1, held)
    assert list(routes[0].backends) == []


def test_a_reporting_hosts_word_stands() -> None:
    """A host that reports has the last word: a container it no longer reports, or
    reports stopped, is not held."""
    state = edge_state("h1")
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ports=PORTS)
    _, memory = edge_table(state, NOW, {})
    report(state, "h1", 0, 1, status="exited", ports=PORTS)
    routes, memory2 = edge_table(state, NOW + 1, memory)
    assert list(routes[0].backends) == [] and memory2 == {}
    # Reporting other containers but not this one: it is gone, not unheard of.
    other = edge_state("h1")
    put_replica(other, 0, "h1")
    put_replica(other, 1, "h1")
    report(other, "h1", 1, 1, ports=PORTS)
    routes, _ = edge_table(other, NOW + 1, memory)
    assert [b.name for b in routes[0].backends] == ["web-1-r1-h1"]


def test_a_disconnected_host_without_memory_or_a_removed_one_has_no_backends() -> None:
    state = edge_state("h1", "h2")
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ports=PORTS)
    del state.status["h1"]  # its session ended: its reports went with it
    state.alive.pop("h1")
    assert backends(state) == []
    report(state, "h1", 0, 1, ports=PORTS)
    del state.hosts["h1"]  # removed (fleet hosts remove)
    assert backends(state) == []


def test_a_host_network_app_answers_on_its_container_port() -> None:
    state = edge_state("h1", text=INGRESS + "host_network: true\n")
    put_replica(state, 0, "h1")
    report(state, "h1", 0, 1, ports=[])
    assert backends(state) == [("web-0-r1-h1", "10.0.0.1", 8080, "ready")]


# One container of web: (slot, revision, host, desired, docker state, seconds ready).
Container = tuple[int, int, str, bool, str, float | None]
containers = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(1, 2),
        st.sampled_from(["h1", "h2", "h3"]),
        st.booleans(),
        st.sampled_from(["running", "running", "exited"]),
        # Not within a few milliseconds of min_ready (5 s): a report's ready_since is
        # stored to the millisecond, so 4.9994 s may be read back as 5.000 (ready).
        st.one_of(st.none(), st.floats(0.0, 10.0).filter(lambda s: abs(s - 5.0) > 0.002)),
    ),
    max_size=12,
    unique_by=lambda c: (c[0], c[1], c[2]),
)


def expected_state(container: Container, min_ready: float, now: float) -> str | None:
    """The rule of the proto's comment, written plainly."""
    _, _, _, desired, docker_state, ready_for = container
    if docker_state != "running":
        return None
    if not desired:
        return "drain"
    return "ready" if ready_for is not None and ready_for >= min_ready else None


def build(items: list[Container], order: random.Random) -> ClusterState:
    state = edge_state("h1", "h2", "h3", text=INGRESS + "update: {min_ready: 5s}\n", revisions=2)
    # A slot's desired container: the first of the list that is (whatever the order).
    slots: dict[int, tuple[int, str]] = {}
    for slot, revision, host, desired, _, _ in items:
        if desired:
            slots.setdefault(slot, (revision, host))
    shuffled = list(items)
    order.shuffle(shuffled)
    for slot, (revision, host) in sorted(slots.items(), key=lambda _: order.random()):
        put_replica(state, slot, host, revision)
    for slot, revision, host, _, docker_state, ready_for in shuffled:
        since = None if ready_for is None else NOW - ready_for
        report(state, host, slot, revision, status=docker_state, ready_since=since, ports=PORTS)
    return state


@settings(max_examples=200, deadline=None)
@given(containers, st.randoms(use_true_random=False))
def test_property_backends_follow_the_rule_in_a_stable_order(
    items: list[Container], order: random.Random
) -> None:
    state = build(items, order)
    # What ended up desired: a slot takes the first container put for it.
    desired = {(s, r.value.revision, r.value.host) for (_, s), r in state.replicas.items()}
    want = []
    for item in items:
        slot, revision, host = item[:3]
        fixed = (slot, revision, host, (slot, revision, host) in desired, *item[4:])
        word = expected_state(fixed, 5.0, NOW)  # type: ignore[arg-type]
        if word is not None:
            want.append((backend_name("web", slot, revision, host), word))
    got = edge_routes(state, NOW)
    assert [(b.name, b.state) for b in got[0].backends] == sorted(want)
    # The same state built in another order gives the same table, message for message.
    assert edge_routes(build(items, random.Random(7)), NOW) == got
    # Nothing changes between now and the next change; at it, the table does.
    due = next_change(state, NOW)
    if due is not None:
        assert edge_routes(state, (NOW + due) / 2) == got
        assert edge_routes(state, due) != got


def test_routes_are_by_app_name() -> None:
    state = edge_state("h1")
    for name in ("zeta", "alpha"):
        spec = app_spec(1, INGRESS).model_copy(update={"name": name})
        add_app(state, spec)
    assert [r.app for r in edge_routes(state, NOW)] == ["alpha", "web", "zeta"]
    assert all(isinstance(r, pb.EdgeRoute) for r in edge_routes(state, NOW))


def test_feed_inputs_change_with_what_the_table_is_made_of_only() -> None:
    """The informer's counters: a report of an app without an ingress leaves the inputs
    as they were (no table is computed for it); one of an app with an ingress, or a
    host's record, changes them."""
    layout = KeyLayout()
    live = LiveState(layout)
    revision = iter(range(1, 100))

    def put(key: bytes, record: Any) -> None:
        live.apply(key, record.dump(), next(revision))

    for app, text in (("web", INGRESS), ("batch", "")):
        spec = app_spec(1, text).model_copy(update={"name": app})
        record = AppRecord(spec=spec, generation=1, revision=1, created_at="t", updated_at="t")
        put(layout.app(app), record)
    add = edge_state("h1")
    put(layout.host("h1"), add.hosts["h1"].value)

    def container(app: str, state: str) -> ContainerReport:
        return ContainerReport(
            app=app, slot=0, revision=1, spec_hash="x", container_id="c", name="n", state=state
        )

    before = feed_inputs(live.snapshot())
    assert before is not None
    put(layout.report("h1", "batch", 0, 1), container("batch", "running"))
    assert feed_inputs(live.snapshot()) == before
    put(layout.report("h1", "web", 0, 1), container("web", "running"))
    after = feed_inputs(live.snapshot())
    assert after != before
    put(layout.host("h1"), add.hosts["h1"].value.model_copy(update={"address": "10.0.0.9"}))
    assert feed_inputs(live.snapshot()) != after
    assert feed_inputs(ClusterState(revision=1)) is None  # a state that does not say
