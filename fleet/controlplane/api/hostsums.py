"""What ``get hosts`` sums of each host's replicas, kept until they change.

The informer hands out a host's replica index as the same object for as long as no
replica on the host changes (``ClusterState.host_replicas``), so a host's sums are
worked out again only then: at 100,000 replicas each ``get hosts`` walked every
container of every host, and most hosts' replicas do not change between two calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleet.store import ClusterState
from fleet.store.records import ReplicaRecord

__all__ = ["HostSums"]


@dataclass(frozen=True)
class Sums:
    cpu: float  # what the containers on the host reserve
    memory: int
    containers: int  # the containers the host should run
    remaining: int  # replicas whose own container is on the host (a drain moves them)


def _sums(state: ClusterState, host_id: str) -> Sums:
    replicas = [r for r, _ in state.containers_on(host_id)]
    return Sums(
        cpu=sum(r.resources.cpu for r in replicas),
        memory=sum(r.resources.memory for r in replicas),
        containers=len(replicas),
        remaining=sum(1 for r in replicas if r.host == host_id),
    )


class HostSums:
    """Each host's sums with the replica index they were made from. One per control
    plane; removed hosts leave it."""

    def __init__(self) -> None:
        self._sums: dict[str, tuple[Mapping[tuple[str, int], ReplicaRecord], Sums]] = {}

    def of(self, state: ClusterState, host_id: str) -> Sums:
        if state.changes is None:  # a state that may be changed in place (a test's)
            return _sums(state, host_id)
        placed = state.host_replicas(host_id)
        found = self._sums.get(host_id)
        if found is not None and found[0] is placed:
            return found[1]
        sums = _sums(state, host_id)
        if len(self._sums) > 2 * len(state.hosts) + 16:
            self._sums = {h: s for h, s in self._sums.items() if h in state.hosts}
        self._sums[host_id] = (placed, sums)
        return sums
