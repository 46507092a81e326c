"""The replica controller: keeps every app's replica records in line with its spec.

Level-triggered: on every wake-up it compares the whole desired state (apps) with the
replica records and writes the difference, one compare-and-swap transaction per app
(``planner.plan_replicas`` is the pure part). After the apps, a round marks drained
hosts (``drains.drained_hosts``) and takes the upgrade walk's next step
(``upgrades.step_upgrade``). It tracks hosts going down, and moves their replicas once
they stay down for ``reschedule_after``.

What it needs of the store, the informer and the event log is the three protocols
below (as Nomad's planner sees ``State`` and ``Planner``), so its tests hand it small
fakes of exactly that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Protocol

from fleet._time import now_iso
from fleet.controlplane.drains import drained_hosts
from fleet.controlplane.metrics import Metrics
from fleet.controlplane.planner import (
    DEFAULT_HOLD_MOVES_WHEN_DOWN,
    lost_hosts,
    moves_held,
    moves_held_message,
    plan_replicas,
    settled_inputs,
)
from fleet.controlplane.slots import ReplicaPlan
from fleet.controlplane.upgrades import step_upgrade
from fleet.controlplane.view import HostLoad, HostViews
from fleet.errors import Conflict, Unavailable
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState
from fleet.store.records import (
    AppRecord,
    HostRecord,
    JobRecord,
    MaintenanceRecord,
    ReplicaRecord,
    RevisionRecord,
    RolloutRecord,
    UpgradeRecord,
)

__all__ = ["ControllerStore", "EventSink", "ReplicaController", "StateSource"]

log = logging.getLogger(__name__)


class ControllerStore(Protocol):
    """The writes a round makes (``fleet.store.Store`` implements them)."""

    async def commit_replicas(
        self,
        app: str,
        *,
        app_mod_revision: int,
        put: Sequence[tuple[ReplicaRecord, int]],
        delete: Sequence[tuple[int, int]],
        rollout: tuple[RolloutRecord, int] | None = None,
        delete_rollout: int | None = None,
        app_record: AppRecord | None = None,
        job: tuple[JobRecord, int] | None = None,
        delete_job: int | None = None,
        revision: tuple[RevisionRecord, int] | None = None,
    ) -> int: ...

    async def commit_upgrade(
        self,
        upgrade: UpgradeRecord | None,
        upgrade_mod_revision: int,
        hosts: Sequence[tuple[HostRecord, int]],
        maintenance: MaintenanceRecord | None,
        maintenance_mod_revision: int,
    ) -> int: ...

    async def write_host(self, host: HostRecord, *, expected_mod_revision: int) -> int: ...


class Wakeup(Protocol):
    async def wait(self) -> None: ...

    def notify(self) -> None: ...


class StateSource(Protocol):
    """Where the controller reads the state (``fleet.store.Informer``)."""

    def subscribe(self) -> Wakeup: ...

    async def wait_synced(self) -> None: ...

    def state(self) -> ClusterState: ...

    async def wait_for_revision(self, revision: int) -> None: ...


class EventSink(Protocol):
    """Where the controller's events go (``fleet.store.EventLog``)."""

    async def append(self, source: str, events: Sequence[pb.Event]) -> None: ...


_COMMITS_IN_FLIGHT = 4  # apps' plans being written while the next is planned
# A new leader's grace goes on while hosts keep coming back (``ReplicaController``).
GRACE_WHILE_RETURNING = 5.0  # seconds after the last host that came back in it
GRACE_MAX_FACTOR = 4.0  # times ``start_grace`` from the first look, at most
_SLOW_ROUND = 1.0  # a round that planned for this long says so in the log
_MAX_PAUSE = 1.0  # seconds between two rounds, at most (``run``)
_TRACK_EVERY = 0.2  # seconds: hosts going and coming looked at, at most this often in a pause
# How long a round waits for its events to be stored: an event log that hangs (an etcd
# member stopped, a lease grant retried member by member) must not hold every app's
# plan, nor a host loss's moves, for as long.
_EVENT_WRITE_DEADLINE = 3.0


