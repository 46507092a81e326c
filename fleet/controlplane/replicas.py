"""The replica controller: keeps each app's replica records in line with its spec.

Level-triggered: on every wake-up it compares the whole desired state (apps) with the
replica records and writes the difference, one compare-and-swap transaction per app.
``plan_replicas`` is the pure part; ``ReplicaController`` runs it and commits.

Slots are numbered 0..replicas-1, so scaling down removes the highest slots and
scaling up fills the gaps, and a replica keeps its slot (and its host) for life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from fleet._time import epoch, now_iso
from fleet.controlplane.metrics import Metrics
from fleet.errors import Conflict, Unavailable
from fleet.proto import fleet_pb2 as pb
from fleet.scheduler import HostView, PlacedReplica, Plan, ReplicaRequest, Snapshot, schedule
from fleet.spec import AppSpec
from fleet.store import ClusterState, EventLog, Informer, Store
from fleet.store.records import ReplicaRecord, ResourceAmounts

__all__ = ["ReplicaController", "ReplicaPlan", "plan_replicas", "scheduler_snapshot"]

log = logging.getLogger(__name__)


@dataclass
class ReplicaPlan:
    put: list[tuple[ReplicaRecord, int]] = field(default_factory=list)  # record, mod revision
    delete: list[tuple[int, int]] = field(default_factory=list)  # slot, mod revision
    pending: dict[int, str] = field(default_factory=dict)  # slot -> why it is unplaced

    def is_empty(self) -> bool:
        return not self.put and not self.delete


def fixed_host_ports(spec: AppSpec) -> list[str]:
    return sorted(f"{p.host_port}/{p.protocol}" for p in spec.ports if p.host_port)


def _request(spec: AppSpec, template: AppSpec, slot: int) -> ReplicaRequest:
    """What one slot asks of a host: the container ``template``'s reservations, ports and
    image, and where the app's current ``spec`` lets it run (a change of constraints or
    placement alone makes no new revision, so the revision's copy may be older)."""
    return ReplicaRequest(
        app=spec.name,
        slot=slot,
        cpu=template.resources.cpu,
        memory=template.resources.memory,
        host_ports=frozenset(fixed_host_ports(template)),
        constraints=tuple(spec.constraints),
        image=template.image,
        placement=spec.placement,
        max_per_host=spec.max_per_host,
    )


# Live usage older than this counts as none (reservations alone): a few of the agents'
# status reports, which are rewritten at least every STATUS_REFRESH seconds.
STATS_STALE_AFTER = 15.0


def _host_view(state: ClusterState, host_id: str) -> HostView:
    host = state.hosts[host_id].value
    status = state.status.get(host_id)
    return HostView(
        host_id=host_id,
        cpu=host.capacity.cpu,
        memory=host.capacity.memory,
        labels={**host.facts, **host.labels},
        state=host.state,
        connected=host_id in state.alive,
        used_cpu=status.value.usage.cpu if status else 0.0,
        used_memory=status.value.usage.memory if status else 0,
        stats_at=epoch(status.value.reported_at) if status else None,
        images=frozenset(status.value.images) if status else frozenset(),
    )


def scheduler_snapshot(
    state: ClusterState, *, exclude_app: str | None = None, now: float | None = None
) -> Snapshot:
    """The scheduler's view: registered hosts (connected or not) with their live usage,
    and every placed replica's reservation, optionally leaving out one app's replicas.
    Without ``now`` live usage is ignored."""
    hosts = tuple(_host_view(state, host_id) for host_id in state.hosts)
    placed = tuple(
        PlacedReplica(
            app=r.value.app,
            slot=r.value.slot,
            host=r.value.host,
            cpu=r.value.resources.cpu,
            memory=r.value.resources.memory,
            host_ports=frozenset(r.value.host_ports),
        )
        for r in state.replicas.values()
        if r.value.app != exclude_app
    )
    return Snapshot(hosts=hosts, placed=placed, now=now, stale_after=STATS_STALE_AFTER)


