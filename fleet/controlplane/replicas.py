"""The replica controller: keeps each app's replica records in line with its spec.

Level-triggered: on every wake-up it compares the whole desired state (apps) with the
replica records and writes the difference, one compare-and-swap transaction per app.
``plan_replicas`` is the pure part; ``ReplicaController`` runs it and commits.

Slots are numbered 0..replicas-1, so scaling down removes the highest slots and
scaling up fills the gaps, and a replica keeps its slot for life. A new revision moves
through the slots as ``fleet.controlplane.rollout`` describes, in the same transaction
as the rollout's own record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleet._time import epoch, iso_at, now_iso
from fleet.controlplane.metrics import Metrics
from fleet.controlplane.modes import global_slots, job_progress, job_slots
from fleet.controlplane.rollout import Instance, crash_reason, instances, observe, template_of
from fleet.controlplane.upgrades import step_upgrade
from fleet.errors import Conflict, Unavailable
from fleet.proto import fleet_pb2 as pb
from fleet.scheduler import (
    HostView,
    PlacedReplica,
    Plan,
    ReplicaRequest,
    Snapshot,
    nanocores,
    schedule,
)
from fleet.spec import AppSpec
from fleet.store import ClusterState, EventLog, Informer, Store
from fleet.store.records import (
    AppRecord,
    JobRecord,
    ReplicaRecord,
    ReplicaTarget,
    ResourceAmounts,
    RolloutRecord,
)

__all__ = ["ReplicaController", "ReplicaPlan", "plan_replicas", "scheduler_snapshot"]

log = logging.getLogger(__name__)


@dataclass
class ReplicaPlan:
    put: list[tuple[ReplicaRecord, int]] = field(default_factory=list)  # record, mod revision
    delete: list[tuple[int, int]] = field(default_factory=list)  # slot, mod revision
    pending: dict[int, str] = field(default_factory=dict)  # slot -> why it is unplaced
    blocked: dict[int, str] = field(default_factory=dict)  # slot -> why a drain cannot move it
    # The rollout record to write (with the mod revision it was read at), or None.
    rollout: tuple[RolloutRecord, int] | None = None
    delete_rollout: int | None = None  # the mod revision of a rollout record to delete
    job: tuple[JobRecord, int] | None = None  # a job's record to write, with its mod revision
    delete_job: int | None = None
    app: AppRecord | None = None  # an automatic rollback rewrites the app (same guard)
    events: list[tuple[str, int | None, str]] = field(default_factory=list)  # kind, slot, text
    wake_at: float | None = None  # when a replica becomes available or a deadline passes

    def is_empty(self) -> bool:
        return (
            not self.put
            and not self.delete
            and self.rollout is None
            and self.delete_rollout is None
            and self.app is None
            and self.job is None
            and self.delete_job is None
        )


def fixed_host_ports(spec: AppSpec) -> list[str]:
    return sorted(f"{p.host_port}/{p.protocol}" for p in spec.ports if p.host_port)


def _request(spec: AppSpec, template: AppSpec, slot: int) -> ReplicaRequest:
    """What one slot asks of a host: the container ``template``'s reservations, ports and
    image, and where the app's current ``spec`` lets it run (a change of constraints or
    placement alone makes no new revision, so the revision's copy may be older)."""
    return _requests(spec, template, [slot])[0]


def _requests(spec: AppSpec, template: AppSpec, slots: Sequence[int]) -> list[ReplicaRequest]:
    """``_request`` for each of ``slots`` (what they ask is worked out once)."""
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


# Live usage older than this counts as none (reservations alone): a few of the agents'
# status reports, which are rewritten at least every STATUS_REFRESH seconds.
STATS_STALE_AFTER = 15.0


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


def _containers(replica: ReplicaRecord) -> list[tuple[str, ResourceAmounts, list[str]]]:
    """(host, reservation, fixed ports) of each container a replica holds: its own and
    its next, if any."""
    own = [(replica.host, replica.resources, replica.host_ports)]
    nxt = replica.next
    return own if nxt is None else [*own, (nxt.host, nxt.resources, nxt.host_ports)]


# host id -> (what its view was built from, the view). A view is rebuilt only when one
# of those objects changed; the informer shares unchanged records and per-host replica
# indexes between states, so at 5,000 hosts a plan rebuilds only the hosts that changed.
_views: dict[str, tuple[tuple[object, ...], HostView]] = {}


def _cached_view(state: ClusterState, host_id: str) -> HostView:
    inputs = (
        state.hosts[host_id],
        state.host_labels.get(host_id),
        state.status.get(host_id),
        host_id in state.alive,
        state.host_replicas(host_id),
    )
    found = _views.get(host_id)
    if (
        found is not None
        and len(found[0]) == len(inputs)
        and all(a is b for a, b in zip(found[0], inputs, strict=True))
    ):
        return found[1]
    view = _host_view(state, host_id)
    if state.changes is not None:  # a state that may be changed (a test's) is not cached
        _views[host_id] = (inputs, view)
    return view


