"""Rollouts: how a new revision replaces the old one, gated on availability. Pure.

The rollout step (``step_rollout``), run on every wake-up of the replica controller,
moves each app towards its current revision under two bounds (Kubernetes' Deployment
rules; the numbers come from the app's ``update`` strategy, ``fleet.spec``):

- never more than ``replicas + max_surge`` containers: start-first replacements are
  started as the slot's ``next`` on a host the scheduler picks, and take the slot over
  (the old container then stops gracefully) only once they are available;
- never fewer than ``replicas - max_unavailable`` available: a replica is replaced in
  place (stop, then start) only while the budget allows, or when it is not available
  anyway.

The rollout's own record (``rollouts/<app>``) holds what must survive a restart of the
control plane: the target, the revision it started from (the one an automatic rollback
returns to), its state and when it last made progress. A rollout fails when a replica of
the new revision is in trouble (``availability.crash_reason``), or when it makes no
progress for ``progress_deadline``; with ``auto_rollback`` the app is pointed back at
the revision it started from, and that rollback runs under the same gates.

Elsewhere: availability itself is ``availability``; the counts ``rollout status`` shows
are ``appstatus``; which revision ``rollout undo`` returns to and which revisions are
kept is ``revisions``; the CLI's exit codes are ``fleet.cli.rollouts``.
"""

from __future__ import annotations

from fleet._time import epoch, iso_at
from fleet.controlplane.availability import crash_reason
from fleet.controlplane.drains import drain_wake_at
from fleet.controlplane.slots import SlotPlanner
from fleet.spec import template_of
from fleet.store.records import ReplicaRecord, RolloutRecord

__all__ = ["rollback_target", "step_rollout"]


def rollback_target(old: RolloutRecord | None, target: int) -> int:
    """What a rollout to ``target`` would roll back to, given the rollout before it: the
    last revision that completed (``target`` itself, for an app whose first rollout
    never did)."""
    if old is None:
        return target
    if old.state == "complete":
        return old.revision
    if old.from_revision != old.revision or old.rollback_of:
        return old.from_revision  # (a rollback's target completed before)
    return target


def step_rollout(planner: SlotPlanner, promoted: int) -> None:
    """Advance (or fail, or roll back) the app's rollout and keep its record.
    ``promoted``: how many replacements took their slots over this round."""
    plan, state, app = planner.plan, planner.state, planner.app
    stored_rollout = state.rollouts.get(app)
    old = stored_rollout.value if stored_rollout is not None else None
    mod = stored_rollout.mod_revision if stored_rollout is not None else 0
    now_text = iso_at(planner.now)
    target = planner.target
    if old is None or old.revision != target:
        # A new target: an apply, an undo, or the first look at a new app.
        rollout = RolloutRecord(
            app=app,
            revision=target,
            from_revision=rollback_target(old, target),
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
    # Replacements (a rollout's or a drain's) becoming available, a forced drain's end;
    # and, while the rollout counts its progress, any container becoming available. (A
    # finished rollout counts nothing: waking for every container of it that turns
    # available re-planned every app in a storm of reconnecting hosts.)
    counting = rollout.state == "progressing" and not rollout.paused
    wake = _earliest(planner.wake_at(replacements_only=not counting), drain_wake_at(planner))
    if counting:
        failure = _failing(planner)
        updated, ready = _updated_counts(planner)
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
            and planner.now - deadline > update.progress_deadline
        ):
            failure = (
                f"no progress for {update.progress_deadline:g}s "
                f"(progress_deadline): revision {target} did not become available"
            )
        if failure is not None:
            _fail(planner, rollout, mod, failure)
            return
        started = _replace_outdated(planner)
        if started:  # (nothing started: the slots are as counted above)
            updated, ready = _updated_counts(planner)
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
            _keep_outcome(planner, target, "complete", "")
        else:
            if started:
                rollout = rollout.model_copy(
                    update={"progress_at": now_text, "updated_at": now_text, "ready": ready}
                )
            waiting = planner.rollout_waiting
            if waiting and rollout.message != waiting:
                rollout = rollout.model_copy(update={"message": waiting, "updated_at": now_text})
            deadline_at = (epoch(rollout.progress_at) or planner.now) + update.progress_deadline
            wake = _earliest(wake, deadline_at + 0.1)
    plan.wake_at = wake
    if rollout != old:
        plan.rollout = (rollout, mod)


def _earliest(*times: float | None) -> float | None:
    found = [t for t in times if t is not None]
    return min(found) if found else None


