"""What the edge hosts route: every app's ingress and its backends, from the state at
``now``. Pure (``edgepush`` sends it to the edges).

A backend is a container its host reports running with the ingress port published:
``ready`` while it is desired and available (healthy for ``update.min_ready``, as
rollouts count it; once listed ready, until it is reported in trouble: see
``_stays_ready``), ``drain`` once it is no longer desired but still runs (its
``shutdown_delay``: in-flight requests finish, no new ones come). A desired container
not yet available and a stopped one are not listed.

A host whose reports are gone (its agent's session ended, or a new session has not
reported yet: an agent restarted, a control plane failed over) keeps the backends it
had in the feed's last table, as they were, while their containers are still desired
and for at most ``HOLD`` seconds: its containers go on serving while their agent is
away, and taking them out would empty a backend whenever every host holding its
replicas reconnects at once. A host that is really dead is taken out by the edges' own
health checks within seconds (and its requests retried elsewhere); fleet moves its
replicas, which ends the hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleet.controlplane.availability import crash_reason, observe
from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppSpec
from fleet.store import ClusterState
from fleet.store.records import ContainerReport

__all__ = [
    "HOLD",
    "BackendKey",
    "Listed",
    "backend_name",
    "edge_routes",
    "edge_table",
    "feed_inputs",
    "hold_ends",
    "next_change",
]

# Seconds a silent host's backends stay listed: well above an agent's restart and
# first report (about 1-3 s), while the edges' checks take a dead one out in 2-3 s.
HOLD = 30.0

BackendKey = tuple[str, int, int, str]  # app, slot, revision, host


@dataclass(frozen=True)
class Listed:
    """A backend of the last table, and since when its host has been silent (None:
    it was listed on its host's own report)."""

    backend: pb.EdgeBackend
    silent_since: float | None = None


Memory = Mapping[BackendKey, Listed]


def backend_name(app: str, slot: int, revision: int, host: str) -> str:
    """A container's name in the edges' tables: stable for the container's life."""
    return f"{app}-{slot}-r{revision}-{host}"


def _port(spec: AppSpec, report: ContainerReport) -> int:
    """The host port the ingress port answers on (0: not published)."""
    assert spec.ingress is not None
    for binding in report.ports:
        if binding.container_port == spec.ingress.port and binding.protocol == "tcp":
            return binding.host_port
    # A container on the host's network answers on its own port, published or not.
    return spec.ingress.port if spec.host_network else 0


def _stays_ready(before: Listed | None, report: ContainerReport) -> bool:
    """Whether a backend the last table listed ready stays so though its report does
    not show it available: ``min_ready`` is a new container's proof, and an agent that
    restarts checks its containers afresh (healthy "since" its first probe, a second
    ago) while they have served all along. Not once it is reported unhealthy or
    crash-looping."""
    return before is not None and before.backend.state == "ready" and crash_reason(report) is None


def _backends(
    state: ClusterState, spec: AppSpec, now: float, last: Memory, listed: dict[BackendKey, Listed]
) -> list[pb.EdgeBackend]:
    app, min_ready = spec.name, spec.update.min_ready
    observed = observe(state, app)
    desired = {
        (c.slot, c.revision, c.host): c
        for replica in state.replicas_of(app)
        for c in replica.containers()
    }
    backends = []
    for (slot, revision, host_id), report in observed.reports.items():
        host = state.hosts.get(host_id)
        if report.state != "running" or host is None or not host.value.address:
            continue
        key = (app, slot, revision, host_id)
        container = desired.get((slot, revision, host_id))
        if container is None:
            state_word = "drain"  # no longer desired: its shutdown delay
        elif observed.available(container, min_ready, now) or _stays_ready(last.get(key), report):
            state_word = "ready"
        else:
            continue
        port = _port(spec, report)
        if port:
            backend = pb.EdgeBackend(
                name=backend_name(app, slot, revision, host_id),
                address=host.value.address,
                port=port,
                state=state_word,
            )
            backends.append(backend)
            listed[key] = Listed(backend)
    for key, before in last.items():
        _, slot, revision, host_id = key
        if key[0] != app or host_id in state.status or host_id not in state.hosts:
            continue  # another app's, a reporting host's (its word stands), a removed one
        if (slot, revision, host_id) not in desired:
            continue  # fleet moved it on (or it was draining): nothing to keep serving
        since = now if before.silent_since is None else before.silent_since
        if now < since + HOLD:
            backends.append(before.backend)
            listed[key] = Listed(before.backend, since)
    return sorted(backends, key=lambda b: b.name)


def edge_routes(state: ClusterState, now: float) -> list[pb.EdgeRoute]:
    """Every app's ingress route with its backends at ``now``, by app name (backends by
    name): the same state and time give the same list. Without the feed's memory: no
    silent host's backends are held."""
    return edge_table(state, now, {})[0]


def edge_table(
    state: ClusterState, now: float, last: Memory
) -> tuple[list[pb.EdgeRoute], dict[BackendKey, Listed]]:
    """``edge_routes`` with silent hosts' backends held from ``last``, the memory the
    previous call returned; and the memory for the next call."""
    routes: list[pb.EdgeRoute] = []
    listed: dict[BackendKey, Listed] = {}
    for name in sorted(state.apps):
        spec = state.apps[name].value.spec
        ingress = spec.ingress
        if ingress is None:
            continue
        route = pb.EdgeRoute(
            app=name,
            check_path=spec.ingress_check_path(),
            timeout_seconds=ingress.timeout,
            backends=_backends(state, spec, now, last, listed),
        )
        if ingress.tcp is not None:
            route.tcp_port = ingress.tcp
        else:
            route.hosts.extend(ingress.hosts(name))
            route.path = ingress.route_path()
        routes.append(route)
    return routes, listed


def hold_ends(memory: Memory) -> float | None:
    """When the first held backend's hold ends (the table changes then), if any is held."""
    ends = [m.silent_since + HOLD for m in memory.values() if m.silent_since is not None]
    return min(ends, default=None)


def feed_inputs(state: ClusterState) -> object | None:
    """What ``edge_routes`` reads of ``state``, as the informer's change counters: equal
    inputs give an equal table at the same time (None: the state does not say). The
    records of apps with an ingress, their replicas and reports, and the hosts."""
    changes = state.changes
    if changes is None:
        return None
    apps = tuple(
        (name, changes.apps.get(name, 0), changes.reports.get(name, 0))
        for name, stored in state.apps.items()
        if stored.value.spec.ingress is not None
    )
    return changes.hosts, apps


def next_change(state: ClusterState, now: float) -> float | None:
    """The earliest time after ``now`` at which a desired container of an app with an
    ingress becomes available (and so a ready backend), if nothing else changes; None
    when none is on its way. Everything else that changes the routes is a change of
    the state."""
    earliest: float | None = None
    for stored in state.apps.values():
        spec = stored.value.spec
        if spec.ingress is None:
            continue
        observed = observe(state, spec.name)
        for replica in state.replicas_of(spec.name):
            for container in replica.containers():
                at = observed.available_at(container, spec.update.min_ready)
                if at is not None and at > now and (earliest is None or at < earliest):
                    earliest = at
    return earliest
