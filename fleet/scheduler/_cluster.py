"""The cluster as arrays, one entry per host in host-id order, kept current while a plan
places replicas, so that filters and scorers judge every host at once with numpy.

CPU is held in integer nano-cores (Docker's ``NanoCpus``) and memory in bytes, so sums
are exact whatever the order of additions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from fleet.scheduler._types import HostView, ReplicaRequest, Snapshot
from fleet.spec import Constraint

__all__ = ["Bools", "Cluster", "Floats", "Ints", "nanocores"]

Bools = NDArray[np.bool_]
Ints = NDArray[np.int64]
Floats = NDArray[np.float64]

_INT64_MAX = (1 << 63) - 1


def nanocores(cpu: float) -> int:
    """Cores as whole nano-cores, the unit Docker limits cpu in."""
    found = _NANOCORES.get(cpu)
    if found is None:
        found = round(cpu * 1_000_000_000)
        if len(_NANOCORES) < 4096:  # a pool's apps ask for a few amounts, over and over
            _NANOCORES[cpu] = found
    return found


_NANOCORES: dict[float, int] = {}


def _ints(values: Iterable[int]) -> Ints:
    # Sums in Python ints may pass int64 on an absurdly over-committed host; clipped, the
    # host still has no room, and no later arithmetic on it can overflow.
    return np.array([min(v, _INT64_MAX) for v in values], dtype=np.int64)


def _per_unit(capacity: Ints) -> Floats:
    """1/capacity, or 0 for a resource the host does not have (its share then counts 0)."""
    inverse = np.zeros(capacity.shape, dtype=np.float64)
    np.divide(1.0, capacity, out=inverse, where=capacity > 0)
    return inverse


class Cluster:
    """What every host has and what is taken of it, while a plan is being built.

    A host's *occupied* amount of a resource is the larger of what is reserved on it and
    what it uses now (live stats, when fresh), plus what this plan places there; *free*
    is its capacity less that; *share* is occupied over capacity.
    """

    def __init__(self, snapshot: Snapshot, requests: Sequence[ReplicaRequest]) -> None:
        self.hosts = tuple(sorted(snapshot.hosts, key=lambda h: h.host_id))
        self.host_ids = [h.host_id for h in self.hosts]
        self.size = len(self.hosts)
        index = {host_id: i for i, host_id in enumerate(self.host_ids)}

        reserved_cpu = [h.reserved_nanocpus for h in self.hosts]
        reserved_memory = [h.reserved_memory for h in self.hosts]
        apps: defaultdict[str, list[int]] = defaultdict(list)  # app -> hosts, from placed
        ports: defaultdict[str, list[int]] = defaultdict(list)
        for h_index, h in enumerate(self.hosts):
            for port, count in h.placed_ports.items():
                if count > 0:
                    ports[port].append(h_index)
        for replica in snapshot.placed:
            i = index.get(replica.host)
            if i is None:
                continue  # a host that left the snapshot holds nothing
            reserved_cpu[i] += nanocores(replica.cpu)
            reserved_memory[i] += replica.memory
            apps[replica.app].append(i)
            for port in replica.host_ports:
                ports[port].append(i)

        def used(h: HostView) -> tuple[int, int]:
            now, at = snapshot.now, h.stats_at
            if now is None or at is None or now - at > snapshot.stale_after:
                return 0, 0  # no stats, or stale ones: reservations alone
            return nanocores(h.used_cpu), h.used_memory

        usage = [used(h) for h in self.hosts]
        self.capacity_cpu = _ints(nanocores(h.cpu) for h in self.hosts)
        self.capacity_memory = _ints(h.memory for h in self.hosts)
        self.occupied_cpu = _ints(max(r, u) for r, (u, _) in zip(reserved_cpu, usage, strict=True))
        self.occupied_memory = _ints(
            max(r, u) for r, (_, u) in zip(reserved_memory, usage, strict=True)
        )
        self.free_cpu = self.capacity_cpu - self.occupied_cpu
        self.free_memory = self.capacity_memory - self.occupied_memory
        self.per_cpu = _per_unit(self.capacity_cpu)
        self.per_byte = _per_unit(self.capacity_memory)
        self.share_cpu = self.occupied_cpu * self.per_cpu
        self.share_memory = self.occupied_memory * self.per_byte
        self.room = self._room()

        self.in_use: Bools = self._count(i for at in apps.values() for i in at) > 0
        self.in_use |= np.array([bool(h.placed_apps) for h in self.hosts], dtype=bool)
        self._placed_at = apps
        self._per_app: dict[str, Ints] = {}
        # Replicas of each requested app, placed or asked for (the spread scorer's total).
        self.app_size = Counter(r.app for r in requests)
        for app in self.app_size:
            self.app_size[app] += int(self.app_counts(app).sum())
        self._ports = {port: self._count(at) > 0 for port, at in ports.items()}
        self._images: dict[str, Floats] = {}
        self._unmet: dict[Constraint, Bools] = {}
        self._demand: dict[tuple[int, int], tuple[Floats, Floats]] = {}
        self.zeros: Floats = np.zeros(self.size, dtype=np.float64)
        self.zeros.flags.writeable = False
        # The host of each placement so far, in order: what changed since a position.
        self.placed_on: list[int] = []

    def _room(self) -> Floats:
        """Each host's free room against the roomiest host's, 0-1, the mean over cpu and
        memory: which empty host would hold the most."""
        cpu, memory = np.maximum(self.free_cpu, 0), np.maximum(self.free_memory, 0)
        room: Floats = (cpu / max(int(cpu.max(initial=0)), 1)) / 2
        room += (memory / max(int(memory.max(initial=0)), 1)) / 2
        return room

    def _count(self, at: Iterable[int]) -> Ints:
        counts = np.bincount(np.fromiter(at, dtype=np.int64), minlength=self.size)
        return counts.astype(np.int64)

    def app_counts(self, app: str) -> Ints:
        """Replicas of ``app`` on each host (kept current as this plan places more)."""
        counts = self._per_app.get(app)
        if counts is None:
            counts = _ints(h.placed_apps.get(app, 0) for h in self.hosts)
            if app in self._placed_at:
                counts += self._count(self._placed_at[app])
            self._per_app[app] = counts
        return counts

    def port_taken(self, port: str) -> Bools | None:
        """Hosts where the fixed host ``port`` is published, or None if it is nowhere."""
        return self._ports.get(port)

    def unmet(self, constraint: Constraint) -> Bools:
        """Hosts whose labels (and facts) do not satisfy ``constraint``."""
        mask = self._unmet.get(constraint)
        if mask is None:
            mask = np.array([not constraint.matches(h.labels) for h in self.hosts], dtype=bool)
            self._unmet[constraint] = mask
        return mask

    def image_score(self, image: str) -> Floats:
        """100 on hosts that have ``image`` or are given a replica of it by this plan."""
        score = self._images.get(image)
        if score is None:
            score = np.array([100.0 * (image in h.images) for h in self.hosts])
            self._images[image] = score
        return score

    def demand_share(self, cpu: int, memory: int) -> tuple[Floats, Floats]:
        """What ``cpu`` nano-cores and ``memory`` bytes are of each host, as shares."""
        shares = self._demand.get((cpu, memory))
        if shares is None:
            shares = self._demand[(cpu, memory)] = (cpu * self.per_cpu, memory * self.per_byte)
        return shares

    def place(self, i: int, request: ReplicaRequest, cpu: int, memory: int) -> None:
        """Count ``request``, asking ``cpu`` nano-cores and ``memory`` bytes, on host ``i``."""
        self.placed_on.append(i)
        if cpu:
            self.occupied_cpu[i] += cpu
            self.free_cpu[i] -= cpu
            self.share_cpu[i] = self.occupied_cpu[i] * self.per_cpu[i]
        if memory:
            self.occupied_memory[i] += memory
            self.free_memory[i] -= memory
            self.share_memory[i] = self.occupied_memory[i] * self.per_byte[i]
        self.in_use[i] = True
        self.app_counts(request.app)[i] += 1
        for port in request.host_ports:
            taken = self._ports.get(port)
            if taken is None:
                taken = self._ports[port] = np.zeros(self.size, dtype=bool)
            taken[i] = True
        if request.image:
            self.image_score(request.image)[i] = 100.0
