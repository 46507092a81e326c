"""The placement pipeline: feasibility filters first, then a score, one host per replica.

This is the walking skeleton's placement: correct (never over-commits reservations,
honours constraints and fixed host ports) and explainable (every rejection has a
reason), but a linear scan per replica. The bin-packing scheduler replaces the scoring
and the scan behind the same ``schedule`` signature.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from fleet.scheduler._types import HostView, Placement, Plan, ReplicaRequest, Snapshot

__all__ = ["schedule"]


@dataclass
class _HostLoad:
    """What is reserved on one host while a plan is being built."""

    host: HostView
    cpu: float = 0.0
    memory: int = 0
    ports: set[str] = field(default_factory=set)
    per_app: Counter[str] = field(default_factory=Counter)

    def add(self, app: str, cpu: float, memory: int, ports: frozenset[str]) -> None:
        self.cpu += cpu
        self.memory += memory
        self.ports |= ports
        self.per_app[app] += 1


# A filter returns None when the host can take the replica, else the reason it cannot.
_Filter = Callable[[_HostLoad, ReplicaRequest], str | None]


def _host_state(load: _HostLoad, _: ReplicaRequest) -> str | None:
    if not load.host.connected:
        return "not connected"
    return None if load.host.state == "ready" else load.host.state


def _constraints(load: _HostLoad, request: ReplicaRequest) -> str | None:
    for constraint in request.constraints:
        if not constraint.matches(load.host.labels):
            return f"constraint {constraint} not met"
    return None


def _cpu(load: _HostLoad, request: ReplicaRequest) -> str | None:
    if request.cpu and load.cpu + request.cpu > load.host.cpu + 1e-9:
        return "insufficient cpu"
    return None


def _memory(load: _HostLoad, request: ReplicaRequest) -> str | None:
    if request.memory and load.memory + request.memory > load.host.memory:
        return "insufficient memory"
    return None


def _ports(load: _HostLoad, request: ReplicaRequest) -> str | None:
    taken = sorted(request.host_ports & load.ports)
    return f"port {taken[0]} taken" if taken else None


# Cheap and decisive filters first; the first one that rejects a host gives its reason.
_FILTERS: tuple[_Filter, ...] = (
    _host_state,  # only connected, ready hosts take new replicas
    _constraints,  # the app's label selectors
    _cpu,  # reservations must fit the host's capacity
    _memory,
    _ports,  # no two replicas on one fixed host port
)


def _score(load: _HostLoad, request: ReplicaRequest) -> tuple[int, float, str]:
    """Lower is better: fewest replicas of this app on the host (so one host's loss
    does not take an app down), then the least reserved share, then the host id."""
    share = max(
        (load.cpu + request.cpu) / load.host.cpu if load.host.cpu else 0.0,
        (load.memory + request.memory) / load.host.memory if load.host.memory else 0.0,
    )
    return (load.per_app[request.app], share, load.host.host_id)


def schedule(snapshot: Snapshot, requests: list[ReplicaRequest]) -> Plan:
    """Place ``requests`` on ``snapshot``'s hosts; deterministic for the same input."""
    loads = {h.host_id: _HostLoad(h) for h in sorted(snapshot.hosts, key=lambda h: h.host_id)}
    for replica in snapshot.placed:
        if replica.host in loads:
            loads[replica.host].add(replica.app, replica.cpu, replica.memory, replica.host_ports)

    plan = Plan()
    for request in sorted(requests, key=lambda r: (r.app, r.slot)):
        reasons: Counter[str] = Counter()
        best: _HostLoad | None = None
        best_score: tuple[int, float, str] | None = None
        for load in loads.values():
            reason = next((r for f in _FILTERS if (r := f(load, request)) is not None), None)
            if reason is not None:
                reasons[reason] += 1
                continue
            score = _score(load, request)
            if best_score is None or score < best_score:
                best, best_score = load, score
        if best is None:
            plan.unplaced[(request.app, request.slot)] = reasons
            continue
        best.add(request.app, request.cpu, request.memory, request.host_ports)
        plan.placements.append(Placement(request.app, request.slot, best.host.host_id))
    return plan
