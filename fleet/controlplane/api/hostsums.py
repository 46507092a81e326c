"""What ``get hosts`` sums of each host's replicas, kept until they change.

The informer numbers each change of a host's replicas (``Changes.host_inputs``), so a
host's sums are worked out again only when that number moves: at 100,000 replicas each
``get hosts`` walked every container of every host, and most hosts' replicas do not
change between two calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.store import ClusterState

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
    """Each host's sums with the number of the host's inputs they were made from (the
    informer's ``Changes.host_inputs``, which moves whenever a replica on the host
    changes): not the replica index itself, which a memo kept until its next call, so an
    old copy of each host's index once the informer had moved on (#24 item 3). One per
    control plane; removed hosts leave it."""

    def __init__(self) -> None:
        self._sums: dict[str, tuple[int | None, Sums]] = {}

    def of(self, state: ClusterState, host_id: str) -> Sums:
        changes = state.changes
        if changes is None:  # a state that may be changed in place (a test's)
            return _sums(state, host_id)
        inputs = changes.host_inputs.get(host_id)
        found = self._sums.get(host_id)
        if found is not None and found[0] == inputs:
            return found[1]
        sums = _sums(state, host_id)
        if len(self._sums) > 2 * len(state.hosts) + 16:
            self._sums = {h: s for h, s in self._sums.items() if h in state.hosts}
        self._sums[host_id] = (inputs, sums)
        return sums