@dataclass
class HostLoad:
    """What containers reserve on one host: a host's view is built from it, and a
    round adds the containers it wrote that the state does not show yet."""

    nanocpus: int = 0
    memory: int = 0
    apps: Counter[str] = field(default_factory=Counter)
    ports: Counter[str] = field(default_factory=Counter)

    def add(self, replica: ReplicaRecord, host: str) -> None:
        for on, resources, host_ports in _containers(replica):
            if on == host:
                self.nanocpus += nanocores(resources.cpu)
                self.memory += resources.memory
                self.apps[replica.app] += 1
                self.ports.update(host_ports)

    def add_to(self, view: HostView) -> HostView:
        return dataclasses.replace(
            view,
            reserved_nanocpus=view.reserved_nanocpus + self.nanocpus,
            reserved_memory=view.reserved_memory + self.memory,
            placed_apps=dict(Counter(view.placed_apps) + self.apps),
            placed_ports=dict(Counter(view.placed_ports) + self.ports),
        )


def _without(view: HostView, taken: list[tuple[ResourceAmounts, list[str]]], app: str) -> HostView:
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


def _placed(replica: ReplicaRecord) -> list[PlacedReplica]:
    """What a replica holds on hosts: its own container and its next one, if any."""
    return [
        PlacedReplica(
            app=replica.app,
            slot=replica.slot,
            host=host,
            cpu=resources.cpu,
            memory=resources.memory,
            host_ports=frozenset(host_ports),
        )
        for host, resources, host_ports in _containers(replica)
    ]


def scheduler_snapshot(
    state: ClusterState,
    *,
    exclude_app: str | None = None,
    now: float | None = None,
    written: Mapping[str, HostLoad] | None = None,
) -> Snapshot:
    """The scheduler's view: registered hosts (connected or not) with their live usage
    and what the placed replicas reserve on each (a replacement being started counts
    too), optionally leaving out one app's replicas. Without ``now`` live usage is
    ignored. ``written`` adds containers the state does not show yet. Costs
    O(hosts + the left-out app's replicas), not O(replicas)."""
    hosts = [_cached_view(state, host_id) for host_id in state.hosts]
    if exclude_app is not None:
        taken: dict[str, list[tuple[ResourceAmounts, list[str]]]] = {}
        for versioned in state.replica_slots(exclude_app).values():
            for on, resources, host_ports in _containers(versioned.value):
                taken.setdefault(on, []).append((resources, host_ports))
        hosts = [
            _without(h, taken[h.host_id], exclude_app) if h.host_id in taken else h for h in hosts
        ]
    if written:
        hosts = [written[h.host_id].add_to(h) if h.host_id in written else h for h in hosts]
    return Snapshot(hosts=tuple(hosts), now=now, stale_after=STATS_STALE_AFTER)


