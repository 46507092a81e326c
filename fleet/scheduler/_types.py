"""The scheduler's inputs and output: plain frozen values, built by the control plane."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from fleet.spec import Constraint

__all__ = ["HostView", "PlacedReplica", "Placement", "Plan", "ReplicaRequest", "Snapshot"]


@dataclass(frozen=True)
class HostView:
    """A host as the scheduler sees it. ``labels`` holds the operator's labels and the
    facts its agent reported (os, arch, ...), so constraints can use either."""

    host_id: str
    cpu: float
    memory: int
    labels: dict[str, str]
    state: str = "ready"
    connected: bool = True


@dataclass(frozen=True)
class PlacedReplica:
    """A replica already on a host: what it reserves there."""

    app: str
    slot: int
    host: str
    cpu: float
    memory: int
    host_ports: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ReplicaRequest:
    """A replica to place, with what it needs from a host."""

    app: str
    slot: int
    cpu: float
    memory: int
    host_ports: frozenset[str] = frozenset()  # fixed host ports, "8080/tcp"
    constraints: tuple[Constraint, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    hosts: tuple[HostView, ...]
    placed: tuple[PlacedReplica, ...] = ()


@dataclass(frozen=True)
class Placement:
    app: str
    slot: int
    host: str


@dataclass
class Plan:
    """Where each placed replica goes, and for each one left unplaced the count of hosts
    rejected per reason (``{"insufficient memory": 3, "cordoned": 1}``)."""

    placements: list[Placement] = field(default_factory=list)
    unplaced: dict[tuple[str, int], Counter[str]] = field(default_factory=dict)

    def explain(self, app: str, slot: int, host_count: int) -> str:
        """``0/12 hosts fit: 8 insufficient memory, 3 cordoned, 1 port 8080/tcp taken``."""
        reasons = self.unplaced.get((app, slot), Counter())
        parts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        return f"0/{host_count} hosts fit" + (f": {parts}" if parts else "")