def plan_replicas(
    state: ClusterState,
    app: str,
    now: float | None = None,
    lost_hosts: frozenset[str] = frozenset(),
) -> ReplicaPlan:
    """What to write so ``app``'s replicas match its spec in ``state``; ``now`` (epoch
    seconds) lets fresh live usage count. Replicas on ``lost_hosts`` (down for longer
    than the controller waits) are placed again elsewhere, keeping their slots; where
    nothing fits they stay, pending."""
    plan = ReplicaPlan()
    stored = state.apps.get(app)
    existing = {slot: v for (a, slot), v in state.replicas.items() if a == app}
    if stored is None:
        plan.delete = [(slot, v.mod_revision) for slot, v in sorted(existing.items())]
        return plan
    record = stored.value
    spec = record.spec
    wanted = set(range(spec.replicas))

    # Scale down: slots beyond the count go.
    plan.delete = [
        (slot, v.mod_revision) for slot, v in sorted(existing.items()) if slot not in wanted
    ]

    # Kept replicas move to the current revision in place (the rollout controller will
    # gate this; the skeleton replaces them at once).
    revision = state.revision_spec(app, record.revision)
    template = revision.spec if revision is not None else spec
    resources = ResourceAmounts(cpu=template.resources.cpu, memory=template.resources.memory)
    ports = fixed_host_ports(template)
    for slot, v in sorted(existing.items()):
        if slot in wanted and (
            v.value.revision != record.revision
            or v.value.resources != resources
            or v.value.host_ports != ports
        ):
            updated = v.value.model_copy(
                update={"revision": record.revision, "resources": resources, "host_ports": ports}
            )
            plan.put.append((updated, v.mod_revision))

    # Place the missing slots, and those on lost hosts, through the scheduler, on a
    # snapshot that counts this app's kept replicas with what they reserve after the
    # update above. Placements that still fit are never moved.
    moving = {s for s, v in existing.items() if s in wanted and v.value.host in lost_hosts}
    missing = sorted((wanted - existing.keys()) | moving)
    if missing:
        others = scheduler_snapshot(state, exclude_app=app, now=now)
        kept = tuple(
            PlacedReplica(
                app=app,
                slot=slot,
                host=v.value.host,
                cpu=resources.cpu,
                memory=resources.memory,
                host_ports=frozenset(ports),
            )
            for slot, v in sorted(existing.items())
            if slot in wanted and slot not in moving
        )
        snapshot = Snapshot(
            hosts=others.hosts, placed=others.placed + kept, now=now, stale_after=others.stale_after
        )
        placed: Plan = schedule(snapshot, [_request(spec, template, slot) for slot in missing])
        updated_slots = {r.slot: n for n, (r, _) in enumerate(plan.put)}
        for placement in placed.placements:
            replica = ReplicaRecord(
                app=app,
                slot=placement.slot,
                revision=record.revision,
                host=placement.host,
                resources=resources,
                host_ports=ports,
            )
            if placement.slot in moving:  # same key, a new host: guarded on what we read
                mod = existing[placement.slot].mod_revision
                if placement.slot in updated_slots:
                    plan.put[updated_slots[placement.slot]] = (replica, mod)
                else:
                    plan.put.append((replica, mod))
            else:
                plan.put.append((replica, 0))
        for (_, slot), _reasons in placed.unplaced.items():
            plan.pending[slot] = placed.explain(app, slot, len(snapshot.hosts))
    return plan


def lost_hosts(
    state: ClusterState, down_since: dict[str, float], now: float, reschedule_after: float
) -> frozenset[str]:
    """Hosts whose replicas go elsewhere: down for ``reschedule_after``, or gone."""
    gone = {r.value.host for r in state.replicas.values()} - state.hosts.keys()
    waited = {h for h, since in down_since.items() if now - since >= reschedule_after}
    return frozenset(gone | waited)


