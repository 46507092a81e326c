"""Tests of each stage of the placement pipeline on its own: every filter's verdict per
host with its reason, every scorer's 0-100 score per host, and the table that builds the
pipeline (cheap filters first; bin-pack and spread differ in one entry)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fleet.scheduler import FILTERS, STRATEGIES, HostView, PlacedReplica, ReplicaRequest, Snapshot
from fleet.scheduler._cluster import Cluster, nanocores
from fleet.scheduler._filters import (
    Constraints,
    Cpu,
    HostState,
    MaxPerHost,
    Memory,
    Ports,
    Rejection,
)
from fleet.scheduler._scorers import (
    ImageLocality,
    LeastAllocated,
    MostAllocated,
    SameAppPenalty,
    Scorer,
)
from fleet.spec import Constraint

Mi = 1 << 20
Gi = 1 << 30


def req(
    *,
    app: str = "web",
    cpu: float = 0.0,
    memory: int = 0,
    ports: tuple[str, ...] = (),
    constraints: tuple[str, ...] = (),
    image: str = "",
    max_per_host: int | None = None,
) -> ReplicaRequest:
    return ReplicaRequest(
        app,
        0,
        cpu,
        memory,
        frozenset(ports),
        tuple(Constraint.model_validate(c) for c in constraints),
        image=image,
        max_per_host=max_per_host,
    )


def cluster(
    *hosts: HostView,
    placed: tuple[PlacedReplica, ...] = (),
    requests: int = 1,
    now: float | None = None,
) -> Cluster:
    """A cluster of ``hosts`` with ``placed`` replicas, planning ``requests`` of web."""
    return Cluster(Snapshot(hosts, placed, now=now), [req()] * requests)


def h(host_id: str, cpu: float = 4.0, memory: int = 8 * Gi, **kw: Any) -> HostView:
    return HostView(host_id, cpu, memory, {}, **kw)


def verdicts(rejections: list[Rejection]) -> list[tuple[str, list[bool]]]:
    return [(reason, hosts.tolist()) for reason, hosts in rejections]


# ------------------------------------------------------------------ the pipeline's table


def test_filters_run_cheapest_first_and_static_ones_are_marked() -> None:
    """Host state and constraints (fixed for a request) come before the capacity checks."""
    assert [type(f) for f in FILTERS] == [HostState, Constraints, Cpu, Memory, Ports, MaxPerHost]
    assert [f.static for f in FILTERS] == [True, True, False, False, False, False]


def test_binpack_and_spread_differ_in_one_entry() -> None:
    """The strategies share their penalties and preferences; only the fit score differs."""
    binpack, spread = STRATEGIES["binpack"], STRATEGIES["spread"]
    assert type(binpack[0][0]) is MostAllocated
    assert type(spread[0][0]) is LeastAllocated
    assert binpack[1:] == spread[1:]
    assert [w for _, w in binpack] == [1.0, -1.2, 0.05]


# ------------------------------------------------------------------ filters


def test_host_state_filter() -> None:
    """Not connected first, then each state other than ready, in name order."""
    c = cluster(
        h("a"),
        h("b", state="cordoned"),
        h("c", connected=False, state="draining"),
        h("d", state="down"),
        h("e", state="drained"),
    )
    assert verdicts(HostState().reject(c, req())) == [
        ("not connected", [False, False, True, False, False]),
        ("cordoned", [False, True, False, False, False]),
        ("down", [False, False, False, True, False]),
        ("drained", [False, False, False, False, True]),
    ]


def test_constraints_filter_over_labels_and_facts() -> None:
    """One rejection per selector, in the app's order; facts are labels to it."""
    c = cluster(
        HostView("a", 4, Gi, {"arch": "arm64", "os": "linux"}),
        HostView("b", 4, Gi, {"arch": "amd64", "disk": "hdd"}),
    )
    rejections = Constraints().reject(c, req(constraints=("arch=amd64", "disk!=hdd", "os")))
    assert verdicts(rejections) == [
        ("constraint arch=amd64 not met", [True, False]),
        ("constraint disk!=hdd not met", [False, True]),
        ("constraint os not met", [False, True]),
    ]


def test_cpu_filter_takes_the_larger_of_reserved_and_fresh_usage() -> None:
    """Free cpu is capacity less max(reserved, used now); stale stats do not count."""
    c = cluster(
        h("a", used_cpu=3.0, stats_at=100.0),  # uses 3 of 4
        h("b", used_cpu=3.0, stats_at=50.0),  # stale: reservations alone, 1 of 4
        h("c", used_cpu=0.5, stats_at=100.0),  # reserved 3 counts
        placed=(PlacedReplica("db", 0, "b", 1.0, 0), PlacedReplica("db", 1, "c", 3.0, 0)),
        now=100.0,
    )
    assert list(c.free_cpu) == [nanocores(1.0), nanocores(3.0), nanocores(1.0)]
    assert verdicts(Cpu().reject(c, req(cpu=1.5))) == [("insufficient cpu", [True, False, True])]
    assert verdicts(Cpu().reject(c, req(cpu=1.0))) == [("insufficient cpu", [False, False, False])]
    assert Cpu().reject(c, req()) == []  # no reservation: fits anywhere


