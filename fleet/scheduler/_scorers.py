"""Scorers: each rates every host from 0 to 100 for one request; the pipeline weighs them.

Only the feasible hosts' scores matter; a scorer may rate the others anything.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fleet.scheduler._cluster import Bools, Cluster, Floats, nanocores
from fleet.scheduler._types import ReplicaRequest

__all__ = ["ImageLocality", "LeastAllocated", "MostAllocated", "SameAppPenalty", "Scorer"]


class Scorer(Protocol):
    def score(self, cluster: Cluster, request: ReplicaRequest, feasible: Bools) -> Floats:
        """0-100 for every host."""
        ...


def _fullness_after(cluster: Cluster, request: ReplicaRequest) -> Floats:
    """The share of its scarcer resource each host would have occupied after placing."""
    cpu, memory = cluster.demand_share(nanocores(request.cpu), request.memory)
    return np.minimum(np.maximum(cluster.share_cpu + cpu, cluster.share_memory + memory), 1.0)


class MostAllocated:
    """Bin-packing, as Nomad's binpack: the host fullest after placing wins, on its scarcer
    resource, so replicas fill hosts and leave others empty. Hosts in use score 60-100 by
    that fullness; a host running nothing scores 0-40 by its room, below every host in
    use: one is opened only when no host in use fits, and then the roomiest."""

    def score(self, cluster: Cluster, request: ReplicaRequest, feasible: Bools) -> Floats:
        # 40 x (1.5 + fullness) in use, 40 x room when empty; computed in place (hot path).
        fullness = _fullness_after(cluster, request)
        fullness += 1.5
        score: Floats = np.where(cluster.in_use, fullness, cluster.room)
        score *= 40.0
        return score


class LeastAllocated:
    """Spreading (``placement: spread``): the host emptiest after placing wins."""

    def score(self, cluster: Cluster, request: ReplicaRequest, feasible: Bools) -> Floats:
        return 100.0 - 100.0 * _fullness_after(cluster, request)


class SameAppPenalty:
    """The risk of a host holding more of an app than it must: 100 times the share of the
    app's replicas this host would hold, on a host that already holds more of them than
    another feasible host does; 0 elsewhere. Weighed negatively, it keeps one host's loss
    from taking an app down while capacity allows, and fades for apps with many replicas,
    which then pack."""

    def score(self, cluster: Cluster, request: ReplicaRequest, feasible: Bools) -> Floats:
        size = cluster.app_size[request.app]
        if size < 2:
            return cluster.zeros
        counts = cluster.app_counts(request.app)
        fewest = counts.min(where=feasible, initial=size)
        risk: Floats = np.where(counts > fewest, (counts + 1) * (100.0 / size), 0.0)
        return risk


class ImageLocality:
    """100 on hosts that already have the request's image (or get it from an earlier
    replica of this plan): no pull, a faster start."""

    def score(self, cluster: Cluster, request: ReplicaRequest, feasible: Bools) -> Floats:
        return cluster.image_score(request.image) if request.image else cluster.zeros
