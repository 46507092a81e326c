"""What the edge hosts route: every app's ingress and its backends, from the state at
``now``. Pure (``edgepush`` sends it to the edges).

A backend is a container its host reports running with the ingress port published:
``ready`` while it is desired and available (healthy for ``update.min_ready``, as
rollouts count it), ``drain`` once it is no longer desired but still runs (its
``shutdown_delay``: in-flight requests finish, no new ones come). A desired container
not yet available, a stopped one, and one on a disconnected host (its reports are
gone with its session) are not listed.
"""

from __future__ import annotations

from fleet.controlplane.availability import observe
from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppSpec
from fleet.store import ClusterState
from fleet.store.records import ContainerReport

__all__ = ["backend_name", "edge_routes", "feed_inputs", "next_change"]


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


def _backends(state: ClusterState, spec: AppSpec, now: float) -> list[pb.EdgeBackend]:
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
        container = desired.get((slot, revision, host_id))
        if container is None:
            state_word = "drain"  # no longer desired: its shutdown delay
        elif observed.available(container, min_ready, now):
            state_word = "ready"
        else:
            continue
        port = _port(spec, report)
        if port:
            backends.append(
                pb.EdgeBackend(
                    name=backend_name(app, slot, revision, host_id),
                    address=host.value.address,
                    port=port,
                    state=state_word,
                )
            )
    return sorted(backends, key=lambda b: b.name)


def edge_routes(state: ClusterState, now: float) -> list[pb.EdgeRoute]:
    """Every app's ingress route with its backends at ``now``, by app name (backends by
    name): the same state and time give the same list."""
    routes = []
    for name in sorted(state.apps):
        spec = state.apps[name].value.spec
        ingress = spec.ingress
        if ingress is None:
            continue
        route = pb.EdgeRoute(
            app=name,
            check_path=spec.ingress_check_path(),
            timeout_seconds=ingress.timeout,
            backends=_backends(state, spec, now),
        )
        if ingress.tcp is not None:
            route.tcp_port = ingress.tcp
        else:
            route.hosts.extend(ingress.hosts(name))
            route.path = ingress.route_path()
        routes.append(route)
    return routes


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
