"""One app's slots as a round of the replica controller plans them. Pure.

``SlotPlanner`` holds the app's replica records as this round leaves them and the
placement primitives every step uses (schedule some slots, start a replacement, promote
one that is available). The steps themselves live by concern: placing new and lost
slots here, moving off draining hosts in ``drains``, the rollout in ``rollout``; the
order they run in is ``planner.plan_replicas``. What a round writes is a ``ReplicaPlan``.

Slots are numbered 0..replicas-1, so scaling down removes the highest slots and scaling
up fills the gaps, and a replica keeps its slot for life.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fleet.controlplane.availability import observe
from fleet.controlplane.modes import global_slots, job_progress, job_slots
from fleet.controlplane.view import (
    HostLoad,
    HostViews,
    fixed_host_ports,
    placed_replicas,
    requests,
    scheduler_snapshot,
)
from fleet.scheduler import Snapshot, schedule
from fleet.spec import AppSpec
from fleet.store import ClusterState
from fleet.store.records import (
    AppRecord,
    JobRecord,
    ReplicaRecord,
    ReplicaTarget,
    ResourceAmounts,
    RevisionRecord,
    RolloutRecord,
    shared,
)

__all__ = ["ReplicaPlan", "SlotPlanner", "promoted"]


@dataclass
class ReplicaPlan:
    """What one round writes for one app, in one compare-and-swap transaction."""

    put: list[tuple[ReplicaRecord, int]] = field(default_factory=list)  # record, mod revision
    delete: list[tuple[int, int]] = field(default_factory=list)  # slot, mod revision
    pending: dict[int, str] = field(default_factory=dict)  # slot -> why it is unplaced
    drain_blocked: dict[int, str] = field(default_factory=dict)  # slot -> why it cannot move
    # The rollout record to write (with the mod revision it was read at), or None.
    rollout: tuple[RolloutRecord, int] | None = None
    delete_rollout: int | None = None  # the mod revision of a rollout record to delete
    job: tuple[JobRecord, int] | None = None  # a job's record to write, with its mod revision
    delete_job: int | None = None
    app: AppRecord | None = None  # an automatic rollback rewrites the app (same guard)
    # A revision whose rollout ended (its outcome kept for `rollout history`), its mod revision.
    revision: tuple[RevisionRecord, int] | None = None
    events: list[tuple[str, int | None, str]] = field(default_factory=list)  # kind, slot, text
    wake_at: float | None = None  # when a replica becomes available or a deadline passes

    def is_empty(self) -> bool:
        return (
            not self.put
            and not self.delete
            and self.rollout is None
            and self.delete_rollout is None
            and self.app is None
            and self.revision is None
            and self.job is None
            and self.delete_job is None
        )


def promoted(replica: ReplicaRecord) -> ReplicaRecord:
    """``replica`` with its replacement taking the slot over."""
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


class SlotPlanner:
    """One app's slots: which it wants, where they are, and what this round changes."""

    def __init__(
        self,
        state: ClusterState,
        app: str,
        now: float,
        lost: frozenset[str],
        written: Mapping[str, HostLoad] | None = None,
        views: HostViews | None = None,
    ) -> None:
        self.state = state
        self.written = written
        self.views = views
        self.app = app
        self.now = now
        self.lost = lost
        self.plan = ReplicaPlan()
        self._reservations: dict[int, tuple[ResourceAmounts, list[str]]] = {}
        self.rollout_waiting = ""  # why a rollout's replacement could not start, if so
        self.draining = state.draining()
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
                self.now,
            )
            self.plan.events.extend((kind, None, message) for kind, message in job_events)
            self.wanted, _, self.stop, expires = job_slots(
                self.job, self.spec, records, self.observed, self.now
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
        for slot, replica in list(self.slots.items()):
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

    # ---------------------------------------------------------------- placement

    def snapshot(
        self, leave_out: frozenset[int] = frozenset(), host: str | None = None
    ) -> Snapshot:
        """The scheduler's view with this app's slots as planned so far (but
        ``leave_out``); only ``host`` in it, if given."""
        if self._others is None:
            self._others = scheduler_snapshot(
                self.state,
                exclude_app=self.app,
                now=self.now,
                written=self.written,
                views=self.views,
            )
        others = self._others
        kept = tuple(
            p
            for slot, r in sorted(self.slots.items())
            if slot not in leave_out
            for p in placed_replicas(r)
        )
        hosts = (
            others.hosts if host is None else tuple(h for h in others.hosts if h.host_id == host)
        )
        return Snapshot(
            hosts=hosts, placed=others.placed + kept, now=self.now, stale_after=others.stale_after
        )

    def schedule_slots(
        self,
        slots: list[int],
        template: AppSpec,
        leave_out: frozenset[int] = frozenset(),
        host: str | None = None,
    ) -> tuple[dict[int, str], dict[int, str]]:
        """Hosts for ``slots`` to run ``template`` (only ``host``, if given), and why the
        slots left unplaced are (the callers decide what that means for them)."""
        if not slots:
            return {}, {}
        snapshot = self.snapshot(leave_out, host)
        placed = schedule(snapshot, requests(self.spec, template, slots))
        why = {
            slot: placed.explain(self.app, slot, len(snapshot.hosts))
            for (_, slot), _reasons in placed.unplaced.items()
        }
        return {p.slot: p.host for p in placed.placements}, why

    def place_each_revision(
        self,
        slots: list[int],
        *,
        leave_out_moving: bool,
        placed: Callable[[int, int, str], None],
        unplaced: Callable[[int, str], None],
    ) -> None:
        """Schedule slots that keep their own revisions, one revision at a time, each
        group seeing the places the one before it took: ``placed(slot, revision,
        host)`` or ``unplaced(slot, why)`` is called for every slot before the next
        group is scheduled. ``leave_out_moving``: the slots' current places do not count
        against them (they are leaving those hosts)."""
        by_revision: dict[int, list[int]] = {}
        for slot in slots:
            by_revision.setdefault(self.slots[slot].revision, []).append(slot)
        for revision, group in sorted(by_revision.items()):
            leave_out = frozenset(group) if leave_out_moving else frozenset()
            hosts, why = self.schedule_slots(group, self.template_for(revision), leave_out)
            for slot in group:
                if slot in hosts:
                    placed(slot, revision, hosts[slot])
                else:
                    unplaced(slot, why.get(slot, "no host fits it"))

    def _reservation(self, revision: int) -> tuple[ResourceAmounts, list[str]]:
        """What a container of ``revision`` reserves (computed once per revision)."""
        found = self._reservations.get(revision)
        if found is None:
            spec = self.template_for(revision)
            # Shared: the slots' own (decoded, shared) reservations are then the same
            # object, and checking every slot's copy (``__init__``) costs no comparison.
            found = (
                shared(ResourceAmounts(cpu=spec.resources.cpu, memory=spec.resources.memory)),
                fixed_host_ports(spec),
            )
            self._reservations[revision] = found
        return found

    def own(self, slot: int, revision: int, host: str) -> ReplicaRecord:
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

    def start_replacement(self, slot: int, revision: int, host: str) -> None:
        """Give ``slot`` a replacement of ``revision`` on ``host`` (make-before-break)."""
        resources, ports = self._reservation(revision)
        target = ReplicaTarget(revision=revision, host=host, resources=resources, host_ports=ports)
        self.slots[slot] = self.slots[slot].model_copy(update={"next": target})

    def template_for(self, revision: int) -> AppSpec:
        found = self.state.revision_spec(self.app, revision)
        return found.spec if found is not None else self.template

    def available(self, replica: ReplicaRecord) -> bool:
        """Whether the slot's own container is available now."""
        return self.available_on(replica.slot, replica.revision, replica.host)

    def available_on(self, slot: int, revision: int, host: str) -> bool:
        """Whether the container of ``slot`` at ``revision`` on ``host`` is available
        now. (The walks of every slot ask this, not ``Observed.available``: a
        ``SlotContainer`` made for each question was a large part of a plan.)"""
        at = self.observed.ready_at(slot, revision, host)
        return at is not None and at + self.min_ready <= self.now

    # ---------------------------------------------------------------- steps

    def place_missing_and_lost(self) -> None:
        """New slots get the current revision; a slot whose host is lost keeps its
        revision and moves (its replacement, if it had one started, takes over). A
        global app's slots are each for one host, and never move."""
        if self.mode == "global":
            for slot, host in sorted(self.new_hosts.items()):
                hosts, why = self.schedule_slots([slot], self.template, host=host)
                if slot in hosts:
                    self.slots[slot] = self.own(slot, self.target, host)
                else:
                    reason = why[slot].removeprefix("0/1 hosts fit: ")
                    self.plan.pending[slot] = f"host {host}: {reason}"
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
                    self.slots[slot] = promoted(replica)
                else:
                    moving.append(slot)
        missing = sorted(self.wanted - self.slots.keys())
        hosts, why = self.schedule_slots(missing, self.template)
        self.plan.pending.update(why)
        for slot, host in hosts.items():
            self.slots[slot] = self.own(slot, self.target, host)

        def place(slot: int, revision: int, host: str) -> None:
            self.slots[slot] = self.own(slot, revision, host)

        self.place_each_revision(
            moving, leave_out_moving=True, placed=place, unplaced=self.plan.pending.__setitem__
        )

    def promote_and_prune(self) -> int:
        """Replacements that are available take their slot over; those no longer
        wanted (the target changed, or their host is being emptied) are dropped.
        Returns how many took over."""
        count = 0
        for slot, replica in sorted(self.slots.items()):
            nxt = replica.next
            if nxt is None:
                continue
            if nxt.revision not in (self.target, replica.revision) or nxt.host in self.draining:
                self.slots[slot] = replica.model_copy(update={"next": None})
                continue
            if self.available_on(slot, nxt.revision, nxt.host):
                self.slots[slot] = promoted(replica)
                count += 1
        return count

    def wake_at(self, *, replacements_only: bool = False) -> float | None:
        """The next time a container of these slots becomes available (of their
        replacements only: the containers a round promotes)."""
        ready_at, now, min_ready = self.observed.ready_at, self.now, self.min_ready
        earliest: float | None = None
        for r in self.slots.values():
            places = [] if replacements_only else [(r.revision, r.host)]
            if r.next is not None:
                places.append((r.next.revision, r.next.host))
            for revision, host in places:
                since = ready_at(r.slot, revision, host)
                if since is not None and (at := since + min_ready) > now:
                    earliest = at if earliest is None else min(earliest, at)
        return earliest

    def finish(self) -> ReplicaPlan:
        if self.plan.app is not None:
            return self.plan  # a rollback is this round's change; the slots follow it next
        for slot, replica in sorted(self.slots.items()):
            before = self.original.get(slot)
            if before is not replica and before != replica:
                self.plan.put.append((replica, self.mods.get(slot, 0)))
        return self.plan
