"""Tests of re-placement: which placed replicas ``displaced`` sends back through the
scheduler (host lost, down or drained; replica evicted), and that scheduling them again
moves nothing else (no churn) and never puts them back where they cannot stay."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.scheduler import (
    HostView,
    PlacedReplica,
    ReplicaRequest,
    Snapshot,
    displaced,
    schedule,
)

Gi = 1 << 30


def host(host_id: str, *, state: str = "ready", connected: bool = True) -> HostView:
    return HostView(host_id, 4.0, 8 * Gi, {}, state=state, connected=connected)


def on(host_id: str, app: str, slot: int, *, evicted: bool = False) -> PlacedReplica:
    return PlacedReplica(app, slot, host_id, 1.0, Gi, evicted=evicted)


def test_displaced_replicas() -> None:
    """Replicas on lost, down or drained hosts move, and evicted ones; all others stay,
    including those on cordoned or draining hosts that were not evicted."""
    snapshot = Snapshot(
        (
            host("ready"),
            host("lost", connected=False),
            host("down", state="down"),
            host("drained", state="drained"),
            host("cordoned", state="cordoned"),
            host("draining", state="draining"),
        ),
        (
            on("ready", "web", 0),
            on("lost", "web", 1),
            on("down", "web", 2),
            on("drained", "web", 3),
            on("cordoned", "web", 4),
            on("cordoned", "web", 5, evicted=True),
            on("draining", "db", 0),
            on("draining", "db", 1, evicted=True),
            on("gone", "api", 0),  # its host left the snapshot
        ),
    )
    assert [(r.app, r.slot) for r in displaced(snapshot)] == [
        ("api", 0),
        ("db", 1),
        ("web", 1),
        ("web", 2),
        ("web", 3),
        ("web", 5),
    ]


def test_replacing_moves_only_the_displaced() -> None:
    """A lost host's replicas go through the same scheduler onto hosts that can take them;
    the replicas that still fit stay put, and the plan holds only the moved ones."""
    snapshot = Snapshot(
        (host("h1", connected=False), host("h2"), host("h3")),
        (on("h1", "web", 0), on("h1", "web", 1), on("h2", "web", 2), on("h3", "db", 0)),
    )
    moving = displaced(snapshot)
    kept = tuple(r for r in snapshot.placed if r not in moving)
    requests = [ReplicaRequest(r.app, r.slot, r.cpu, r.memory) for r in moving]
    plan = schedule(Snapshot(snapshot.hosts, kept), requests)
    assert {(p.app, p.slot) for p in plan.placements} == {("web", 0), ("web", 1)}
    assert all(p.host in ("h2", "h3") for p in plan.placements)
    # The first goes where web is not (the same-app penalty), the second packs.
    assert [p.host for p in plan.placements] == ["h3", "h3"]


HOSTS = ["h0", "h1", "h2", "h3"]
STATES = ["ready", "ready", "cordoned", "draining", "drained", "down"]


@st.composite
def clusters(draw: st.DrawFn) -> Snapshot:
    hosts = tuple(
        host(h, state=draw(st.sampled_from(STATES)), connected=draw(st.booleans())) for h in HOSTS
    )
    placed = tuple(
        PlacedReplica(
            app,
            slot,
            draw(st.sampled_from([*HOSTS, "gone"])),
            draw(st.sampled_from([0.0, 0.5, 1.0])),
            draw(st.sampled_from([0, Gi, 2 * Gi])),
            evicted=draw(st.booleans()),
        )
        for app in ("api", "web")
        for slot in range(draw(st.integers(0, 6)))
    )
    return Snapshot(hosts, placed)


@settings(max_examples=200, deadline=None)
@given(clusters())
def test_property_replacement_never_churns(snapshot: Snapshot) -> None:
    """Re-placing the displaced replicas plans exactly those replicas, each either on a
    host that can keep it or left pending; the others are never moved."""
    moving = displaced(snapshot)
    kept = tuple(r for r in snapshot.placed if r not in moving)
    hosts = {h.host_id: h for h in snapshot.hosts}
    for replica in kept:
        assert hosts[replica.host].connected and not replica.evicted
        assert hosts[replica.host].state not in ("down", "drained")
    requests = [ReplicaRequest(r.app, r.slot, r.cpu, r.memory) for r in moving]
    plan = schedule(Snapshot(snapshot.hosts, kept), requests)
    moved = {(p.app, p.slot) for p in plan.placements} | set(plan.unplaced)
    assert moved == {(r.app, r.slot) for r in moving}
    for placement in plan.placements:
        target = hosts[placement.host]
        assert target.connected and target.state == "ready"