def _replace_outdated(planner: SlotPlanner) -> int:
    """One step of the rollout within the surge and availability budgets; returns how
    many replacements it started."""
    replicas = len(planner.wanted)
    update = planner.spec.update
    # A global app has one replica per host: replaced in place, never surged.
    surge = 0 if planner.mode == "global" else update.surge(replicas)
    max_total = replicas + surge
    unavailable = update.unavailable(replicas)
    if planner.mode == "global":
        unavailable = max(1, unavailable)  # without a surge, one host at a time at least
    min_available = replicas - unavailable
    total = len(planner.slots) + sum(r.next is not None for r in planner.slots.values())
    available = sum(
        planner.available(r)
        + (r.next is not None and planner.available_on(r.slot, r.next.revision, r.next.host))
        for r in planner.slots.values()
    )
    outdated = [
        r for r in planner.slots.values() if r.revision != planner.target and r.next is None
    ]
    # Replicas that serve nothing are replaced first: that costs no availability.
    outdated.sort(key=lambda r: (planner.available(r), r.slot))
    in_place = [r.slot for r in outdated if not planner.available(r)]
    serving: list[ReplicaRecord] = [r for r in outdated if planner.available(r)]
    surge_room = max(0, max_total - total)
    surging = [r.slot for r in serving[:surge_room]]
    hosts, why = planner.schedule_slots(surging, planner.template)
    for slot in surging:
        if slot in why:  # its slot still runs: the rollout waits, and says why
            planner.rollout_waiting = f"waiting for room to start a replacement: {why[slot]}"
    for slot, host in hosts.items():
        planner.start_replacement(slot, planner.target, host)
    for replica in serving:
        if replica.slot in hosts or available - 1 < min_available:
            continue
        in_place.append(replica.slot)
        available -= 1
    return len(hosts) + _replace_in_place(planner, in_place)


def _replace_in_place(planner: SlotPlanner, slots: list[int]) -> int:
    """Stop-then-start ``slots`` at the target revision: on the same host where the new
    template still fits there, else wherever the scheduler finds room."""
    remaining = set(slots)
    by_host: dict[str, list[int]] = {}
    for slot in slots:
        by_host.setdefault(planner.slots[slot].host, []).append(slot)
    for host, group in sorted(by_host.items()):
        hosts, _ = planner.schedule_slots(
            sorted(group), planner.template, frozenset(remaining), host=host
        )
        for slot in hosts:
            planner.slots[slot] = planner.own(slot, planner.target, host)
            remaining.discard(slot)
    elsewhere = sorted(remaining)
    if planner.mode == "global":
        for slot in elsewhere:  # no room on its own host: it waits, pending
            planner.plan.pending[slot] = (
                f"host {planner.slots[slot].host}: no room for revision {planner.target}"
            )
        return len(slots) - len(remaining)
    hosts, why = planner.schedule_slots(elsewhere, planner.template, frozenset(remaining))
    planner.plan.pending.update(why)
    for slot, host in hosts.items():
        planner.slots[slot] = planner.own(slot, planner.target, host)
    return len(slots) - len(remaining) + len(hosts)


def _updated_counts(planner: SlotPlanner) -> tuple[int, int]:
    """Slots with a container of the target revision, and with an available one."""
    target = planner.target
    updated = ready = 0
    for r in planner.slots.values():
        nxt = r.next
        own = r.revision == target
        new = nxt is not None and nxt.revision == target
        if not (own or new):
            continue
        updated += 1
        if (own and planner.available_on(r.slot, target, r.host)) or (
            new and nxt is not None and planner.available_on(r.slot, target, nxt.host)
        ):
            ready += 1
    return updated, ready


def _failing(planner: SlotPlanner) -> str | None:
    """Why the target revision is failing, if a container of it is in trouble (the
    lowest such slot's)."""
    target, reports = planner.target, planner.observed.reports
    first: tuple[int, str] | None = None
    for r in planner.slots.values():
        if first is not None and r.slot > first[0]:
            continue
        hosts = [r.host] if r.revision == target else []
        if r.next is not None and r.next.revision == target:
            hosts.append(r.next.host)
        for host in hosts:
            reason = crash_reason(reports.get((r.slot, target, host)))
            if reason is not None:
                first = (r.slot, reason)
                break
    return None if first is None else first[1]


def _fail(planner: SlotPlanner, rollout: RolloutRecord, mod: int, reason: str) -> None:
    """Mark the rollout failed; with auto_rollback, point the app back at the revision
    the rollout started from (written with the same guard as everything else)."""
    plan, target = planner.plan, planner.target
    now_text = iso_at(planner.now)
    back = rollout.from_revision
    back_spec = planner.state.revision_spec(planner.app, back)
    failure = f"revision {target} failed: {reason}"
    plan.events.append(("rollout-failed", None, failure))
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
        message = f"{failure}; rolling back to revision {back}"
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
                failure=failure,
            ),
            mod,
        )
        plan.events.append(("rollback", None, message))
        _keep_outcome(planner, target, "rolled back", f"{failure}; rolled back to revision {back}")
        return
    failed = rollout.model_copy(
        update={"state": "failed", "message": failure, "failure": failure, "updated_at": now_text}
    )
    plan.rollout = (failed, mod)
    _keep_outcome(planner, target, "failed", failure)


def _keep_outcome(planner: SlotPlanner, revision: int, outcome: str, reason: str) -> None:
    """Keep how ``revision``'s rollout ended in its record, for ``rollout history``
    (written in the round's transaction, guarded on the record as read)."""
    stored = planner.state.revisions.get((planner.app, revision))
    if stored is None or (stored.value.outcome, stored.value.outcome_reason) == (outcome, reason):
        return
    record = stored.value.model_copy(update={"outcome": outcome, "outcome_reason": reason})
    planner.plan.revision = (record, stored.mod_revision)
