"""The scheduler's view of the cluster, built from the informer's state: each host's
capacity, live usage and what the placed replicas reserve there, and what a slot asks
of a host (``requests``). ``HostViews`` keeps the hosts' views between rounds."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleet._time import epoch
from fleet.scheduler import HostView, PlacedReplica, ReplicaRequest, Snapshot, nanocores
from fleet.spec import AppSpec
from fleet.store import ClusterState
from fleet.store.records import ReplicaRecord, ResourceAmounts

__all__ = [
    "STATS_STALE_AFTER",
    "HostLoad",
    "HostViews",
    "fixed_host_ports",
    "placed_replicas",
    "requests",
    "scheduler_snapshot",
]

# Live usage older than this counts as none (reservations alone): a few of the agents'
# status reports, which are rewritten at least every STATUS_REFRESH seconds.
STATS_STALE_AFTER = 15.0


def fixed_host_ports(spec: AppSpec) -> list[str]:
    """``8080/tcp`` for every fixed host port a container of ``spec`` publishes."""
    return sorted(f"{p.host_port}/{p.protocol}" for p in spec.ports if p.host_port)


def requests(spec: AppSpec, template: AppSpec, slots: Sequence[int]) -> list[ReplicaRequest]:
    """What each of ``slots`` asks of a host: the container ``template``'s reservations,
    ports and image, and where the app's current ``spec`` lets it run (a change of
    constraints or placement alone makes no new revision, so the revision's copy may be
    older). What they ask is worked out once."""
    ports = frozenset(fixed_host_ports(template))
    constraints = tuple(spec.constraints)
    return [
        ReplicaRequest(
            app=spec.name,
            slot=slot,
            cpu=template.resources.cpu,
            memory=template.resources.memory,
            host_ports=ports,
            constraints=constraints,
            image=template.image,
            placement=spec.placement,
            max_per_host=spec.max_per_host,
        )
        for slot in slots
    ]


def placed_replicas(replica: ReplicaRecord) -> list[PlacedReplica]:
    """What a replica holds on hosts, as the scheduler counts it: each of its containers."""
    return [
        PlacedReplica(
            app=replica.app,
            slot=replica.slot,
            host=c.host,
            cpu=c.resources.cpu,
            memory=c.resources.memory,
            host_ports=frozenset(c.host_ports),
        )
        for c in replica.containers()
    ]


@dataclass
class HostLoad:
    """What containers reserve on one host: a host's view is built from it, and a
    round adds the containers it wrote that the state does not show yet."""

    nanocpus: int = 0
    memory: int = 0
    apps: Counter[str] = field(default_factory=Counter)
    ports: Counter[str] = field(default_factory=Counter)

    def add(self, replica: ReplicaRecord, host: str) -> None:
        for c in replica.containers():
            if c.host == host:
                self.nanocpus += nanocores(c.resources.cpu)
                self.memory += c.resources.memory
                self.apps[replica.app] += 1
                self.ports.update(c.host_ports)

    def add_to(self, view: HostView) -> HostView:
        return dataclasses.replace(
            view,
            reserved_nanocpus=view.reserved_nanocpus + self.nanocpus,
            reserved_memory=view.reserved_memory + self.memory,
            placed_apps=dict(Counter(view.placed_apps) + self.apps),
            placed_ports=dict(Counter(view.placed_ports) + self.ports),
        )


def _host_view(state: ClusterState, host_id: str) -> HostView:
    host = state.hosts[host_id].value
    status = state.status.get(host_id)
    load = HostLoad()
    for replica in state.host_replicas(host_id).values():
        load.add(replica, host_id)
    return HostView(
        host_id=host_id,
        cpu=host.capacity.cpu,
        memory=host.capacity.memory,
        labels=state.selectable_labels(host_id),
        state=host.state,
        connected=host_id in state.alive,
        used_cpu=status.value.usage.cpu if status else 0.0,
        used_memory=status.value.usage.memory if status else 0,
        stats_at=epoch(status.value.reported_at) if status else None,
        images=frozenset(status.value.images) if status else frozenset(),
        reserved_nanocpus=load.nanocpus,
        reserved_memory=load.memory,
        placed_apps=dict(load.apps),
        placed_ports=dict(load.ports),
    )


class HostViews:
    """Each host's view, rebuilt only when what it was built from changed: its host,
    admin labels and status records (by their keys' mod revisions), its liveness, and
    its replicas (the informer's number for the host's inputs). So at 5,000 hosts a plan
    rebuilds only the hosts that changed. One per control plane (the controller's, lent
    to the API's dry runs); removed hosts leave it.

    Numbers, not the objects themselves: a view kept the state's records and replica
    index it was built from, and once the informer had moved on (every host's status
    is rewritten every few seconds, its index copied at every change) that was an old
    copy of each, about 2 KiB a host after a ramp (#24 item 3)."""

    def __init__(self) -> None:
        self._views: dict[str, tuple[tuple[int | bool | None, ...], HostView]] = {}

    def view(self, state: ClusterState, host_id: str) -> HostView:
        changes = state.changes
        if changes is None:  # a state that may be changed (a test's) is not kept
            return _host_view(state, host_id)
        labels = state.host_labels.get(host_id)
        status = state.status.get(host_id)
        stamp = (
            state.hosts[host_id].mod_revision,
            labels.mod_revision if labels is not None else None,
            status.mod_revision if status is not None else None,
            host_id in state.alive,
            changes.host_inputs.get(host_id),
        )
        found = self._views.get(host_id)
        if found is not None and found[0] == stamp:
            return found[1]
        view = _host_view(state, host_id)
        if len(self._views) > 2 * len(state.hosts) + 16:
            self._views = {h: v for h, v in self._views.items() if h in state.hosts}
        self._views[host_id] = (stamp, view)
        return view


def _without(
    view: HostView, taken: list[tuple[ResourceAmounts, tuple[str, ...]]], app: str
) -> HostView:
    """``view`` without the containers of ``app`` (``taken``: their reservations)."""
    ports = dict(view.placed_ports)
    for _, host_ports in taken:
        for port in host_ports:
            ports[port] -= 1
    return dataclasses.replace(
        view,
        reserved_nanocpus=view.reserved_nanocpus - sum(nanocores(r.cpu) for r, _ in taken),
        reserved_memory=view.reserved_memory - sum(r.memory for r, _ in taken),
        placed_apps={a: n for a, n in view.placed_apps.items() if a != app},
        placed_ports={p: n for p, n in ports.items() if n > 0},
    )


def scheduler_snapshot(
    state: ClusterState,
    *,
    exclude_app: str | None = None,
    now: float | None = None,
    written: Mapping[str, HostLoad] | None = None,
    views: HostViews | None = None,
) -> Snapshot:
    """The scheduler's view: registered hosts (connected or not) with their live usage
    and what the placed replicas reserve on each (a replacement being started counts
    too), optionally leaving out one app's replicas. Without ``now`` live usage is
    ignored. ``written`` adds containers the state does not show yet; ``views`` keeps
    host views between calls. Costs O(hosts + the left-out app's replicas), not
    O(replicas), once the views are kept."""
    view = views.view if views is not None else _host_view
    hosts = [view(state, host_id) for host_id in state.hosts]
    if exclude_app is not None:
        taken: dict[str, list[tuple[ResourceAmounts, tuple[str, ...]]]] = {}
        for versioned in state.replica_slots(exclude_app).values():
            for c in versioned.value.containers():
                taken.setdefault(c.host, []).append((c.resources, c.host_ports))
        hosts = [
            _without(h, taken[h.host_id], exclude_app) if h.host_id in taken else h for h in hosts
        ]
    if written:
        hosts = [written[h.host_id].add_to(h) if h.host_id in written else h for h in hosts]
    return Snapshot(hosts=tuple(hosts), now=now, stale_after=STATS_STALE_AFTER)
