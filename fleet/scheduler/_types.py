"""The scheduler's inputs and output: plain frozen values, built by the control plane."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from fleet.spec import Constraint

__all__ = [
    "HostView",
    "PlacedReplica",
    "Placement",
    "PlacementStrategy",
    "Plan",
    "ReplicaRequest",
    "Snapshot",
]

PlacementStrategy = Literal["binpack", "spread"]


@dataclass(frozen=True)
class HostView:
    """A host as the scheduler sees it. ``labels`` are what constraints select on: the
    labels admins set, its agent's own as ``agent.<key>`` and the facts its agent
    reported (os, arch, ...), see ``fleet.hostlabels``. ``cpu``/``memory`` are its
    capacity as the control plane allows it (the agent's claim, capped).

    ``used_cpu``/``used_memory`` are what the host actually uses, from the agent's latest
    stats taken at ``stats_at`` (seconds, the snapshot's clock); ``stats_at=None`` means
    no stats, and the host is judged by its reservations alone. ``images`` are the images
    its daemon already has.

    ``reserved_*``, ``placed_apps`` and ``placed_ports`` sum what the replicas already
    on the host reserve (nano-cores, bytes, containers per app, containers publishing
    each fixed host port): the control plane keeps these per host, so a plan need not
    list every replica in the cluster. ``Snapshot.placed`` adds to them."""

    host_id: str
    cpu: float
    memory: int
    labels: dict[str, str]
    state: str = "ready"
    connected: bool = True
    used_cpu: float = 0.0
    used_memory: int = 0
    stats_at: float | None = None
    images: frozenset[str] = frozenset()
    reserved_nanocpus: int = 0
    reserved_memory: int = 0
    placed_apps: Mapping[str, int] = field(default_factory=dict)
    placed_ports: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PlacedReplica:
    """A replica already on a host: what it reserves there. ``evicted`` marks one an
    operator asked to move off its (cordoned or draining) host."""

    app: str
    slot: int
    host: str
    cpu: float
    memory: int
    host_ports: frozenset[str] = frozenset()
    evicted: bool = False


@dataclass(frozen=True)
class ReplicaRequest:
    """A replica to place, with what it needs from a host and how its app likes to be
    placed (``placement``, ``max_per_host``; ``image`` for the image-locality score)."""

    app: str
    slot: int
    cpu: float
    memory: int
    host_ports: frozenset[str] = frozenset()  # fixed host ports, "8080/tcp"
    constraints: tuple[Constraint, ...] = ()
    image: str = ""
    placement: PlacementStrategy = "binpack"
    max_per_host: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """Hosts and the replicas already placed on them (beyond what the hosts' own sums
    count). Live usage counts only when fresh:
    taken at most ``stale_after`` seconds before ``now`` (a few agent heartbeats); without
    ``now`` no stats count."""

    hosts: tuple[HostView, ...]
    placed: tuple[PlacedReplica, ...] = ()
    now: float | None = None
    stale_after: float = 6.0


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