def test_cpu_is_counted_exactly() -> None:
    """Ten replicas of 0.1 cores fill one core exactly (no float drift)."""
    c = cluster(h("a", cpu=1.0))
    tenth = req(cpu=0.1)
    for _ in range(10):
        assert not Cpu().reject(c, tenth)[0][1][0]
        c.place(0, tenth, nanocores(0.1), 0)
    assert Cpu().reject(c, tenth)[0][1].tolist() == [True]


def test_memory_filter() -> None:
    c = cluster(
        h("a", memory=Gi, used_memory=Gi // 2, stats_at=99.0),
        h("b", memory=Gi),
        now=100.0,
    )
    rejections = Memory().reject(c, req(memory=768 * Mi))
    assert verdicts(rejections) == [("insufficient memory", [True, False])]
    assert Memory().reject(c, req()) == []


def test_ports_filter_names_each_taken_port() -> None:
    """One rejection per requested port taken somewhere, in port order; others are free."""
    c = cluster(
        h("a"),
        h("b"),
        placed=(
            PlacedReplica("db", 0, "a", 0, 0, frozenset({"80/tcp"})),
            PlacedReplica("dns", 0, "b", 0, 0, frozenset({"53/udp"})),
        ),
    )
    rejections = Ports().reject(c, req(ports=("80/tcp", "53/udp", "443/tcp")))
    assert verdicts(rejections) == [
        ("port 53/udp taken", [False, True]),
        ("port 80/tcp taken", [True, False]),
    ]


def test_max_per_host_filter() -> None:
    c = cluster(h("a"), h("b"), placed=(PlacedReplica("web", 0, "a", 0, 0),))
    assert MaxPerHost().reject(c, req()) == []
    rejections = MaxPerHost().reject(c, req(max_per_host=1))
    assert verdicts(rejections) == [("max_per_host 1 reached", [True, False])]


# ------------------------------------------------------------------ scorers


def scores(scorer: Scorer, c: Cluster, r: ReplicaRequest) -> list[float]:
    feasible = np.ones(c.size, dtype=bool)
    result = scorer.score(c, r, scorer.context(c, r, feasible))
    assert all(0.0 <= s <= 100.0 for s in result)
    return [round(float(s), 6) for s in result]


def test_most_allocated() -> None:
    """Hosts in use score 60-100 by fullness after placing on the scarcer resource; empty
    hosts 0-40 by their room against the roomiest one."""
    c = cluster(
        h("a", cpu=4, memory=4 * Gi),
        h("b", cpu=4, memory=4 * Gi),
        h("c", cpu=8, memory=8 * Gi),
        h("d", cpu=4, memory=8 * Gi),
        placed=(
            PlacedReplica("db", 0, "a", 1.0, 3 * Gi),  # memory the scarcer: 3/4, 4/4 after
            PlacedReplica("db", 1, "b", 1.0, 0),  # cpu: 1/4, 2/4 after
        ),
    )
    assert scores(MostAllocated(), c, req(cpu=1.0, memory=Gi)) == [100.0, 80.0, 40.0, 30.0]


def test_least_allocated() -> None:
    c = cluster(
        h("a", cpu=4, memory=4 * Gi),
        h("b", cpu=8, memory=8 * Gi),
        placed=(PlacedReplica("db", 0, "a", 1.0, 0),),
    )
    assert scores(LeastAllocated(), c, req(cpu=1.0)) == [50.0, 87.5]


def test_same_app_penalty() -> None:
    """The share of the app a host would hold, where another feasible host holds fewer."""
    placed = (
        PlacedReplica("web", 0, "a", 0, 0),
        PlacedReplica("web", 1, "a", 0, 0),
        PlacedReplica("web", 2, "b", 0, 0),
    )
    c = cluster(h("a"), h("b"), h("c"), placed=placed, requests=1)  # 4 replicas of web
    assert scores(SameAppPenalty(), c, req()) == [75.0, 50.0, 0.0]
    # Only feasible hosts set the bar: without c, b holds the fewest.
    penalty, feasible = SameAppPenalty(), np.array([True, True, False])
    result = penalty.score(c, req(), penalty.context(c, req(), feasible))
    assert result.tolist()[:2] == [75.0, 0.0]
    # An app of one replica has nothing to spread.
    assert scores(SameAppPenalty(), cluster(h("a"), h("b")), req()) == [0.0, 0.0]


def test_image_locality() -> None:
    """100 where the image is, or where this plan put a replica of it; 0 elsewhere."""
    c = cluster(h("a", images=frozenset({"web:1"})), h("b"), h("c"))
    assert scores(ImageLocality(), c, req(image="web:1")) == [100.0, 0.0, 0.0]
    c.place(2, req(image="web:1"), 0, 0)
    assert scores(ImageLocality(), c, req(image="web:1")) == [100.0, 0.0, 100.0]
    assert scores(ImageLocality(), c, req()) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("scorer", [MostAllocated(), LeastAllocated()])
def test_fit_scores_stay_in_range_on_odd_hosts(scorer: Scorer) -> None:
    """An over-committed host (it re-registered smaller) or one without capacity still
    scores within 0-100."""
    shrunk = PlacedReplica("db", 0, "a", 3.0, 0)
    c = cluster(h("a", cpu=1.0), h("b", cpu=0.0, memory=0), placed=(shrunk,))
    scores(scorer, c, req())