class _AppPlanner:
    """Plans one app: the slots it should have, where, and the rollout's next step."""

    def __init__(
        self,
        state: ClusterState,
        app: str,
        now: float | None,
        lost: frozenset[str],
        written: Mapping[str, HostLoad] | None = None,
    ) -> None:
        self.state = state
        self.written = written
        self.app = app
        self.now = now
        self.clock = now if now is not None else 0.0  # without a clock nothing is available
        self.lost = lost
        self.plan = ReplicaPlan()
        self._reservations: dict[int, tuple[ResourceAmounts, list[str]]] = {}
        self.blocked = ""  # why a replacement could not be started, if one could not
        self.draining = {
            host_id: host.value.drain
            for host_id, host in state.hosts.items()
            if host.value.state == "draining" and host.value.drain is not None
        }
        stored = state.apps[app]
        self.stored = stored
        self.record = stored.value
        self.spec = stored.value.spec
        self.target = stored.value.revision
        revision = state.revision_spec(app, self.target)
        self.template = revision.spec if revision is not None else self.spec
        self.resources = ResourceAmounts(
            cpu=self.template.resources.cpu, memory=self.template.resources.memory
        )
        self.ports = fixed_host_ports(self.template)
        self.min_ready = self.spec.update.min_ready
        self.observed = observe(state, app)
        self._others: Snapshot | None = None  # the other apps' view, built when first needed
        existing = dict(state.replica_slots(app))
        self.mods = {slot: v.mod_revision for slot, v in existing.items()}
        self.mode = self.spec.mode
        self.new_hosts: dict[int, str] = {}  # global: new slot -> its host
        self.job: JobRecord | None = None  # job: its record after this round
        self.stop: set[int] = set()  # job: slots whose containers are stopped, kept
        records = {slot: v.value for slot, v in existing.items()}
        if self.mode == "global":
            slots = global_slots(state, self.spec, records)
            self.wanted = slots.keep | set(slots.new)
            self.new_hosts = slots.new
        elif self.mode == "job":
            stored_job = state.jobs.get(app)
            self.job, job_events = job_progress(
                stored_job.value if stored_job else None,
                app,
                self.spec,
                records,
                self.observed,
                self.clock,
            )
            self.plan.events.extend((kind, None, message) for kind, message in job_events)
            self.wanted, _, self.stop, expires = job_slots(
                self.job, self.spec, records, self.observed, self.clock
            )
            if expires is not None:
                self.plan.wake_at = expires
            if stored_job is None or stored_job.value != self.job:
                self.plan.job = (self.job, stored_job.mod_revision if stored_job else 0)
        else:
            self.wanted = set(range(self.spec.replicas))
        # The slots' records as this plan leaves them (what is written is what differs).
        self.slots: dict[int, ReplicaRecord] = {
            slot: v.value for slot, v in existing.items() if slot in self.wanted
        }
        self.original = dict(self.slots)
        # A slot's reservations and fixed ports are copies of its revision's: repair any
        # copy that disagrees, so the scheduler counts what the containers really ask.
        for slot, replica in sorted(self.slots.items()):
            resources, ports = self._reservation(replica.revision)
            if (resources, ports) != (replica.resources, replica.host_ports):
                self.slots[slot] = replica.model_copy(
                    update={"resources": resources, "host_ports": list(ports)}
                )
        self.plan.delete = [
            (slot, v.mod_revision)
            for slot, v in sorted(existing.items())
            if slot not in self.wanted
        ]

    # ---------------------------------------------------------------- scheduling

    def _snapshot(self, leave_out: frozenset[int] = frozenset()) -> Snapshot:
        if self._others is None:
            self._others = scheduler_snapshot(
                self.state, exclude_app=self.app, now=self.now, written=self.written
            )
        others = self._others
        kept = tuple(
            p for slot, r in sorted(self.slots.items()) if slot not in leave_out for p in _placed(r)
        )
        return Snapshot(
            hosts=others.hosts,
            placed=others.placed + kept,
            now=self.now,
            stale_after=others.stale_after,
        )

    def _schedule(
        self,
        slots: list[int],
        template: AppSpec,
        leave_out: frozenset[int] = frozenset(),
        *,
        replacements: bool = False,
    ) -> dict[int, str]:
        """Hosts for ``slots`` (to run ``template``). A slot left unplaced is pending;
        a replacement left unplaced is not (its slot still runs): it blocks the rollout,
        which says why."""
        if not slots:
            return {}
        snapshot = self._snapshot(leave_out)
        placed: Plan = schedule(snapshot, _requests(self.spec, template, slots))
        for (_, slot), _reasons in placed.unplaced.items():
            why = placed.explain(self.app, slot, len(snapshot.hosts))
            if replacements:
                self.blocked = f"waiting for room to start a replacement: {why}"
            else:
                self.plan.pending[slot] = why
        return {p.slot: p.host for p in placed.placements}

    def _reservation(self, revision: int) -> tuple[ResourceAmounts, list[str]]:
        """What a container of ``revision`` reserves (computed once per revision)."""
        found = self._reservations.get(revision)
        if found is None:
            spec = self._template(revision)
            found = (
                ResourceAmounts(cpu=spec.resources.cpu, memory=spec.resources.memory),
                fixed_host_ports(spec),
            )
            self._reservations[revision] = found
        return found

    def _own(self, slot: int, revision: int, host: str) -> ReplicaRecord:
        """A slot running ``revision`` on ``host``, with what that revision reserves."""
        resources, ports = self._reservation(revision)
        return ReplicaRecord(
            app=self.app,
            slot=slot,
            revision=revision,
            host=host,
            resources=resources,
            host_ports=list(ports),
        )

    def _template(self, revision: int) -> AppSpec:
        found = self.state.revision_spec(self.app, revision)
        return found.spec if found is not None else self.template

    # ---------------------------------------------------------------- steps

    def _place_on(self, slot: int, host: str) -> bool:
        """Place ``slot`` (current revision) on ``host`` if it has room there."""
        snapshot = self._snapshot()
        only = Snapshot(
            hosts=tuple(h for h in snapshot.hosts if h.host_id == host),
            placed=snapshot.placed,
            now=snapshot.now,
            stale_after=snapshot.stale_after,
        )
        placed = schedule(only, [_request(self.spec, self.template, slot)])
        if placed.placements:
            self.slots[slot] = self._own(slot, self.target, host)
            return True
        why = placed.explain(self.app, slot, 1).removeprefix("0/1 hosts fit: ")
        self.plan.pending[slot] = f"host {host}: {why}"
        return False

    def place_missing_and_lost(self) -> None:
        """New slots get the current revision; a slot whose host is lost keeps its
        revision and moves (its replacement, if it had one started, takes over). A
        global app's slots are each for one host, and never move."""
        if self.mode == "global":
            for slot, host in sorted(self.new_hosts.items()):
                self._place_on(slot, host)
            return
        for slot in self.stop:
            if slot in self.slots and not self.slots[slot].stopped:
                self.slots[slot] = self.slots[slot].model_copy(update={"stopped": True})
        moving: list[int] = []
        for slot, replica in sorted(self.slots.items()):
            nxt = replica.next
            if nxt is not None and nxt.host in self.lost:
                replica = replica.model_copy(update={"next": None})
                self.slots[slot] = replica
            if replica.host in self.lost:
                if replica.next is not None:
                    self.slots[slot] = self._promoted(replica)
                else:
                    moving.append(slot)
        missing = sorted(self.wanted - self.slots.keys())
        hosts = self._schedule(missing, self.template)
        for slot in missing:
            if slot in hosts:
                self.slots[slot] = self._own(slot, self.target, hosts[slot])
        by_revision: dict[int, list[int]] = {}
        for slot in moving:
            by_revision.setdefault(self.slots[slot].revision, []).append(slot)
        for revision, slots in sorted(by_revision.items()):
            hosts = self._schedule(slots, self._template(revision), leave_out=frozenset(slots))
            for slot in slots:
                if slot in hosts:
                    self.slots[slot] = self._own(slot, revision, hosts[slot])

    @staticmethod
    def _promoted(replica: ReplicaRecord) -> ReplicaRecord:
        assert replica.next is not None
        nxt = replica.next
        return replica.model_copy(
            update={
                "revision": nxt.revision,
                "host": nxt.host,
                "resources": nxt.resources,
                "host_ports": nxt.host_ports,
                "next": None,
            }
        )

    def promote_and_prune(self) -> int:
        """Replacements that are available take their slot over; those the rollout no
        longer wants (the target changed) are dropped. Returns how many took over."""
        promoted = 0
        for slot, replica in sorted(self.slots.items()):
            nxt = replica.next
            if nxt is None:
                continue
            if nxt.revision not in (self.target, replica.revision) or nxt.host in self.draining:
                # Not wanted any more: the target changed, or its host is being emptied.
                self.slots[slot] = replica.model_copy(update={"next": None})
                continue
            instance = Instance(slot, nxt.revision, nxt.host, next=True)
            if self.observed.available(instance, self.min_ready, self.clock):
                self.slots[slot] = self._promoted(replica)
                promoted += 1
        return promoted

    def drain_moves(self) -> None:
        """Move the replicas of draining hosts elsewhere, make-before-break: each gets a
        replacement of its own revision on another host, which takes the slot over once
        available (``promote_and_prune``). At most ``replicas - min_available`` (at least
        one) move at once per app. Past a forced drain's deadline, what is left is
        stopped and placed again wherever it fits (break-before-make)."""
        if not self.draining:
            return
        for slot, replica in sorted(self.slots.items()):
            if replica.next is not None and replica.next.host in self.draining:
                self.slots[slot] = replica.model_copy(update={"next": None})
        forced = {
            host_id
            for host_id, drain in self.draining.items()
            if drain.force
            and (not drain.deadline_at or self.clock >= (epoch(drain.deadline_at) or 0))
        }
        self._force_off(sorted(s for s, r in self.slots.items() if r.host in forced))
        budget = max(1, self.spec.replicas - self.spec.budget_min_available())
        moving = [
            s for s, r in self.slots.items() if r.host in self.draining and r.next is not None
        ]
        waiting = sorted(
            s for s, r in self.slots.items() if r.host in self.draining and r.next is None
        )
        chosen = waiting[: max(0, budget - len(moving))]
        by_revision: dict[int, list[int]] = {}
        for slot in chosen:
            by_revision.setdefault(self.slots[slot].revision, []).append(slot)
        for revision, slots in sorted(by_revision.items()):
            snapshot = self._snapshot()
            placed = schedule(snapshot, _requests(self.spec, self._template(revision), slots))
            for (_, slot), _reasons in placed.unplaced.items():
                self.plan.blocked[slot] = placed.explain(self.app, slot, len(snapshot.hosts))
            for placement in placed.placements:
                own = self._own(placement.slot, revision, placement.host)
                self.slots[placement.slot] = self.slots[placement.slot].model_copy(
                    update={
                        "next": ReplicaTarget(
                            revision=revision,
                            host=placement.host,
                            resources=own.resources,
                            host_ports=own.host_ports,
                        )
                    }
                )

    def _force_off(self, slots: list[int]) -> None:
        """Stop ``slots`` where they are; a replacement already started takes over, the
        others are placed again where they fit, else they wait (pending) with no
        container at all."""
        by_revision: dict[int, list[int]] = {}
        for slot in slots:
            if self.slots[slot].next is not None:
                self.slots[slot] = self._promoted(self.slots[slot])
                continue
            by_revision.setdefault(self.slots[slot].revision, []).append(slot)
        for revision, group in sorted(by_revision.items()):
            hosts = self._schedule(group, self._template(revision), leave_out=frozenset(group))
            for slot in group:
                if slot in hosts:
                    self.slots[slot] = self._own(slot, revision, hosts[slot])
                    continue
                self.plan.blocked[slot] = self.plan.pending.get(slot, "no host fits it")
                if slot in self.mods:
                    self.plan.delete.append((slot, self.mods[slot]))
                del self.slots[slot]

    def available_count(self) -> int:
        return sum(
            self.observed.available(i, self.min_ready, self.clock)
            for r in self.slots.values()
            for i in instances(r)
        )

    def replace_outdated(self) -> int:
        """One step of the rollout within the surge and availability budgets; returns
        how many replacements it started."""
        replicas = len(self.wanted)
        update = self.spec.update
        # A global app has one replica per host: replaced in place, never surged.
        surge = 0 if self.mode == "global" else update.surge(replicas)
        max_total = replicas + surge
        unavailable = update.unavailable(replicas)
        if self.mode == "global":
            unavailable = max(1, unavailable)  # without a surge, one host at a time at least
        min_available = replicas - unavailable
        total = len(self.slots) + sum(r.next is not None for r in self.slots.values())
        available = self.available_count()

        def is_available(r: ReplicaRecord) -> bool:
            own = Instance(r.slot, r.revision, r.host, next=False)
            return self.observed.available(own, self.min_ready, self.clock)

        outdated = [r for r in self.slots.values() if r.revision != self.target and r.next is None]
        # Replicas that serve nothing are replaced first: that costs no availability.
        outdated.sort(key=lambda r: (is_available(r), r.slot))
        started = 0
        in_place = [r.slot for r in outdated if not is_available(r)]
        serving = [r for r in outdated if is_available(r)]
        surge_room = max(0, max_total - total)
        surging = [r.slot for r in serving[:surge_room]]
        hosts = self._schedule(surging, self.template, replacements=True)
        for slot in surging:
            if slot in hosts:
                replica = self.slots[slot]
                self.slots[slot] = replica.model_copy(
                    update={
                        "next": ReplicaTarget(
                            revision=self.target,
                            host=hosts[slot],
                            resources=self.resources,
                            host_ports=self.ports,
                        )
                    }
                )
                started += 1
        for replica in serving:
            if replica.slot in hosts or available - 1 < min_available:
                continue
            in_place.append(replica.slot)
            available -= 1
        return started + self._replace_in_place(in_place)

    def _replace_in_place(self, slots: list[int]) -> int:
        """Stop-then-start ``slots`` at the target revision: on the same host where the
        new template still fits there, else wherever the scheduler finds room."""
        remaining = set(slots)
        by_host: dict[str, list[int]] = {}
        for slot in slots:
            by_host.setdefault(self.slots[slot].host, []).append(slot)
        for host, group in sorted(by_host.items()):
            snapshot = self._snapshot(leave_out=frozenset(remaining))
            only = Snapshot(
                hosts=tuple(h for h in snapshot.hosts if h.host_id == host),
                placed=snapshot.placed,
                now=snapshot.now,
                stale_after=snapshot.stale_after,
            )
            placed = schedule(only, _requests(self.spec, self.template, sorted(group)))
            for placement in placed.placements:
                self.slots[placement.slot] = self._own(placement.slot, self.target, host)
                remaining.discard(placement.slot)
        elsewhere = sorted(remaining)
        if self.mode == "global":
            for slot in elsewhere:  # no room on its own host: it waits, pending
                self.plan.pending[slot] = (
                    f"host {self.slots[slot].host}: no room for revision {self.target}"
                )
            return len(slots) - len(remaining)
        hosts = self._schedule(elsewhere, self.template, leave_out=frozenset(remaining))
        for slot in elsewhere:
            if slot in hosts:
                self.slots[slot] = self._own(slot, self.target, hosts[slot])
        return len(slots) - len(remaining) + len(hosts)

    def wake_at(self) -> float | None:
        """The next time a replica becomes available (nothing else would wake us)."""
        times = [
            at
            for r in self.slots.values()
            for i in instances(r)
            if (at := self.observed.available_at(i, self.min_ready)) is not None and at > self.clock
        ]
        return min(times) if times else None

    def updated_counts(self) -> tuple[int, int]:
        """Slots with a container of the target revision, and with an available one."""
        updated = [
            i for r in self.slots.values() for i in instances(r) if i.revision == self.target
        ]
        ready = {i.slot for i in updated if self.observed.available(i, self.min_ready, self.clock)}
        return len({i.slot for i in updated}), len(ready)

    def crashed(self) -> str | None:
        """Why the target revision is failing, if a container of it crashes."""
        for r in sorted(self.slots.values(), key=lambda r: r.slot):
            for i in instances(r):
                if i.revision == self.target:
                    reason = crash_reason(self.observed.report(i))
                    if reason is not None:
                        return reason
        return None

    def finish(self) -> ReplicaPlan:
        if self.plan.app is not None:
            return self.plan  # a rollback is this round's change; the slots follow it next
        for slot, replica in sorted(self.slots.items()):
            before = self.original.get(slot)
            if before != replica:
                self.plan.put.append((replica, self.mods.get(slot, 0)))
        return self.plan