class ReplicaController:
    """Runs ``plan_replicas`` for every app whenever the informer sees a change, and
    moves the replicas of hosts that stay down for ``reschedule_after`` seconds."""

    def __init__(
        self,
        store: Store,
        informer: Informer,
        events: EventLog,
        *,
        resync: float = 30.0,
        reschedule_after: float = 15.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._informer = informer
        self._events = events
        self._resync = resync
        self._reschedule_after = reschedule_after
        # When each registered host was first seen without its liveness key. In memory: a
        # new leader waits the full time again, which errs on the side of not moving.
        self._down_since: dict[str, float] = {}
        self._announced: set[str] = set()  # hosts with a host-down event and no host-up yet
        self._started = False  # past the first look at the state
        self.pending: dict[str, dict[int, str]] = {}  # app -> slot -> reason (for the API)

    async def run(self) -> None:
        subscription = self._informer.subscribe()
        await self._informer.wait_synced()
        while True:
            # Wake on a change, when a down host's wait is over, or after a while anyway.
            timeout = self._resync
            if self._down_since:
                due = min(self._down_since.values()) + self._reschedule_after - time.time()
                timeout = max(0.1, min(timeout, due)) if due > 0 else self._resync
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscription.wait(), timeout)
            await self.reconcile_all()

    async def _track_liveness(self, state: ClusterState, now: float) -> None:
        """Note hosts going down and coming back, with an event for each."""
        changes = []
        for host_id in sorted(state.hosts.keys() - state.alive.keys()):
            if host_id not in self._down_since:
                self._down_since[host_id] = now
                # Hosts already down when this controller started are timed but not
                # announced: at a restart every agent is briefly away and reconnecting.
                if self._started:
                    changes.append(("host-down", host_id, "the agent is not connected"))
                    self._announced.add(host_id)
        for host_id in sorted(self._down_since.keys() & state.alive.keys()):
            del self._down_since[host_id]
            if host_id in self._announced:
                self._announced.discard(host_id)
                changes.append(("host-up", host_id, "the agent is connected again"))
        self._started = True
        for host_id in sorted(self._down_since.keys() - state.hosts.keys()):
            del self._down_since[host_id]
        events = [
            pb.Event(time=now_iso(), source="controlplane", host=h, kind=k, message=m)
            for k, h, m in changes
        ]
        try:
            await self._events.append("controlplane", events)
        except Unavailable as error:
            log.warning("could not record %d event(s): %s", len(events), error)

    async def reconcile_all(self) -> None:
        started = time.monotonic()
        try:
            await self._reconcile_all()
        finally:
            if self._metrics is not None:
                self._metrics.reconcile.observe(time.monotonic() - started)

    async def _reconcile_all(self) -> None:
        state = self._informer.state()
        now = time.time()
        await self._track_liveness(state, now)
        lost = lost_hosts(state, self._down_since, now, self._reschedule_after)
        apps = set(state.apps) | {app for app, _ in state.replicas}
        pending: dict[str, dict[int, str]] = {}
        for app in sorted(apps):
            planning = time.monotonic()
            plan = plan_replicas(state, app, time.time(), lost)
            if self._metrics is not None:
                self._metrics.scheduling.observe(time.monotonic() - planning)
            if plan.pending:
                pending[app] = plan.pending
            if plan.is_empty():
                continue
            stored = state.apps.get(app)
            try:
                revision = await self._store.commit_replicas(
                    app,
                    app_mod_revision=stored.mod_revision if stored else 0,
                    put=plan.put,
                    delete=plan.delete,
                )
                log.info(
                    "app %s: %d replica(s) written, %d removed",
                    app,
                    len(plan.put),
                    len(plan.delete),
                )
                # The next app must be planned on a state that counts these placements.
                try:
                    await asyncio.wait_for(self._informer.wait_for_revision(revision), 10)
                except TimeoutError:
                    log.warning("the watch is behind; planning the other apps later")
                    break
                state = self._informer.state()
            except Conflict:
                # The state moved on under us; the watch will wake us with the new one.
                log.debug("app %s: replica plan lost a race; re-planning on the next change", app)
            except Unavailable as error:
                log.warning("app %s: cannot commit replicas: %s", app, error)
                if self._metrics is not None:
                    self._metrics.etcd_errors.inc()
        await self._report_unschedulable(pending)
        self.pending = pending

    async def _report_unschedulable(self, pending: dict[str, dict[int, str]]) -> None:
        """One event per replica when it becomes unschedulable or its reason changes."""
        new = [
            pb.Event(
                time=now_iso(),
                source="controlplane",
                app=app,
                slot=slot,
                kind="unschedulable",
                message=reason,
            )
            for app, slots in sorted(pending.items())
            for slot, reason in sorted(slots.items())
            if self.pending.get(app, {}).get(slot) != reason
        ]
        try:
            await self._events.append("controlplane", new)
        except Unavailable as error:
            log.warning("could not record %d event(s): %s", len(new), error)
