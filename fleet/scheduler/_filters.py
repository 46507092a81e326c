"""Feasibility filters: each judges every host at once and names why it rejects one.

A filter's ``reject`` returns ``(reason, hosts)`` pairs: the hosts it rejects and the
constant reason it records for them ("insufficient memory"). A filter whose pairs depend
only on the hosts and the request, never on what is placed, is ``static``: the pipeline
computes it once per kind of request. The others (``dynamic``) also say of one host
whether they reject it (``rejects_host``): a placement changes only its own host, so
the pipeline asks that of the hosts placed on since it last judged a kind of request.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fleet.hostlabels import agent_claim
from fleet.scheduler._cluster import Bools, Cluster, nanocores
from fleet.scheduler._types import ReplicaRequest

__all__ = [
    "Constraints",
    "Cpu",
    "Filter",
    "HostState",
    "MaxPerHost",
    "Memory",
    "Ports",
    "Rejection",
]

Rejection = tuple[str, Bools]  # a reason, and the hosts rejected for it


class Filter(Protocol):
    static: bool  # depends only on the hosts and the request

    def reject(self, cluster: Cluster, request: ReplicaRequest) -> list[Rejection]:
        """The hosts that cannot take ``request``, by reason, in the order to report them."""
        ...

    def rejects_host(self, cluster: Cluster, request: ReplicaRequest, i: int) -> bool:
        """Whether host ``i`` is among the hosts ``reject`` returns."""
        ...


class _Static:
    """A static filter's one-host verdict, from its verdict on all (never on a hot path:
    the pipeline judges a kind of request once against static filters)."""

    static = True

    def reject(self, cluster: Cluster, request: ReplicaRequest) -> list[Rejection]:
        raise NotImplementedError

    def rejects_host(self, cluster: Cluster, request: ReplicaRequest, i: int) -> bool:
        return any(bool(hosts[i]) for _, hosts in self.reject(cluster, request))


class HostState(_Static):
    """Only connected, ready hosts take new replicas: "not connected", or the host's state
    (cordoned, draining, drained, down, ...) as the reason."""

    def reject(self, cluster: Cluster, request: ReplicaRequest) -> list[Rejection]:
        hosts = cluster.hosts
        rejections = [("not connected", np.array([not h.connected for h in hosts], dtype=bool))]
        for state in sorted({h.state for h in hosts if h.connected} - {"ready"}):
            at = np.array([h.connected and h.state == state for h in hosts], dtype=bool)
            rejections.append((state, at))
        return rejections


class Constraints(_Static):
    """The app's label selectors (k=v, k!=v, k) over the host's selectable labels (admin
    labels, ``agent.*`` and facts); a host is rejected for the first selector it fails.
    A host that fails a selector on an admin label only because its agent claims that
    label as its own (``--label role=edge`` is ``agent.role``) is told apart, with the
    way to set the label: apps constrained before labels were split say why they stopped
    matching."""

    def reject(self, cluster: Cluster, request: ReplicaRequest) -> list[Rejection]:
        rejections = []
        for c in request.constraints:
            unmet = cluster.unmet(c)
            claim = agent_claim(c)
            if claim is not None:
                claimed = unmet & ~cluster.unmet(claim)
                if claimed.any():
                    reason = (
                        f"lack label {c} (their own --label is {claim.key}; an admin sets "
                        f"{c.key} with `fleet label host`)"
                    )
                    rejections.append((reason, claimed))
            rejections.append((f"constraint {c} not met", unmet))
        return rejections


class Cpu:
    """Free cpu (capacity less the larger of reserved and used) must hold the request; a
    request without a reservation fits any host, even a full one."""

    static = False

    def reject(self, cluster: Cluster, request: ReplicaRequest) -> list[Rejection]:
        cpu = nanocores(request.cpu)
        return [("insufficient cpu", cluster.free_cpu < cpu)] if cpu else []

    def rejects_host(self, cluster: Cluster, request: ReplicaRequest, i: int) -> bool:
        cpu = nanocores(request.cpu)
        return bool(cpu) and int(cluster.free_cpu[i]) < cpu


class Memory:
    """Free memory must hold the request, as for cpu."""

    static = False

    def reject(self, cluster: Cluster, request: ReplicaRequest) -> list[Rejection]:
        memory = request.memory
        return [("insufficient memory", cluster.free_memory < memory)] if memory else []

    def rejects_host(self, cluster: Cluster, request: ReplicaRequest, i: int) -> bool:
        memory = request.memory
        return bool(memory) and int(cluster.free_memory[i]) < memory


class Ports:
    """No two replicas, of any app, on one fixed host port ("port 8080/tcp taken")."""

    static = False

    def reject(self, cluster: Cluster, request: ReplicaRequest) -> list[Rejection]:
        rejections = []
        for port in sorted(request.host_ports):
            taken = cluster.port_taken(port)
            if taken is not None:
                rejections.append((f"port {port} taken", taken))
        return rejections

    def rejects_host(self, cluster: Cluster, request: ReplicaRequest, i: int) -> bool:
        for port in request.host_ports:
            taken = cluster.port_taken(port)
            if taken is not None and taken[i]:
                return True
        return False


class MaxPerHost:
    """At most the app's ``max_per_host`` replicas on one host."""

    static = False

    def reject(self, cluster: Cluster, request: ReplicaRequest) -> list[Rejection]:
        limit = request.max_per_host
        if limit is None:
            return []
        return [(f"max_per_host {limit} reached", cluster.app_counts(request.app) >= limit)]

    def rejects_host(self, cluster: Cluster, request: ReplicaRequest, i: int) -> bool:
        limit = request.max_per_host
        return limit is not None and int(cluster.app_counts(request.app)[i]) >= limit