def plan_replicas(
    state: ClusterState,
    app: str,
    now: float | None = None,
    lost_hosts: frozenset[str] = frozenset(),
    written: Mapping[str, HostLoad] | None = None,
) -> ReplicaPlan:
    """What to write so ``app``'s replicas match its spec in ``state``, and the next step
    of its rollout. ``now`` (epoch seconds) lets fresh live usage and availability count
    (without it no replica is available). Replicas on ``lost_hosts`` (down for longer
    than the controller waits) are placed again elsewhere, keeping their slots; where
    nothing fits they stay, pending. Placements that still fit are never moved.
    ``written``: other apps' containers written but not yet in ``state``, by host."""
    stored = state.apps.get(app)
    if stored is None:
        plan = ReplicaPlan()
        existing = state.replica_slots(app)
        plan.delete = [(slot, v.mod_revision) for slot, v in sorted(existing.items())]
        rollout = state.rollouts.get(app)
        if rollout is not None:
            plan.delete_rollout = rollout.mod_revision
        job = state.jobs.get(app)
        if job is not None:
            plan.delete_job = job.mod_revision
        return plan
    planner = _AppPlanner(state, app, now, lost_hosts, written)
    planner.place_missing_and_lost()
    if planner.mode == "job":
        return planner.finish()  # a job's slots run once: no rollout, no moves
    promoted = planner.promote_and_prune()
    if planner.mode != "global":  # a global replica stops with its host, never moves
        planner.drain_moves()
    _step_rollout(planner, promoted)
    return planner.finish()


