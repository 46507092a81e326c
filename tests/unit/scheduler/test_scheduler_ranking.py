"""The pipeline's rankings kept host by host (``_Ranking``) give the same plans as judging
every host again at each placement: the same floats, so the same winners and ties.
Each plan is made three ways: host by host whenever possible, judged whole at every
placement, and the default mix of both."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings

from fleet.scheduler import (
    STRATEGIES,
    HostView,
    Plan,
    ReplicaRequest,
    Snapshot,
    Weighted,
    _placement,
    schedule,
)
from fleet.scheduler._cluster import Cluster
from fleet.scheduler._scorers import ImageLocality, LeastAllocated, MostAllocated, SameAppPenalty
from fleet.spec import Constraint

from .test_scheduler import scenario_st

Mi = 1 << 20
Gi = 1 << 30


# No scorers: the first host that fits (the benchmark's first-fit).
FIRST_FIT: dict[str, tuple[Weighted, ...]] = {"binpack": (), "spread": ()}


def _three_ways(
    monkeypatch: pytest.MonkeyPatch,
    snapshot: Snapshot,
    requests: list[ReplicaRequest],
    strategies: Mapping[str, Sequence[Weighted]] = STRATEGIES,
) -> Plan:
    plans = []
    for limit in (1 << 30, -1, _placement._HOST_BY_HOST):  # host by host, whole, the default
        with monkeypatch.context() as patch:
            patch.setattr(_placement, "_HOST_BY_HOST", limit)
            plans.append(schedule(snapshot, requests, strategies=strategies))
    assert plans[0] == plans[1] == plans[2]
    return plans[0]


@settings(max_examples=150, deadline=None)
@given(scenario_st())
def test_property_host_by_host_and_whole_give_one_plan(
    scenario: tuple[Snapshot, list[ReplicaRequest]],
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _three_ways(monkeypatch, *scenario)
        _three_ways(monkeypatch, *scenario, FIRST_FIT)


def _pool(rnd: random.Random) -> tuple[Snapshot, list[ReplicaRequest]]:
    """Hosts of odd sizes (shares that are not binary fractions), some partly used, and a
    few apps of many replicas each, as the controller schedules them."""
    hosts = tuple(
        HostView(
            f"h{i:02d}",
            rnd.choice([1.0, 2.0, 3.0, 6.0, 12.0]),
            rnd.choice([3, 5, 7, 24]) * Gi + rnd.randrange(1000) * Mi,
            {"zone": rnd.choice("abc")},
            state=rnd.choice(["ready"] * 8 + ["cordoned"]),
            reserved_nanocpus=rnd.choice([0, 0, 300_000_000, 1_100_000_000]),
            reserved_memory=rnd.choice([0, 0, 333 * Mi, Gi]),
            placed_apps={"old": rnd.randrange(3)},
            images=frozenset(rnd.sample(["img-a", "img-b", "img-c"], rnd.randrange(3))),
        )
        for i in range(rnd.randrange(5, 60))
    )
    requests = []
    for n in range(rnd.randrange(1, 5)):
        app = f"app{n}"
        cpu = rnd.choice([0.0, 0.1, 0.3, 0.7, 1.3])
        memory = rnd.choice([0, 100 * Mi, 333 * Mi, Gi + 7 * Mi])
        ports = frozenset(rnd.sample(["8080/tcp", "53/udp"], rnd.choice([0, 0, 0, 1])))
        constraints = (Constraint.model_validate("zone!=c"),) if rnd.random() < 0.2 else ()
        for slot in range(rnd.randrange(1, 120)):
            requests.append(
                ReplicaRequest(
                    app,
                    slot,
                    cpu,
                    memory,
                    ports,
                    constraints,
                    image=f"img-{'abc'[n % 3]}",
                    placement=rnd.choice(["binpack", "binpack", "spread"]),  # type: ignore[arg-type]
                    max_per_host=rnd.choice([None, None, 2, 5]),
                )
            )
            requests[-1] = requests[-1] if slot == 0 else _like(requests[-1], requests[-2])
    return Snapshot(hosts, now=None), requests


def _like(request: ReplicaRequest, first: ReplicaRequest) -> ReplicaRequest:
    """``request`` asking what the app's first replica asks (one kind per app)."""
    return ReplicaRequest(
        request.app,
        request.slot,
        first.cpu,
        first.memory,
        first.host_ports,
        first.constraints,
        image=first.image,
        placement=first.placement,
        max_per_host=first.max_per_host,
    )


@pytest.mark.parametrize("seed", range(40))
def test_one_app_at_a_time_and_all_together_host_by_host_as_whole(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot, requests = _pool(random.Random(seed))
    together = _three_ways(monkeypatch, snapshot, requests)
    assert together.placements  # the pools have room for some
    assert _three_ways(monkeypatch, snapshot, requests, FIRST_FIT).placements
    for app in sorted({r.app for r in requests}):
        _three_ways(monkeypatch, snapshot, [r for r in requests if r.app == app])


@pytest.mark.parametrize("seed", range(20))
def test_each_scorer_rates_one_host_as_it_rates_all(seed: int) -> None:
    rnd = random.Random(seed)
    snapshot, requests = _pool(rnd)
    cluster = Cluster(snapshot, requests)
    for request in requests[: rnd.randrange(len(requests) + 1)]:  # some placed already
        cluster.place(rnd.randrange(cluster.size), request, 0, request.memory)
    feasible = cluster.free_memory >= requests[-1].memory
    for scorer in (MostAllocated(), LeastAllocated(), SameAppPenalty(), ImageLocality()):
        for request in requests:
            context = scorer.context(cluster, request, feasible)
            whole = scorer.score(cluster, request, context)
            one = [scorer.score_host(cluster, request, i, context) for i in range(cluster.size)]
            assert one == whole.tolist(), type(scorer).__name__
