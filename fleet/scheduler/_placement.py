"""The placement pipeline: feasibility filters, then weighted scores, one host per replica.

Every stage judges all hosts at once (numpy arrays over the cluster, see ``_cluster``),
so a placement costs a few dozen array operations whatever the number of hosts, and
replicas of one app, which ask for the same things, share the stages that do not
depend on what is placed. Explanations are worked out only for replicas left unplaced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fleet.scheduler._cluster import Bools, Cluster, nanocores
from fleet.scheduler._filters import (
    Constraints,
    Cpu,
    Filter,
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
from fleet.scheduler._types import Placement, Plan, ReplicaRequest, Snapshot

__all__ = ["FILTERS", "STRATEGIES", "Weighted", "schedule"]

# Cheap and decisive filters first; the first one that rejects a host gives its reason.
FILTERS: tuple[Filter, ...] = (
    HostState(),  # only connected, ready hosts take new replicas
    Constraints(),  # the app's label selectors: admin labels, agent.* and facts
    Cpu(),  # capacity less the larger of reserved and (freshly) used must hold it
    Memory(),  # the same for memory
    Ports(),  # no two replicas on one fixed host port
    MaxPerHost(),  # the app's max_per_host
)

Weighted = tuple[Scorer, float]

# A host's total is the weighted sum of its 0-100 scores; the highest total wins, ties go
# to the lowest host id. The same-app penalty outweighs all else together, so the last of
# an app's replicas never joins all the others on one host while another can take it.
_SHARED: tuple[Weighted, ...] = (
    (SameAppPenalty(), -1.2),  # not all of an app on one host while others can take it
    (ImageLocality(), 0.05),  # a small edge to hosts that have the image
)
# The app's ``placement`` picks the fit score.
STRATEGIES: Mapping[str, tuple[Weighted, ...]] = {
    "binpack": ((MostAllocated(), 1.0), *_SHARED),  # fullest host after placing first
    "spread": ((LeastAllocated(), 1.0), *_SHARED),  # emptiest host after placing first
}


def _kind(r: ReplicaRequest) -> tuple[object, ...]:
    """What a request asks for, all but its slot: requests of one kind are judged alike."""
    return (
        r.app,
        r.cpu,
        r.memory,
        r.host_ports,
        r.constraints,
        r.image,
        r.placement,
        r.max_per_host,
    )


def _interleave(requests: Sequence[ReplicaRequest]) -> list[ReplicaRequest]:
    """The order to place in: each app's requests by slot, the apps interleaved in
    proportion to their counts. Hosts then fill with a mix of shapes, which packs cpu and
    memory together far better than one app after another, and when capacity runs short
    every app gets its share of it."""
    by_app: dict[str, list[ReplicaRequest]] = {}
    for r in sorted(requests, key=lambda r: (r.app, r.slot)):
        by_app.setdefault(r.app, []).append(r)
    ranked = [
        ((i + 0.5) / len(replicas), app, i, r)
        for app, replicas in by_app.items()
        for i, r in enumerate(replicas)
    ]
    ranked.sort(key=lambda x: x[:3])
    return [x[3] for x in ranked]


def _explain(cluster: Cluster, rejections: Sequence[Rejection]) -> Counter[str]:
    """Hosts rejected per reason, each host counted once, for the first reason given."""
    reasons: Counter[str] = Counter()
    counted = np.zeros(cluster.size, dtype=bool)
    for reason, hosts in rejections:
        new = hosts & ~counted
        if n := int(np.count_nonzero(new)):
            reasons[reason] += n
            counted |= new
    return reasons


@dataclass
class _Kind:
    """What requests of one kind share: their demand in the cluster's units, the static
    filters' verdicts and the scorers of their placement strategy."""

    cpu: int
    memory: int
    rejections: list[Rejection]  # by the static filters
    fits: Bools  # passes every static filter
    scorers: Sequence[Weighted]


def _judge(
    cluster: Cluster, request: ReplicaRequest, strategies: Mapping[str, Sequence[Weighted]]
) -> _Kind:
    """The static filters' verdicts for ``request``'s kind: once per kind, not per replica."""
    rejections = [r for f in FILTERS if f.static for r in f.reject(cluster, request)]
    fits = np.ones(cluster.size, dtype=bool)
    for _, hosts in rejections:
        fits &= ~hosts
    cpu, memory = nanocores(request.cpu), request.memory
    return _Kind(cpu, memory, rejections, fits, strategies[request.placement])


def schedule(
    snapshot: Snapshot,
    requests: Sequence[ReplicaRequest],
    *,
    strategies: Mapping[str, Sequence[Weighted]] = STRATEGIES,
) -> Plan:
    """Place ``requests`` on ``snapshot``'s hosts; replicas already placed stay where they
    are. The plan lists placements and unplaced replicas by app and slot, and is the
    same for the same input, whatever the order of its lists. ``strategies`` replaces
    the scoring table (the benchmark's first-fit has no scorers)."""
    ordered = _interleave(requests)
    cluster = Cluster(snapshot, ordered)
    dynamic = [f for f in FILTERS if not f.static]
    kinds: dict[tuple[object, ...], _Kind] = {}
    failed: dict[tuple[object, ...], Counter[str]] = {}  # kinds failed since the last placement
    placed: dict[tuple[str, int], Placement] = {}
    unplaced: dict[tuple[str, int], Counter[str]] = {}

    for request in ordered:
        key = (request.app, request.slot)
        if not cluster.size:
            unplaced[key] = Counter()
            continue
        if (name := _kind(request)) in failed:
            # Nothing was placed since a request of this kind failed: neither will this.
            unplaced[key] = failed[name].copy()
            continue
        if (kind := kinds.get(name)) is None:
            kind = kinds[name] = _judge(cluster, request, strategies)

        # Feasible: passes the kind's static filters and those that depend on what is placed.
        rejections = [r for f in dynamic for r in f.reject(cluster, request)]
        feasible = kind.fits
        if rejections:
            rejected = rejections[0][1]
            for _, hosts in rejections[1:]:
                rejected = rejected | hosts
            feasible = feasible & ~rejected
        # Best: the highest weighted sum among feasible hosts; argmax takes the lowest id.
        if kind.scorers:
            total = cluster.zeros
            for scorer, weight in kind.scorers:
                score = scorer.score(cluster, request, feasible)
                total = total + (score if weight == 1.0 else weight * score)
            best = int(np.where(feasible, total, -np.inf).argmax())
        else:
            best = int(feasible.argmax())  # no scores: the first host that fits
        if not feasible[best]:  # then no host fits
            failed[name] = _explain(cluster, kind.rejections + rejections)
            unplaced[key] = failed[name].copy()
            continue
        cluster.place(best, request, kind.cpu, kind.memory)
        failed.clear()
        placed[key] = Placement(request.app, request.slot, cluster.host_ids[best])

    return Plan(
        placements=[placed[k] for k in sorted(placed)],
        unplaced={k: unplaced[k] for k in sorted(unplaced)},
    )
