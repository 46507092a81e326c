"""Scorers: each rates every host from 0 to 100 for one request; the pipeline weighs them.

Only the feasible hosts' scores matter; a scorer may rate the others anything. What
else than a host's own state its score depends on is the scorer's ``context``, worked
out first (the same-app penalty's fewest replicas on a feasible host).

Each also rates one host (``score_host``), as ``score`` would: a placement changes only
its own host, so the pipeline rates again only the hosts placed on since it last rated a
kind of request, unless a context changed.
"""

from __future__ import annotations

from typing import Protocol, cast

import numpy as np

from fleet.scheduler._cluster import Bools, Cluster, Floats, Ints, nanocores
from fleet.scheduler._types import ReplicaRequest

__all__ = ["ImageLocality", "LeastAllocated", "MostAllocated", "SameAppPenalty", "Scorer"]


class Scorer(Protocol):
    def context(self, cluster: Cluster, request: ReplicaRequest, feasible: Bools) -> object:
        """What besides a host's own state its score depends on, given the ``feasible``
        hosts (None: nothing)."""
        ...

    def score(self, cluster: Cluster, request: ReplicaRequest, context: object) -> Floats:
        """0-100 for every host."""
        ...

    def score_host(
        self, cluster: Cluster, request: ReplicaRequest, i: int, context: object
    ) -> float:
        """Host ``i``'s score, exactly as ``score`` gives it in that ``context``."""
        ...


class _Local:
    """A scorer whose score for a host depends on that host alone."""

    def context(self, cluster: Cluster, request: ReplicaRequest, feasible: Bools) -> object:
        return None


def _fullness_after(cluster: Cluster, request: ReplicaRequest) -> Floats:
    """The share of its scarcer resource each host would have occupied after placing."""
    cpu, memory = cluster.demand_share(nanocores(request.cpu), request.memory)
    return np.minimum(np.maximum(cluster.share_cpu + cpu, cluster.share_memory + memory), 1.0)


def _fullness_after_host(cluster: Cluster, request: ReplicaRequest, i: int) -> float:
    """``_fullness_after`` of host ``i``, in the same operations (the same float)."""
    cpu, memory = nanocores(request.cpu), request.memory
    share_cpu = cluster.share_cpu.item(i) + float(cpu) * cluster.per_cpu.item(i)
    share_memory = cluster.share_memory.item(i) + float(memory) * cluster.per_byte.item(i)
    return min(max(share_cpu, share_memory), 1.0)


class MostAllocated(_Local):
    """Bin-packing, as Nomad's binpack: the host fullest after placing wins, on its scarcer
    resource, so replicas fill hosts and leave others empty. Hosts in use score 60-100 by
    that fullness; a host running nothing scores 0-40 by its room, below every host in
    use: one is opened only when no host in use fits, and then the roomiest."""

    def score(self, cluster: Cluster, request: ReplicaRequest, context: object) -> Floats:
        # 40 x (1.5 + fullness) in use, 40 x room when empty; computed in place (hot path).
        fullness = _fullness_after(cluster, request)
        fullness += 1.5
        score: Floats = np.where(cluster.in_use, fullness, cluster.room)
        score *= 40.0
        return score

    def score_host(
        self, cluster: Cluster, request: ReplicaRequest, i: int, context: object
    ) -> float:
        if cluster.in_use.item(i):
            return (_fullness_after_host(cluster, request, i) + 1.5) * 40.0
        return float(cluster.room.item(i)) * 40.0


class LeastAllocated(_Local):
    """Spreading (``placement: spread``): the host emptiest after placing wins."""

    def score(self, cluster: Cluster, request: ReplicaRequest, context: object) -> Floats:
        return 100.0 - 100.0 * _fullness_after(cluster, request)

    def score_host(
        self, cluster: Cluster, request: ReplicaRequest, i: int, context: object
    ) -> float:
        return 100.0 - 100.0 * _fullness_after_host(cluster, request, i)


class SameAppPenalty:
    """The risk of a host holding more of an app than it must: 100 times the share of the
    app's replicas this host would hold, on a host that already holds more of them than
    another feasible host does; 0 elsewhere. Weighed negatively, it keeps one host's loss
    from taking an app down while capacity allows, and fades for apps with many replicas,
    which then pack."""

    def score(self, cluster: Cluster, request: ReplicaRequest, context: object) -> Floats:
        if context is None:
            return cluster.zeros
        counts = cluster.app_counts(request.app)
        size = cluster.app_size[request.app]
        risk: Floats = np.where(counts > cast(int, context), (counts + 1) * (100.0 / size), 0.0)
        return risk

    def context(self, cluster: Cluster, request: ReplicaRequest, feasible: Bools) -> object:
        """The fewest replicas of the app on a feasible host."""
        size = cluster.app_size[request.app]
        if size < 2:
            return None
        return _fewest(cluster.app_counts(request.app), feasible, size)

    def score_host(
        self, cluster: Cluster, request: ReplicaRequest, i: int, context: object
    ) -> float:
        if context is None:
            return 0.0
        count = int(cluster.app_counts(request.app)[i])
        if count > cast(int, context):
            return float(count + 1) * (100.0 / cluster.app_size[request.app])
        return 0.0


def _fewest(counts: Ints, feasible: Bools, size: int) -> int:
    """The fewest replicas on a feasible host (``size`` if none is): ``where`` and
    ``min`` over every host, twice as fast as ``min(where=...)``."""
    return int(np.where(feasible, counts, size).min())


class ImageLocality(_Local):
    """100 on hosts that already have the request's image (or get it from an earlier
    replica of this plan): no pull, a faster start."""

    def score(self, cluster: Cluster, request: ReplicaRequest, context: object) -> Floats:
        return cluster.image_score(request.image) if request.image else cluster.zeros

    def score_host(
        self, cluster: Cluster, request: ReplicaRequest, i: int, context: object
    ) -> float:
        return float(cluster.image_score(request.image).item(i)) if request.image else 0.0