def _step_rollout(planner: _AppPlanner, promoted: int) -> None:
    """Advance (or fail, or roll back) the app's rollout and keep its record."""
    plan, state, app = planner.plan, planner.state, planner.app
    stored_rollout = state.rollouts.get(app)
    old = stored_rollout.value if stored_rollout is not None else None
    mod = stored_rollout.mod_revision if stored_rollout is not None else 0
    now_text = iso_at(planner.clock)
    target = planner.target
    if old is None or old.revision != target:
        # A new target: an apply, an undo, or the first look at a new app. What a
        # rollback would return to is the last revision that completed (none, for an
        # app whose first rollout never did).
        if old is None:
            start_from = target
        elif old.state == "complete":
            start_from = old.revision
        elif old.from_revision != old.revision or old.rollback_of:
            start_from = old.from_revision  # (a rollback's target completed before)
        else:
            start_from = target
        rollout = RolloutRecord(
            app=app,
            revision=target,
            from_revision=start_from,
            state="progressing",
            started_at=now_text,
            progress_at=now_text,
            updated_at=now_text,
            paused=old.paused if old is not None else False,
            message=f"rolling out revision {target}",
        )
    else:
        rollout = old

    update = planner.spec.update
    wake = planner.wake_at()  # replacements (a rollout's or a drain's) becoming available
    for drain in planner.draining.values():
        deadline = epoch(drain.deadline_at) if drain.force and drain.deadline_at else None
        if deadline is not None and deadline > planner.clock:
            wake = deadline if wake is None else min(wake, deadline)
    if rollout.state == "progressing" and not rollout.paused:
        failure = planner.crashed()
        _, ready = planner.updated_counts()
        if promoted or ready > rollout.ready:
            # Progress seen now counts before the deadline is judged (the control plane
            # may have been away while it happened).
            rollout = rollout.model_copy(
                update={"progress_at": now_text, "updated_at": now_text, "ready": ready}
            )
        deadline = epoch(rollout.progress_at)
        if (
            failure is None
            and deadline is not None
            and planner.clock - deadline > update.progress_deadline
        ):
            failure = (
                f"no progress for {update.progress_deadline:g}s "
                f"(progress_deadline): revision {target} did not become available"
            )
        if failure is not None:
            _fail(planner, rollout, mod, failure)
            return
        started = planner.replace_outdated()
        updated, ready = planner.updated_counts()
        done = (
            updated == len(planner.slots) == len(planner.wanted)
            and all(r.next is None for r in planner.slots.values())
            and ready >= len(planner.wanted)
        )
        if done:
            rollout = rollout.model_copy(
                update={
                    "ready": ready,
                    "state": "complete",
                    "message": f"revision {target} is available on all "
                    f"{len(planner.wanted)} replica(s)",
                    "progress_at": now_text,
                    "updated_at": now_text,
                }
            )
            plan.events.append(("rollout-complete", None, rollout.message))
        else:
            if started:
                rollout = rollout.model_copy(
                    update={"progress_at": now_text, "updated_at": now_text, "ready": ready}
                )
            if planner.blocked and rollout.message != planner.blocked:
                rollout = rollout.model_copy(
                    update={"message": planner.blocked, "updated_at": now_text}
                )
            deadline_at = (epoch(rollout.progress_at) or planner.clock) + update.progress_deadline
            wake = min(wake, deadline_at + 0.1) if wake is not None else deadline_at + 0.1
    plan.wake_at = wake
    if rollout != old:
        plan.rollout = (rollout, mod)


