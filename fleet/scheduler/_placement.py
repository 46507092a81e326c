"""The placement pipeline: feasibility filters, then weighted scores, one host per replica.

Every stage judges all hosts at once (numpy arrays over the cluster, see ``_cluster``),
so a placement costs a few dozen array operations whatever the number of hosts, and
replicas of one app, which ask for the same things, share the stages that do not
depend on what is placed. A kind of request judged again soon after is judged again only
on the hosts placed on since (``_Ranking``). Explanations are worked out only for
replicas left unplaced.
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


# A kind judged again after placements on more hosts than this is judged over every host
# at once (a few dozen array operations) rather than host by host (a few each).
_HOST_BY_HOST = 8


class _Ranking:
    """A kind's feasible hosts and weighted scores, kept current as the plan places.

    A placement changes only its own host: the filters' verdicts and the scores there,
    and possibly a scorer's ``context`` (the same-app penalty's fewest replicas on a
    feasible host), which rates every host again. So a kind asked again after a few
    placements judges those hosts alone: an app's replicas scheduled together (as the
    controller does, one app at a time) cost a few operations each instead of a few
    dozen over every host. A host's total is summed in the order ``_whole`` sums every
    host's, so both ways give the same floats, and the same plan."""

    def __init__(
        self, cluster: Cluster, request: ReplicaRequest, kind: _Kind, dynamic: Sequence[Filter]
    ) -> None:
        self._kind, self._dynamic = kind, dynamic
        self._whole(cluster, request)

    def _whole(self, cluster: Cluster, request: ReplicaRequest) -> None:
        feasible = self._kind.fits.copy()
        for f in self._dynamic:
            for _, hosts in f.reject(cluster, request):
                feasible &= ~hosts
        scorers = self._kind.scorers
        self._contexts = [scorer.context(cluster, request, feasible) for scorer, _ in scorers]
        total = cluster.zeros
        for (scorer, weight), context in zip(scorers, self._contexts, strict=True):
            score = scorer.score(cluster, request, context)
            total = total + (score if weight == 1.0 else weight * score)
        self.feasible = feasible
        # The highest among feasible hosts wins; argmax takes the lowest id of equals
        # (without scorers: the first feasible host).
        self.ranked = np.where(feasible, total, -np.inf) if scorers else feasible
        self._seen = len(cluster.placed_on)

    def best(self, cluster: Cluster, request: ReplicaRequest) -> int | None:
        """The host to place ``request`` on, None if none fits."""
        self._refresh(cluster, request)
        best = int(self.ranked.argmax())
        return best if self.feasible[best] else None

    def _refresh(self, cluster: Cluster, request: ReplicaRequest) -> None:
        placed_on, seen = cluster.placed_on, self._seen
        if len(placed_on) == seen:
            return
        hosts = set(placed_on[seen:]) if len(placed_on) - seen <= 2 * _HOST_BY_HOST else None
        if hosts is None or len(hosts) > _HOST_BY_HOST:
            self._whole(cluster, request)
            return
        fits, feasible, scorers = self._kind.fits, self.feasible, self._kind.scorers
        for i in hosts:
            feasible[i] = fits[i] and not any(
                f.rejects_host(cluster, request, i) for f in self._dynamic
            )
        contexts = [scorer.context(cluster, request, feasible) for scorer, _ in scorers]
        if contexts != self._contexts:  # (rarely) every host's score changed
            self._whole(cluster, request)
            return
        self._seen = len(placed_on)
        if not scorers:
            return  # ranked is feasible
        for i in hosts:
            if not feasible[i]:
                self.ranked[i] = -np.inf
                continue
            total = 0.0  # summed as in _whole: the same float
            for (scorer, weight), context in zip(scorers, contexts, strict=True):
                score = scorer.score_host(cluster, request, i, context)
                total = total + (score if weight == 1.0 else weight * score)
            self.ranked[i] = total


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
    rankings: dict[tuple[object, ...], _Ranking] = {}
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
            rankings[name] = _Ranking(cluster, request, kind, dynamic)
        best = rankings[name].best(cluster, request)
        if best is None:
            rejections = [r for f in dynamic for r in f.reject(cluster, request)]
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