def _event(*, kind: str, message: str, host: str = "", app: str = "", slot: int = 0) -> pb.Event:
    return pb.Event(
        time=now_iso(),
        source="controlplane",
        host=host,
        app=app,
        slot=slot,
        kind=kind,
        message=message,
    )


def _slot_list(slots: list[int], most: int = 10) -> str:
    """``12 replicas (slots 0, 1, 2, ... and 9 more)``."""
    shown = ", ".join(str(s) for s in slots[:most])
    more = f" and {len(slots) - most} more" if len(slots) > most else ""
    return f"{len(slots)} replicas (slots {shown}{more})"


class ReplicaController:
    """Runs ``plan_replicas`` for every app whenever the informer sees a change, and
    moves the replicas of hosts that stay down for ``reschedule_after`` seconds.

    For ``start_grace`` seconds after its first look, a host found down (at that look,
    or when the previous leader's lease, which held its liveness key, expires a moment
    later) is neither announced nor timed: its agent may have lost only the previous
    leader and be on its way back (the agents' reconnect backoff is capped at some
    seconds). It is timed from the grace's end: a restart or a leader change must not
    move the replicas of hosts still reconnecting (#24 item 6); a host that is really
    gone is announced and moved that much later. While hosts counted down in the grace
    keep coming back, it lasts until none has for ``GRACE_WHILE_RETURNING`` seconds
    (at most ``GRACE_MAX_FACTOR`` times ``start_grace``): a thousand hosts reconnecting
    to a restarted server came back over 20 s, and a fixed grace announced the last 289
    of them down (nothing moved; the false host-down events were what was wrong)."""

    def __init__(
        self,
        store: ControllerStore,
        informer: StateSource,
        events: EventSink,
        *,
        resync: float = 30.0,
        reschedule_after: float = 15.0,
        start_grace: float = 0.0,
        hold_moves_when_down: float | None = DEFAULT_HOLD_MOVES_WHEN_DOWN,
        metrics: Metrics | None = None,
        min_interval: float = 0.05,
        views: HostViews | None = None,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._informer = informer
        self._events = events
        self._resync = resync
        self._reschedule_after = reschedule_after
        self._start_grace = start_grace
        self._hold_moves_when_down = hold_moves_when_down
        self.moves_held = False  # (``_hold_moves``)
        # When each registered host was first seen without its liveness key. In memory: a
        # new leader waits the full time again, which errs on the side of not moving.
        self._down_since: dict[str, float] = {}
        self._announced: set[str] = set()  # hosts with a host-down event and no host-up yet
        self._grace_until: float | None = None  # set at the first look at the state
        self._grace_cap = math.inf  # the latest the grace may last (from the first look)
        self.pending: dict[str, dict[int, str]] = {}  # app -> slot -> reason (for the API)
        self._wake_at: float | None = None  # a replica becomes available, a deadline passes
        self._min_interval = min_interval
        # app -> what its last plan was made from and when it wanted to look again, for
        # apps that plan had nothing to do for: such an app is not planned again until
        # one of those inputs changes or that time comes.
        self._settled: dict[str, tuple[object, float | None]] = {}
        self._planning_seconds = 0.0  # the current round's, for the pause after it
        self.views = views or HostViews()  # the hosts' views, kept between rounds

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
            # heartbeats (at 100,000 replicas a round planning 50 apps took seconds), up
            # to _MAX_PAUSE: a round yields after every app's plan anyway, and a longer
            # pause put off the moves of a host loss by as long.
            spent = self._planning_seconds
            await self._pause(subscription, min(_MAX_PAUSE, max(self._min_interval, 2 * spent)))

    async def _pause(self, subscription: Wakeup, seconds: float) -> None:
        """Wait ``seconds``, noting hosts that go down or come back meanwhile (a host's
        wait to be moved starts when it is seen down, not at the next round)."""
        end = time.monotonic() + seconds
        changed = False
        looked_at: int | None = None  # the hosts' part of the state last looked at
        while (left := end - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(left):
                    await subscription.wait()
            except TimeoutError:
                break
            changed = True
            state = self._informer.state()
            hosts = state.changes.hosts if state.changes is not None else None
            if hosts is not None and hosts == looked_at:
                continue  # no host went or came (most changes are reports)
            looked_at = hosts
            # Outside the pause's timeout: a host counted as announced must not have its
            # event's write cut off by it (``_record`` has a deadline of its own).
            await self._track_liveness(state, time.time())
            # At most every _TRACK_EVERY: in a storm of reconnects every registration
            # changes the hosts, and each look walks every host.
            await asyncio.sleep(max(0.0, min(_TRACK_EVERY, end - time.monotonic())))
        if changed:
            subscription.notify()  # what changed meanwhile: the next round looks at it

    async def _track_liveness(self, state: ClusterState, now: float) -> None:
        """Note hosts going down and coming back, with an event for each."""
        changes = []
        if self._grace_until is None:
            self._grace_until = now + self._start_grace
            self._grace_cap = now + GRACE_MAX_FACTOR * self._start_grace
        back_in_grace = [
            h for h in self._down_since.keys() & state.alive.keys() if h not in self._announced
        ]
        if back_in_grace and now <= self._grace_until:
            # Hosts are still coming back: those yet to come get longer, and every host
            # counted down in the grace is timed from its new end.
            grace = min(self._grace_cap, max(self._grace_until, now + GRACE_WHILE_RETURNING))
            for host_id, since in self._down_since.items():
                if since == self._grace_until:
                    self._down_since[host_id] = grace
            self._grace_until = grace
        in_grace = now <= self._grace_until
        for host_id in sorted(state.hosts.keys() - state.alive.keys()):
            if host_id in self._down_since:
                if not in_grace and host_id not in self._announced:
                    # Down since the grace: it did not come back within it.
                    changes.append(("host-down", host_id, "the agent is not connected"))
                    self._announced.add(host_id)
            elif in_grace:
                self._down_since[host_id] = self._grace_until  # (the class's docstring)
            else:
                self._down_since[host_id] = now
                changes.append(("host-down", host_id, "the agent is not connected"))
                self._announced.add(host_id)
        for host_id in sorted(self._down_since.keys() & state.alive.keys()):
            del self._down_since[host_id]
            if host_id in self._announced:
                self._announced.discard(host_id)
                changes.append(("host-up", host_id, "the agent is connected again"))
        for host_id in sorted(self._down_since.keys() - state.hosts.keys()):
            del self._down_since[host_id]
        await self._record([_event(kind=k, host=h, message=m) for k, h, m in changes])

    async def _hold_moves(self, state: ClusterState, now: float) -> bool:
        """Whether this round leaves the replicas of down hosts where they are
        (``planner.moves_held``; counting the hosts announced down, not those a new
        leader's grace still waits for), saying so in an event and the log when that
        starts and when it ends.

        Hosts still down when a hold ends are timed from its end: the pool comes back a
        host at a time, and the hold ends once enough have, with the rest a moment from
        back (ten hosts woken at once: the last five's replicas moved as the sixth came
        back)."""
        registered = len(state.hosts)
        down = len(self._announced & state.hosts.keys())
        held = moves_held(down, registered, self._hold_moves_when_down)
        if held == self.moves_held:
            return held
        self.moves_held = held
        if self._metrics is not None:
            self._metrics.moves_held.set(int(held))
        threshold = self._hold_moves_when_down or 0.0
        if held:
            kind = "moves-held"
            message = moves_held_message(down, registered, threshold)
            log.warning("%s", message)
        else:
            for host_id, since in self._down_since.items():
                self._down_since[host_id] = max(since, now)
            kind = "moves-resumed"
            message = (
                f"{down} of {registered} hosts are down: the replicas of a host still down "
                "--reschedule-after from now move again"
            )
            log.info("%s", message)
        await self._record([_event(kind=kind, message=message)])
        return held

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
        held = await self._hold_moves(state, now)
        lost = lost_hosts(state, self._down_since, now, self._reschedule_after, hold=held)
        apps = set(state.apps) | set(state.apps_with_replicas()) | set(state.rollouts)
        apps |= set(state.jobs)
        pending: dict[str, dict[int, str]] = {}
        wake_at: float | None = None
        draining = bool(state.draining())  # (as the plans see drains; a walk of every host was 1%)
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
                plan = plan_replicas(state, app, time.time(), lost, written, self.views)
                planned_in = time.monotonic() - planning
                self._planning_seconds += planned_in
                if self._metrics is not None:
                    self._metrics.scheduling.observe(planned_in)
                if plan.pending:
                    pending[app] = plan.pending
                if plan.wake_at is not None:
                    wake_at = plan.wake_at if wake_at is None else min(wake_at, plan.wake_at)
                if (
                    inputs is not None
                    and plan.is_empty()
                    and not (plan.pending or plan.drain_blocked)
                ):
                    self._settled[app] = (inputs, plan.wake_at)
                else:
                    self._settled.pop(app, None)
                # One app's plan at a time, then the loop's other work: reads, heartbeats
                # and the watch wait behind a round only for the plan of one app, not of
                # every app (a round of 50 apps at 100,000 replicas held it for seconds).
                await asyncio.sleep(0)
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
                revision=plan.revision,
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
        step = step_upgrade(state, time.time())
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
        for kind, host, message in step.events:
            log.info("upgrade walk: host %s: %s: %s", host, kind, message)
        await self._record([_event(kind=k, host=h, message=m) for k, h, m in step.events])

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
            message = "no fleet container is left on it"
            await self._record([_event(kind="host-drained", host=host_id, message=message)])

    async def _record_rollout_events(self, app: str, plan: ReplicaPlan) -> None:
        for kind, _, message in plan.events:
            log.info("app %s: %s: %s", app, kind, message)
        await self._record(
            [_event(kind=k, app=app, slot=s or 0, message=m) for k, s, m in plan.events]
        )

    async def _report_unschedulable(self, pending: dict[str, dict[int, str]]) -> None:
        """An event when replicas become unschedulable or their reason changes: one per
        app and reason, naming the slots (as Nomad sums placement failures per task
        group). One per replica made 100,000 events when a pool went away."""
        grouped: dict[tuple[str, str], list[int]] = {}
        for app, slots in sorted(pending.items()):
            for slot, reason in sorted(slots.items()):
                if self.pending.get(app, {}).get(slot) != reason:
                    grouped.setdefault((app, reason), []).append(slot)
        await self._record(
            [
                _event(
                    kind="unschedulable",
                    app=app,
                    slot=slots[0],
                    message=reason if len(slots) == 1 else f"{_slot_list(slots)}: {reason}",
                )
                for (app, reason), slots in grouped.items()
            ]
        )

    async def _record(self, events: list[pb.Event]) -> None:
        """Append the controller's events; an event log that is down costs a warning,
        never a round."""
        if not events:
            return
        try:
            async with asyncio.timeout(_EVENT_WRITE_DEADLINE):
                await self._events.append("controlplane", events)
        except Unavailable as error:
            log.warning("could not record %d event(s): %s", len(events), error)
        except TimeoutError:
            kinds = ", ".join(sorted({event.kind for event in events}))
            log.warning(
                "could not record %d event(s) (%s): the event log took over %.0f s",
                len(events),
                kinds,
                _EVENT_WRITE_DEADLINE,
            )