def _fail(planner: _AppPlanner, rollout: RolloutRecord, mod: int, reason: str) -> None:
    """Mark the rollout failed; with auto_rollback, point the app back at the revision
    the rollout started from (written with the same guard as everything else)."""
    plan, target = planner.plan, planner.target
    now_text = iso_at(planner.clock)
    back = rollout.from_revision
    back_spec = planner.state.revision_spec(planner.app, back)
    plan.events.append(("rollout-failed", None, f"revision {target} failed: {reason}"))
    if planner.spec.update.auto_rollback and back != target and back_spec is not None:
        record = planner.record
        plan.app = record.model_copy(
            update={
                "spec": template_of(record.spec, back_spec.spec),
                "revision": back,
                "generation": record.generation + 1,
                "updated_at": now_text,
            }
        )
        message = f"revision {target} failed: {reason}; rolling back to revision {back}"
        plan.rollout = (
            RolloutRecord(
                app=planner.app,
                revision=back,
                from_revision=back,
                state="progressing",
                started_at=now_text,
                progress_at=now_text,
                updated_at=now_text,
                message=message,
                paused=rollout.paused,
                rollback_of=target,
                failure=f"revision {target} failed: {reason}",
            ),
            mod,
        )
        plan.events.append(("rollback", None, message))
        return
    failed = rollout.model_copy(
        update={
            "state": "failed",
            "message": f"revision {target} failed: {reason}",
            "failure": f"revision {target} failed: {reason}",
            "updated_at": now_text,
        }
    )
    plan.rollout = (failed, mod)


def drained_hosts(state: ClusterState) -> list[str]:
    """Draining hosts that are empty: no replica wants a running container there, and
    the agent reports none left that could run (a stopping one may still be serving its
    shutdown delay). Global apps' replicas stay and do not count, unless the drain
    includes them; a job's finished containers (kept for their logs) do not count."""
    gone = ("exited", "dead", "refused", "held", "failed")

    def mode(app: str) -> str:
        found = state.apps.get(app)
        return found.value.spec.mode if found else "replicated"

    done = []
    for host_id, host in sorted(state.hosts.items()):
        drain = host.value.drain
        if host.value.state != "draining" or drain is None:
            continue
        status = state.status.get(host_id)
        reports = status.value.containers if status else []
        running = {(c.app, c.slot) for c in reports if c.state not in gone}

        def counts(app: str, slot: int, running: set[tuple[str, int]], everything: bool) -> bool:
            kind = mode(app)
            if kind == "global" and not everything:
                return False
            return kind != "job" or (app, slot) in running

        wanted = [(r.app, r.slot) for r, _ in state.containers_on(host_id)]
        if any(counts(a, s, running, drain.include_global) for a, s in [*wanted, *running]):
            continue
        done.append(host_id)
    return done


def lost_hosts(
    state: ClusterState, down_since: dict[str, float], now: float, reschedule_after: float
) -> frozenset[str]:
    """Hosts whose replicas go elsewhere: down for ``reschedule_after``, or gone."""
    gone = set(state.hosts_with_replicas()) - state.hosts.keys()
    waited = {h for h, since in down_since.items() if now - since >= reschedule_after}
    return frozenset(gone | waited)


