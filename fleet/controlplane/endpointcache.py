"""Each app's endpoints (``fleet endpoints``) kept slot by slot, as ``appcounts`` keeps
its counts: a change of one replica or one report works out that slot's endpoints
again, not the app's; the time only picks which are available yet.

Each slot keeps its containers' endpoints with the time each container is (or will
be) available; only slots with endpoints are kept, so an app that publishes no port
costs nothing per call. What a slot's endpoints are also made of besides its replica
and reports, the hosts' addresses and the app's ``min_ready``, recomputes every slot
when it changes, as does another slot log (``Changes.slot_logs``) or an older state.
"""

from __future__ import annotations

from collections.abc import Mapping

from fleet.controlplane.availability import Observed
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, Versioned
from fleet.store.records import ContainerReport, HostRecord, ReplicaRecord, SlotContainer

__all__ = ["EndpointsCache", "container_endpoints", "slot_endpoints"]

# A slot's containers that have endpoints: when each is available, and its endpoints.
SlotEndpoints = tuple[tuple[float, tuple[pb.Endpoint, ...]], ...]


def container_endpoints(
    app: str, container: SlotContainer, host: HostRecord, report: ContainerReport
) -> list[pb.Endpoint]:
    """One endpoint for each port the agent reports ``container`` publishing."""
    return [
        pb.Endpoint(
            app=app,
            slot=container.slot,
            host=container.host,
            address=host.address,
            host_port=port.host_port,
            container_port=port.container_port,
            protocol=port.protocol,
            revision=container.revision,
        )
        for port in report.ports
    ]


def slot_endpoints(
    replica: ReplicaRecord,
    reports: Mapping[tuple[int, int, str], ContainerReport],
    hosts: Mapping[str, Versioned[HostRecord]],
    min_ready: float,
) -> SlotEndpoints:
    """host:port of each of ``replica``'s containers that is or will be available,
    with the time it is."""
    observed = Observed(reports)
    found: list[tuple[float, tuple[pb.Endpoint, ...]]] = []
    for container in replica.containers():
        report = observed.report(container)
        host = hosts.get(container.host)
        if report is None or host is None or not report.ports:
            continue
        at = observed.available_at(container, min_ready)
        if at is None:
            continue
        found.append((at, tuple(container_endpoints(replica.app, container, host.value, report))))
    return tuple(found)


class _AppEndpoints:
    def __init__(self, key: object, log: object, position: int) -> None:
        self.key, self.log, self.position = key, log, position
        self.slots: dict[int, SlotEndpoints] = {}  # only slots with endpoints

    def put(self, slot: int, found: SlotEndpoints) -> None:
        if found:
            self.slots[slot] = found
        else:
            self.slots.pop(slot, None)

    def at(self, now: float) -> list[pb.Endpoint]:
        return [
            endpoint
            for slot in sorted(self.slots)
            for at, endpoints in self.slots[slot]
            if at <= now
            for endpoint in endpoints
        ]


class EndpointsCache:
    """Each app's endpoints by slot, brought up to each state asked about. One per
    control plane, used on its event loop; deleted apps leave it."""

    def __init__(self) -> None:
        self._apps: dict[str, _AppEndpoints] = {}

    def endpoints(self, state: ClusterState, app: str, now: float) -> list[pb.Endpoint]:
        """``appstatus.endpoints(state, app, now)``."""
        stored = state.apps.get(app)
        changes = state.changes
        if stored is None:
            return []
        min_ready = stored.value.spec.update.min_ready
        if changes is None:  # a state that may be changed in place (a test's)
            return self._all(state, app, min_ready, None, None, 0).at(now)
        log, position = changes.slot_logs.get(app, (None, 0))
        key = (min_ready, changes.hosts)
        found = self._apps.get(app)
        if (
            found is None
            or found.key != key
            or log is None
            or found.log is not log
            or found.position > position
        ):
            found = self._all(state, app, min_ready, key, log, position)
        elif found.position < position:
            reports, slots = state.reports_of(app), state.replica_slots(app)
            for slot in set(log[found.position : position]):
                replica = slots.get(slot)
                if replica is None:
                    found.put(slot, ())
                else:  # (under the record's shared slot, as ``appcounts`` keeps it)
                    found.put(
                        replica.value.slot,
                        slot_endpoints(replica.value, reports, state.hosts, min_ready),
                    )
            found.position = position
        if len(self._apps) > 2 * len(state.apps) + 16:
            self._apps = {a: e for a, e in self._apps.items() if a in state.apps}
        self._apps[app] = found
        return found.at(now)

    def _all(
        self,
        state: ClusterState,
        app: str,
        min_ready: float,
        key: object,
        log: object,
        position: int,
    ) -> _AppEndpoints:
        found = _AppEndpoints(key, log, position)
        reports = state.reports_of(app)
        for slot, replica in state.replica_slots(app).items():
            found.put(slot, slot_endpoints(replica.value, reports, state.hosts, min_ready))
        return found