def settled_inputs(
    state: ClusterState, app: str, lost: frozenset[str], draining: bool
) -> object | None:
    """What a plan of ``app`` depends on, cheap to compare, besides the time: its own
    records and reports, the hosts and which of them are lost. None when the plan may
    change with other apps (a job) or with a drain, or when the state does not say what
    changed: such an app is planned every round.

    This is what keeps a round's cost with what changed: at 100,000 replicas the agents'
    reports change every second, yet an app whose plan had nothing to do is planned
    again only when its own containers change, or when its plan's ``wake_at`` comes
    (a replica of a rollout becoming available, a progress deadline)."""
    changes = state.changes
    stored = state.apps.get(app)
    if changes is None or stored is None or stored.value.spec.mode == "job":
        return None
    if draining:
        return None  # a forced drain's deadline is a matter of time
    return (changes.apps.get(app, 0), changes.reports.get(app, 0), changes.hosts, lost)


_COMMITS_IN_FLIGHT = 4  # apps' plans being written while the next is planned
_SLOW_ROUND = 1.0  # a round that planned for this long says so in the log


def _slot_list(slots: list[int], most: int = 10) -> str:
    """``12 replicas (slots 0, 1, 2, ... and 9 more)``."""
    shown = ", ".join(str(s) for s in slots[:most])
    more = f" and {len(slots) - most} more" if len(slots) > most else ""
    return f"{len(slots)} replicas (slots {shown}{more})"


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
        min_interval: float = 0.05,
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
        self._wake_at: float | None = None  # a replica becomes available, a deadline passes
        self._min_interval = min_interval
        # app -> what its last plan was made from and when it wanted to look again, for
        # apps that plan had nothing to do for: such an app is not planned again until
        # one of those inputs changes or that time comes.
        self._settled: dict[str, tuple[object, float | None]] = {}
        self._planning_seconds = 0.0  # the current round's, for the pause after it

    async def run(self) -> None:
        subscription = self._informer.subscribe()
        await self._informer.wait_synced()
        while True:
            # Wake on a change, when a down host's wait is over, or after a while anyway.
            timeout = self._resync
            if self._down_since:
                due = min(self._down_since.values()) + self._reschedule_after - time.time()
                timeout = max(0.1, min(timeout, due)) if due > 0 else self._resync
            if self._wake_at is not None:
                timeout = max(0.05, min(timeout, self._wake_at - time.time()))
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
            # that comes as the wait ends, and a stopping control plane then hung here.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await subscription.wait()
            # Coalesce a burst of changes (hundreds of agents reporting) into one round:
            # each round plans every app, so one per change would cost O(changes x apps).
            self._planning_seconds = 0.0
            await self.reconcile_all()
            # A round that held the loop long (planning: its waits on etcd and on the
            # watch do not count) leaves it twice as long to the agents' reports and
            # heartbeats; at 100,000 replicas a round planning 50 apps took seconds.
            spent = self._planning_seconds
            await asyncio.sleep(max(self._min_interval, 2 * spent))

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
        apps = set(state.apps) | set(state.apps_with_replicas()) | set(state.rollouts)
        apps |= set(state.jobs)
        pending: dict[str, dict[int, str]] = {}
        wake_at: float | None = None
        draining = any(h.value.state == "draining" for h in state.hosts.values())
        # What this round wrote, by host: the next app is planned counting it without
        # waiting for the watch to show it (at 50 apps that wait was most of a round).
        written: dict[str, HostLoad] = {}
        last_write = 0
        planned = 0
        commits: set[asyncio.Task[int]] = set()
        try:
            for app in sorted(apps):
                inputs = settled_inputs(state, app, lost, draining)
                settled = self._settled.get(app)
                if (
                    inputs is not None
                    and settled is not None
                    and settled[0] == inputs
                    and (settled[1] is None or now < settled[1])
                ):
                    # Nothing it is planned from changed, and it had nothing to do; it
                    # still wakes the controller when its plan said to look again.
                    if settled[1] is not None:
                        wake_at = settled[1] if wake_at is None else min(wake_at, settled[1])
                    continue
                planning = time.monotonic()
                planned += 1
                plan = plan_replicas(state, app, time.time(), lost, written)
                planned_in = time.monotonic() - planning
                self._planning_seconds += planned_in
                if self._metrics is not None:
                    self._metrics.scheduling.observe(planned_in)
                if plan.pending:
                    pending[app] = plan.pending
                if plan.wake_at is not None:
                    wake_at = plan.wake_at if wake_at is None else min(wake_at, plan.wake_at)
                if inputs is not None and plan.is_empty() and not (plan.pending or plan.blocked):
                    self._settled[app] = (inputs, plan.wake_at)
                else:
                    self._settled.pop(app, None)
                if plan.is_empty():
                    continue
                stored = state.apps.get(app)
                # Counted as placed from now on (if the commit fails, the round over-counts,
                # which only errs on the side of room), and committed while the next app is
                # planned: planning is the server's cpu, committing is etcd's round trips.
                for replica, _ in plan.put:
                    for host in {replica.host, *([replica.next.host] if replica.next else [])}:
                        written.setdefault(host, HostLoad()).add(replica, host)
                commits.add(
                    asyncio.create_task(
                        self._commit(app, plan, stored.mod_revision if stored else 0)
                    )
                )
                if len(commits) >= _COMMITS_IN_FLIGHT:
                    done, commits = await asyncio.wait(commits, return_when=asyncio.FIRST_COMPLETED)
                    last_write = max([last_write, *(t.result() for t in done)])
            if commits:
                last_write = max([last_write, *await asyncio.gather(*commits)])
                commits = set()
        finally:
            for task in commits:
                task.cancel()
        for gone in self._settled.keys() - apps:
            del self._settled[gone]
        if self._planning_seconds >= _SLOW_ROUND:
            log.info(
                "planned %d of %d apps in %.1fs (the rest had nothing to do)",
                planned,
                len(apps),
                self._planning_seconds,
            )
        if last_write:
            # The next round must see this one's writes, or it would plan them again.
            try:
                await asyncio.wait_for(self._informer.wait_for_revision(last_write), 30)
            except TimeoutError:
                log.warning("the watch is behind this round's writes; planning again anyway")
        await self._report_unschedulable(pending)
        self.pending = pending
        self._wake_at = wake_at
        await self._finish_drains(self._informer.state())
        await self._step_upgrade(self._informer.state())

    async def _commit(self, app: str, plan: ReplicaPlan, app_mod_revision: int) -> int:
        """Write one app's plan; the revision it was written at, 0 if it was not."""
        try:
            revision = await self._store.commit_replicas(
                app,
                app_mod_revision=app_mod_revision,
                put=plan.put,
                delete=plan.delete,
                rollout=plan.rollout,
                delete_rollout=plan.delete_rollout,
                app_record=plan.app,
                job=plan.job,
                delete_job=plan.delete_job,
            )
        except Conflict:
            # The state moved on under us; the watch will wake us with the new one.
            log.debug("app %s: replica plan lost a race; re-planning on the next change", app)
            return 0
        except Unavailable as error:
            log.warning("app %s: cannot commit replicas: %s", app, error)
            if self._metrics is not None:
                self._metrics.etcd_errors.inc()
            return 0
        await self._record_rollout_events(app, plan)
        log.info("app %s: %d replica(s) written, %d removed", app, len(plan.put), len(plan.delete))
        return revision

    async def _step_upgrade(self, state: ClusterState) -> None:
        step = step_upgrade(state, now_iso())
        if step.is_empty():
            return
        try:
            await self._store.commit_upgrade(
                step.upgrade,
                state.upgrade.mod_revision if state.upgrade else 0,
                [(h, state.hosts[h.host_id].mod_revision) for h in step.hosts.values()],
                step.maintenance,
                state.maintenance.mod_revision if state.maintenance else 0,
            )
        except Conflict:
            return  # the watch brings the new state; the next round decides again
        except Unavailable as error:
            log.warning("upgrade walk: cannot write its step: %s", error)
            return
        events = [
            pb.Event(time=now_iso(), source="controlplane", host=h, kind=k, message=m)
            for k, h, m in step.events
        ]
        for event in events:
            log.info("upgrade walk: host %s: %s: %s", event.host, event.kind, event.message)
        try:
            await self._events.append("controlplane", events)
        except Unavailable as error:
            log.warning("could not record %d event(s): %s", len(events), error)

    async def _finish_drains(self, state: ClusterState) -> None:
        for host_id in drained_hosts(state):
            stored = state.hosts[host_id]
            record = stored.value.model_copy(update={"state": "drained"})
            try:
                await self._store.write_host(record, expected_mod_revision=stored.mod_revision)
            except Conflict:
                continue  # changed meanwhile (uncordoned?): the next round decides again
            except Unavailable as error:
                log.warning("host %s: cannot mark it drained: %s", host_id, error)
                continue
            log.info("host %s is drained", host_id)
            event = pb.Event(
                time=now_iso(),
                source="controlplane",
                host=host_id,
                kind="host-drained",
                message="no fleet container is left on it",
            )
            try:
                await self._events.append("controlplane", [event])
            except Unavailable as error:
                log.warning("could not record an event: %s", error)

    async def _record_rollout_events(self, app: str, plan: ReplicaPlan) -> None:
        events = [
            pb.Event(
                time=now_iso(),
                source="controlplane",
                app=app,
                slot=slot or 0,
                kind=kind,
                message=message,
            )
            for kind, slot, message in plan.events
        ]
        for event in events:
            log.info("app %s: %s: %s", app, event.kind, event.message)
        try:
            await self._events.append("controlplane", events)
        except Unavailable as error:
            log.warning("could not record %d event(s): %s", len(events), error)

    async def _report_unschedulable(self, pending: dict[str, dict[int, str]]) -> None:
        """An event when replicas become unschedulable or their reason changes: one per
        app and reason, naming the slots (as Nomad sums placement failures per task
        group). One per replica made 100,000 events when a pool went away."""
        grouped: dict[tuple[str, str], list[int]] = {}
        for app, slots in sorted(pending.items()):
            for slot, reason in sorted(slots.items()):
                if self.pending.get(app, {}).get(slot) != reason:
                    grouped.setdefault((app, reason), []).append(slot)
        new = [
            pb.Event(
                time=now_iso(),
                source="controlplane",
                app=app,
                slot=slots[0],
                kind="unschedulable",
                message=reason if len(slots) == 1 else f"{_slot_list(slots)}: {reason}",
            )
            for (app, reason), slots in grouped.items()
        ]
        try:
            await self._events.append("controlplane", new)
        except Unavailable as error:
            log.warning("could not record %d event(s): %s", len(new), error)
