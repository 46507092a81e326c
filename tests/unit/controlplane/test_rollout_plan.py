"""Tests of rolling updates in the replica controller's pure planner, ``plan_replicas``,
and of the rollout helpers in ``fleet.controlplane.rollout`` (availability counts and
endpoints).

Each scenario is a state built by hand: hosts, the app and its revision records, the
replica records (with their ``next`` replacement, if any), what the agents report of
their containers, and the app's rollout record."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.controlplane.appstatus import RolloutCounts, endpoints, rollout_counts
from fleet.controlplane.availability import observe
from fleet.controlplane.planner import plan_replicas
from fleet.controlplane.revisions import revisions_in_use
from fleet.controlplane.slots import ReplicaPlan
from fleet.spec import AppSpec
from fleet.store import ClusterState, Versioned
from fleet.store.records import (
    PortBinding,
    ReplicaRecord,
    ResourceAmounts,
    RolloutRecord,
    RolloutState,
    SlotContainer,
)
from tests.unit.controlplane.builders import (
    LONG_AGO,
    NOW,
    Gi,
    Slot,
    add_app,
    add_revision,
    after,
    app_spec,
    cluster,
    commit,
    iso,
    put_replica,
    report,
    set_rollout,
    wanted,
)

SURGE_1 = "{max_surge: 1, max_unavailable: 0}"


def at(slot: int, revision: int, host: str) -> SlotContainer:
    """A slot's own container, as the availability checks look it up."""
    return SlotContainer(slot, revision, host, ResourceAmounts(cpu=0, memory=0), (), False)


def forget(state: ClusterState, host: str, slot: int, revision: int) -> None:
    """``host``'s agent no longer reports that container (it stopped it)."""
    stored = state.status[host]
    kept = [c for c in stored.value.containers if (c.slot, c.revision) != (slot, revision)]
    state.status[host] = Versioned(
        stored.value.model_copy(update={"containers": kept}), stored.mod_revision
    )


def rolling(
    update: str = SURGE_1, *, replicas: int = 4, hosts: int = 2, available: bool = True
) -> ClusterState:
    """``replicas`` slots at revision 1 spread over ``hosts`` hosts (slot s on host
    h<s % hosts + 1>), each reported available; the app is now at revision 2 (a new
    image) and its rollout from 1 to 2 is progressing."""
    state = cluster(*((f"h{i + 1}", 8.0, 16 * Gi) for i in range(hosts)))
    text = f"replicas: {replicas}\nupdate: {update}\n"
    add_revision(state, app_spec(1, text), 1)
    add_app(state, app_spec(2, text), revision=2)
    for slot in range(replicas):
        host = f"h{slot % hosts + 1}"
        put_replica(state, slot, host, 1)
        if available:
            report(state, host, slot, 1)
    set_rollout(state)
    return state


def rollout_of(plan: ReplicaPlan) -> RolloutRecord:
    assert plan.rollout is not None
    record, mod = plan.rollout
    assert mod == 40  # guarded on the record as read
    return record


def kinds(plan: ReplicaPlan) -> list[str]:
    return [kind for kind, _, _ in plan.events]


# ------------------------------------------------------------------ surge and promotion


def test_start_first_surge_starts_one_replacement_and_changes_nothing_else() -> None:
    """With max_surge 1 and max_unavailable 0, a rollout over 4 available replicas starts
    exactly one replacement (the slot's ``next``, at the new revision, on a host the
    scheduler picks): never more than replicas + max_surge containers, and no replica
    stops before its replacement is available."""
    state = rolling()
    before = {r.slot: r for r in state.replicas_of("web")}
    plan = plan_replicas(state, "web", NOW)
    assert (plan.delete, plan.pending, plan.app) == ([], {}, None)
    [(record, mod)] = plan.put
    assert mod == state.replicas[("web", record.slot)].mod_revision
    old = before[record.slot]
    assert record.model_copy(update={"next": None}) == old  # only `next` changes
    assert record.next is not None
    assert record.next.revision == 2
    assert record.next.host in {"h1", "h2"}
    assert record.next.resources == old.resources
    slots = after(state, plan)
    assert len(wanted(slots)) == 5  # replicas + max_surge
    # The rollout moved: its progress time is now.
    rollout = rollout_of(plan)
    assert (rollout.state, rollout.revision, rollout.from_revision) == ("progressing", 2, 1)
    assert rollout.progress_at == iso(NOW)


def test_available_replacement_takes_its_slot_over_and_the_next_surge_starts() -> None:
    """A ``next`` reported healthy for longer than min_ready takes the slot over (the slot
    becomes its revision on its host, with no next); the surge it used is free again, so
    another replacement starts in the same plan, within replicas + max_surge."""
    state = rolling("{max_surge: 1, max_unavailable: 0, min_ready: 10s}")
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="healthy", ready_since=NOW - 11)
    plan = plan_replicas(state, "web", NOW)
    slots = after(state, plan)
    assert (slots[0].revision, slots[0].host, slots[0].next) == (2, "h2", None)
    replacement = state.replicas[("web", 0)].value.next
    assert replacement is not None and slots[0].resources == replacement.resources
    started = [r for r in slots.values() if r.next is not None]
    assert len(started) == 1
    [surged] = started
    assert surged.slot != 0 and surged.revision == 1
    assert surged.next is not None and surged.next.revision == 2
    assert len(wanted(slots)) <= 4 + 1
    rollout = rollout_of(plan)
    assert (rollout.state, rollout.ready, rollout.progress_at) == ("progressing", 1, iso(NOW))


def test_replacement_is_not_promoted_before_min_ready_and_the_plan_wakes_then() -> None:
    """A healthy ``next`` whose ready_since + min_ready is still ahead is not promoted; the
    plan asks to be woken exactly when it becomes available."""
    state = rolling("{max_surge: 1, max_unavailable: 0, min_ready: 30s}")
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="healthy", ready_since=NOW - 10)
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == []  # not promoted, and the surge is in use
    assert plan.rollout is None  # no progress to record
    assert plan.wake_at == pytest.approx(NOW - 10 + 30)


@pytest.mark.parametrize("how", ["starting", "no-report"])
def test_replacement_that_is_not_ready_wakes_the_plan_at_the_progress_deadline(
    how: str,
) -> None:
    """A ``next`` that is not on its way to available (still starting, or not reported
    yet) gives no wake-up of its own: the plan wakes when the progress deadline passes."""
    state = rolling("{max_surge: 1, max_unavailable: 0, progress_deadline: 60s}")
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    if how == "starting":
        report(state, "h2", 0, 2, health="starting", ready_since=None)
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == [] and plan.rollout is None
    assert plan.wake_at == pytest.approx(NOW - 10 + 60 + 0.1)


# ------------------------------------------------------------------ in place


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ("{max_surge: 0, max_unavailable: 1}", 1),
        ("{max_surge: 0, max_unavailable: 2}", 2),
        ("{order: stop-first, max_unavailable: 2}", 2),
        ("{order: stop-first, max_unavailable: 1, max_surge: 3}", 1),  # no surge stop-first
        ("{max_surge: 0, max_unavailable: 50%}", 2),
    ],
)
def test_max_unavailable_replaces_that_many_available_replicas_in_place(
    update: str, expected: int
) -> None:
    """Without a surge, ``max_unavailable`` available replicas are replaced in place
    (stop, then start at the new revision on the same host, no ``next``) and no more."""
    state = rolling(update)
    before = {r.slot: r for r in state.replicas_of("web")}
    plan = plan_replicas(state, "web", NOW)
    assert len(plan.put) == expected
    for record, mod in plan.put:
        assert (record.revision, record.host, record.next) == (2, before[record.slot].host, None)
        assert mod == state.replicas[("web", record.slot)].mod_revision
    assert len(wanted(after(state, plan))) == 4
    assert rollout_of(plan).progress_at == iso(NOW)


def test_max_unavailable_counts_replicas_already_being_replaced() -> None:
    """A replica replaced in place in an earlier round (not yet reported at the new
    revision) uses the budget: with max_unavailable 1 nothing more is replaced."""
    state = rolling("{max_surge: 0, max_unavailable: 1}")
    put_replica(state, 0, "h1", 2)  # replaced in place; its container is still starting
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == []
    report(state, "h1", 0, 2, health="healthy")
    plan = plan_replicas(state, "web", NOW)  # available now: the next one goes
    [(record, _)] = plan.put
    assert (record.slot, record.revision, record.host) == (1, 2, "h2")


@pytest.mark.parametrize("how", ["no-report", "exited", "unhealthy", "starting", "warming"])
def test_unavailable_old_replicas_are_replaced_in_place_outside_the_budget(how: str) -> None:
    """A replica of the old revision that is not available is replaced in place right
    away, even with max_unavailable 0 (it costs no availability), and does not use the
    surge: the surge goes to an available replica."""
    state = rolling("{max_surge: 1, max_unavailable: 0, min_ready: 10s}")
    if how == "no-report":
        forget(state, "h1", 2, 1)
    elif how == "exited":
        report(state, "h1", 2, 1, status="exited", ready_since=None)
    elif how == "unhealthy":
        report(state, "h1", 2, 1, health="unhealthy")
    elif how == "starting":
        report(state, "h1", 2, 1, health="starting", ready_since=None)
    else:
        report(state, "h1", 2, 1, health="healthy", ready_since=NOW - 5)
    plan = plan_replicas(state, "web", NOW)
    slots = after(state, plan)
    assert (slots[2].revision, slots[2].host, slots[2].next) == (2, "h1", None)
    surged = [r for r in slots.values() if r.next is not None]
    assert len(surged) == 1 and surged[0].slot != 2
    assert [r.slot for r in slots.values() if r.revision == 2] == [2]
    assert len(wanted(slots)) == 5


# ------------------------------------------------------------------ the two bounds


AVAILABILITY = ["available", "warming", "starting", "exited", "missing", "unhealthy"]


@st.composite
def rollout_setups(draw: st.DrawFn) -> tuple[ClusterState, AppSpec]:
    """Replicas at revision 1 on 1-3 roomy hosts, each with a random availability of its
    container, and random surge/unavailable budgets (not both 0); the app at 2."""
    replicas = draw(st.integers(1, 6))
    hosts = draw(st.integers(1, 3))
    surge = draw(st.integers(0, 2))
    unavailable = draw(st.integers(0 if surge else 1, 2))
    order = "start-first"
    if unavailable and draw(st.booleans()):
        order = "stop-first"
    text = (
        f"replicas: {replicas}\nupdate: {{max_surge: {surge}, max_unavailable: {unavailable}, "
        f"order: {order}, min_ready: 10s}}\n"
    )
    state = cluster(*((f"h{i + 1}", 64.0, 64 * Gi) for i in range(hosts)))
    add_revision(state, app_spec(1, text), 1)
    add_app(state, app_spec(2, text), revision=2)
    for slot in range(replicas):
        host = f"h{draw(st.integers(1, hosts))}"
        put_replica(state, slot, host, 1)
        how = draw(st.sampled_from(AVAILABILITY))
        if how == "available":
            report(state, host, slot, 1)
        elif how == "warming":
            report(state, host, slot, 1, ready_since=NOW - 5)
        elif how == "starting":
            report(state, host, slot, 1, health="starting", ready_since=None)
        elif how == "exited":
            report(state, host, slot, 1, status="exited", ready_since=None)
        elif how == "unhealthy":
            report(state, host, slot, 1, health="unhealthy")
    set_rollout(state)
    stored = state.apps["web"].value.spec
    return state, stored


def available_containers(state: ClusterState, containers: set[Slot], now: float) -> int:
    observed = observe(state, "web")
    min_ready = state.apps["web"].value.spec.update.min_ready
    return sum(
        observed.available(at(slot, rev, host), min_ready, now) for slot, rev, host in containers
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rollout_setups())
def test_one_step_stays_within_surge_and_unavailability(
    setup: tuple[ClusterState, AppSpec],
) -> None:
    """One plan never leaves fewer available containers than min(available before,
    replicas - max_unavailable), nor more containers than max(replicas + max_surge,
    containers before); the budgets as the spec resolves them."""
    state, app = setup
    replicas, update = app.replicas, app.update
    before = wanted({r.slot: r for r in state.replicas_of("web")})
    plan = plan_replicas(state, "web", NOW)
    assert plan.pending == {} and plan.app is None
    now_wanted = wanted(after(state, plan))
    floor = min(available_containers(state, before, NOW), replicas - update.unavailable(replicas))
    assert available_containers(state, now_wanted, NOW) >= floor
    assert len(now_wanted) <= max(replicas + update.surge(replicas), len(before))
    # Every unavailable replica of the old revision was replaced at once.
    observed = observe(state, "web")
    for r in after(state, plan).values():
        if r.revision == 1 and r.next is None:
            own = at(r.slot, 1, r.host)
            assert observed.available(own, update.min_ready, NOW)


def available_slots(state: ClusterState, slots: dict[int, ReplicaRecord], now: float) -> int:
    observed = observe(state, "web")
    min_ready = state.apps["web"].value.spec.update.min_ready
    return sum(
        any(observed.available(i, min_ready, now) for i in r.containers()) for r in slots.values()
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rollout_setups(), st.data())
def test_a_whole_rollout_keeps_both_bounds_and_completes(
    setup: tuple[ClusterState, AppSpec], data: st.DataObject
) -> None:
    """Round after round (agents start what is wanted, each new container taking a random
    while to become healthy, and stop what is no longer wanted), every plan keeps at least
    min(available replicas before, replicas - max_unavailable) replicas available and at
    most max(replicas + max_surge, containers before) containers; the rollout completes
    with every slot at the new revision."""
    state, app = setup
    replicas, update = app.replicas, app.update
    now = NOW
    for _ in range(8 * replicas + 8):
        slots = {r.slot: r for r in state.replicas_of("web")}
        before = wanted(slots)
        plan = plan_replicas(state, "web", now)
        assert plan.pending == {} and plan.app is None, plan.events
        assert not any(kind == "rollout-failed" for kind in kinds(plan))
        slots_after = after(state, plan)
        floor = min(available_slots(state, slots, now), replicas - update.unavailable(replicas))
        assert available_slots(state, slots_after, now) >= floor
        assert len(wanted(slots_after)) <= max(replicas + update.surge(replicas), len(before))
        state = commit(state, plan)
        if plan.rollout is not None and plan.rollout[0].state == "complete":
            assert (
                all((r.revision, r.next) == (2, None) for r in state.replicas_of("web"))
                and len(state.replicas_of("web")) == replicas
            )
            return
        # The agents act, and time passes.
        now += 5.0
        containers = wanted({r.slot: r for r in state.replicas_of("web")})
        for host_id in list(state.status):
            for c in state.status[host_id].value.containers:
                if (c.slot, c.revision, host_id) not in containers:
                    forget(state, host_id, c.slot, c.revision)
        for slot, revision, host_id in sorted(containers):
            stored = state.status.get(host_id)
            seen = {(c.slot, c.revision) for c in stored.value.containers} if stored else set()
            if revision == 2 and (slot, revision) not in seen:
                delay = data.draw(st.sampled_from([0.0, 5.0, 15.0]))
                report(state, host_id, slot, 2, health="healthy", ready_since=now + delay)
            elif revision == 1 and (slot, revision) not in seen:  # moved: starts again
                report(state, host_id, slot, 1, ready_since=now)
    pytest.fail("the rollout did not complete")


# ------------------------------------------------------------------ completion


def test_rollout_completes_when_every_slot_runs_the_new_revision_available() -> None:
    """Every slot at the new revision, available, with no replacement in flight: the
    rollout record becomes complete and a rollout-complete event is recorded."""
    state = rolling()
    for slot in range(4):
        host = f"h{slot % 2 + 1}"
        put_replica(state, slot, host, 2)
        report(state, host, slot, 2)
    plan = plan_replicas(state, "web", NOW)
    assert (plan.put, plan.delete, plan.app) == ([], [], None)
    rollout = rollout_of(plan)
    assert (rollout.state, rollout.revision, rollout.from_revision) == ("complete", 2, 1)
    assert rollout.ready == 4
    assert rollout.progress_at == iso(NOW)
    assert plan.events == [("rollout-complete", None, rollout.message)]
    assert "revision 2" in rollout.message
    assert plan.wake_at is None


def test_rollout_completes_in_the_round_its_last_replacement_takes_over() -> None:
    """The last promotion and the completion are one plan."""
    state = rolling()
    for slot in range(3):
        host = f"h{slot % 2 + 1}"
        put_replica(state, slot, host, 2)
        report(state, host, slot, 2)
    put_replica(state, 3, "h2", 1, next=(2, "h1"))
    report(state, "h1", 3, 2, health="healthy")
    plan = plan_replicas(state, "web", NOW)
    [(record, _)] = plan.put
    assert (record.slot, record.revision, record.host, record.next) == (3, 2, "h1", None)
    assert rollout_of(plan).state == "complete"
    assert kinds(plan) == ["rollout-complete"]


def test_rollout_is_not_complete_while_a_slot_is_not_available() -> None:
    """All slots at the new revision but one not yet available: still progressing."""
    state = rolling()
    for slot in range(4):
        host = f"h{slot % 2 + 1}"
        put_replica(state, slot, host, 2)
        report(
            state,
            host,
            slot,
            2,
            health="starting" if slot == 3 else "",
            ready_since=None if slot == 3 else LONG_AGO,
        )
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == []
    assert "rollout-complete" not in kinds(plan)
    if plan.rollout is not None:
        assert plan.rollout[0].state == "progressing"


# ------------------------------------------------------------------ failure and rollback


def crash(state: ClusterState, host: str, slot: int, revision: int, how: str) -> None:
    """``host`` reports that container failing in one of the ways a rollout fails on."""
    if how == "unhealthy":
        report(state, host, slot, revision, health="unhealthy")
    elif how == "crash-looping":
        report(state, host, slot, revision, restarts=3, ready_since=NOW - 1)
    elif how == "pull-failed":  # the agent could not pull the new image
        message = "image img:v2 not found in the registry"
        report(
            state,
            host,
            slot,
            revision,
            status=how,
            ready_since=None,
            reason="image-not-found",
            message=message,
        )
    else:  # stopped for good, or refused by the agent
        report(state, host, slot, revision, status=how, ready_since=None)


@pytest.mark.parametrize("how", ["unhealthy", "crash-looping", "failed", "refused", "pull-failed"])
def test_crashing_replacement_fails_the_rollout_and_rolls_back(how: str) -> None:
    """A container of the new revision that turns unhealthy, crash-loops, stops for good
    or is refused fails the rollout; with auto_rollback the app is pointed back at the
    revision the rollout started from (its template, a new generation), the rollout
    record becomes the rollback's, and no replica is written this round."""
    state = rolling()
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    crash(state, "h2", 0, 2, how)
    stored = state.apps["web"].value
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == [] and plan.delete == []
    assert plan.app is not None
    assert plan.app.revision == 1
    assert plan.app.spec.image == "img:v1"
    assert plan.app.generation == stored.generation + 1
    revision_1 = state.revision_spec("web", 1)
    assert revision_1 is not None
    assert plan.app.spec.template_hash() == revision_1.template_hash
    assert (plan.app.spec.replicas, plan.app.spec.update) == (4, stored.spec.update)
    rollout = rollout_of(plan)
    assert (rollout.revision, rollout.from_revision, rollout.rollback_of) == (1, 1, 2)
    assert rollout.state == "progressing"
    assert "rolling back to revision 1" in rollout.message
    assert kinds(plan) == ["rollout-failed", "rollback"]
    assert "revision 2 failed" in plan.events[0][2]
    assert rollout.failure == plan.events[0][2]  # the cause, kept through the rollback
    # Revision 2 keeps how it ended, for `rollout history`, in the same transaction.
    assert plan.revision is not None
    assert (plan.revision[0].revision, plan.revision[0].outcome) == (2, "rolled back")
    assert plan.revision[0].outcome_reason == f"{rollout.failure}; rolled back to revision 1"
    if how == "pull-failed":  # said at once, in the words of the agent
        assert rollout.failure == "revision 2 failed: image img:v2 not found in the registry"

    # The next round, on the committed state, drops the failed replacement.
    state = commit(state, plan)
    plan = plan_replicas(state, "web", NOW)
    assert plan.app is None
    slots = after(state, plan)
    assert (slots[0].revision, slots[0].host, slots[0].next) == (1, "h1", None)
    assert all((r.revision, r.next) == (1, None) for r in slots.values())
    # Every replica already runs revision 1, available: the rollback is complete.
    assert rollout_of_committed(plan).state == "complete"
    assert plan.revision is not None and plan.revision[0].outcome == "complete"


def rollout_of_committed(plan: ReplicaPlan) -> RolloutRecord:
    assert plan.rollout is not None
    return plan.rollout[0]


def test_failed_rollback_is_not_rolled_back_again() -> None:
    """A rollback whose own revision crashes just fails: there is nothing to go back to."""
    state = rolling()
    set_rollout(state, 2, 2, rollback_of=3)
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="unhealthy")
    plan = plan_replicas(state, "web", NOW)
    assert plan.app is None
    rollout = rollout_of(plan)
    assert (rollout.state, rollout.revision) == ("failed", 2)
    assert kinds(plan) == ["rollout-failed"]


def test_without_auto_rollback_the_rollout_fails_and_stops() -> None:
    """With auto_rollback false a crash marks the rollout failed, the app is left alone,
    and no further replacement is started (nor in a later round)."""
    state = rolling("{max_surge: 2, max_unavailable: 0, auto_rollback: false}")
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="unhealthy")
    plan = plan_replicas(state, "web", NOW)
    assert plan.app is None
    assert plan.put == []  # the second surge is not started
    rollout = rollout_of(plan)
    assert (rollout.state, rollout.revision, rollout.from_revision) == ("failed", 2, 1)
    assert "unhealthy" in rollout.message
    assert plan.revision is not None
    assert (plan.revision[0].outcome, plan.revision[0].outcome_reason) == (
        "failed",
        rollout.failure,
    )
    assert kinds(plan) == ["rollout-failed"]

    state = commit(state, plan)
    later = NOW + 60
    plan = plan_replicas(state, "web", later)
    assert (plan.put, plan.rollout, plan.app) == ([], None, None)
    # Even once the crashed replacement is gone, nothing new is started.
    forget(state, "h2", 0, 2)
    plan = plan_replicas(state, "web", later)
    assert all(r.next is None or r.slot == 0 for r in after(state, plan).values())
    assert (plan.rollout, plan.app) == (None, None)


def test_crash_looping_replacement_does_not_take_its_slot_over() -> None:
    """A replacement that fails the rollout (here: crash-looping, caught while running
    between restarts, min_ready 0) is not promoted over the healthy old container: with
    auto_rollback false the slot keeps running revision 1."""
    state = rolling("{max_surge: 1, max_unavailable: 0, auto_rollback: false}")
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, restarts=3, ready_since=NOW - 1)
    plan = plan_replicas(state, "web", NOW)
    assert rollout_of(plan).state == "failed"
    slots = after(state, plan)
    assert (slots[0].revision, slots[0].host) == (1, "h1")


def test_old_revision_crashing_during_a_rollout_is_not_a_failure() -> None:
    """Only containers of the new revision can fail the rollout; an unhealthy old one is
    just unavailable (and replaced in place)."""
    state = rolling()
    report(state, "h2", 1, 1, health="unhealthy", restarts=5)
    plan = plan_replicas(state, "web", NOW)
    assert plan.app is None
    assert "rollout-failed" not in kinds(plan)
    assert after(state, plan)[1].revision == 2


@pytest.mark.parametrize("auto_rollback", [True, False])
def test_no_progress_for_the_progress_deadline_fails_the_rollout(auto_rollback: bool) -> None:
    """A rollout whose last progress is older than progress_deadline, with nothing of the
    new revision available, fails (and rolls back when allowed); the reason names
    progress_deadline."""
    flag = "true" if auto_rollback else "false"
    state = rolling(
        f"{{max_surge: 1, max_unavailable: 0, progress_deadline: 60s, auto_rollback: {flag}}}"
    )
    set_rollout(state, progress_at=NOW - 61)
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="starting", ready_since=None)
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == []
    assert kinds(plan)[0] == "rollout-failed"
    assert "progress_deadline" in plan.events[0][2]
    rollout = rollout_of(plan)
    if auto_rollback:
        assert plan.app is not None and plan.app.revision == 1
        assert (rollout.revision, rollout.rollback_of, rollout.state) == (1, 2, "progressing")
        assert "progress_deadline" in rollout.message
    else:
        assert plan.app is None
        assert (rollout.revision, rollout.state) == (2, "failed")
        assert "progress_deadline" in rollout.message


def test_progress_seen_late_still_counts_as_progress() -> None:
    """A replacement that became available before the deadline passed is progress even
    when the controller first sees it after (it was down): the slot is promoted, the
    rollout's progress time is now, and nothing fails."""
    state = rolling("{max_surge: 1, max_unavailable: 0, progress_deadline: 60s}")
    set_rollout(state, progress_at=NOW - 61)
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="healthy", ready_since=NOW - 30)
    plan = plan_replicas(state, "web", NOW)
    assert plan.app is None
    assert "rollout-failed" not in kinds(plan)
    assert after(state, plan)[0].revision == 2
    rollout = rollout_of(plan)
    assert (rollout.state, rollout.progress_at) == ("progressing", iso(NOW))


def test_progress_deadline_not_yet_passed_is_no_failure() -> None:
    """Just inside the deadline the rollout carries on, and wakes when it would pass."""
    state = rolling("{max_surge: 1, max_unavailable: 0, progress_deadline: 60s}")
    set_rollout(state, progress_at=NOW - 59)
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="starting", ready_since=None)
    plan = plan_replicas(state, "web", NOW)
    assert (plan.put, plan.rollout, plan.app, plan.events) == ([], None, None, [])
    assert plan.wake_at == pytest.approx(NOW - 59 + 60 + 0.1)


# ------------------------------------------------------------------ pause, lost hosts


def test_paused_rollout_starts_nothing_and_keeps_its_record() -> None:
    """A paused rollout starts no replacement and replaces nothing in place (not even an
    unavailable replica); its record is not rewritten."""
    state = rolling("{max_surge: 1, max_unavailable: 1}")
    set_rollout(state, paused=True)
    report(state, "h2", 3, 1, status="exited", ready_since=None)
    plan = plan_replicas(state, "web", NOW)
    assert (plan.put, plan.delete, plan.rollout, plan.app, plan.events) == ([], [], None, None, [])


def test_paused_rollout_still_promotes_an_available_replacement() -> None:
    """Pausing stops new steps; a replacement already available still takes its slot."""
    state = rolling()
    set_rollout(state, paused=True)
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2)
    plan = plan_replicas(state, "web", NOW)
    [(record, _)] = plan.put
    assert (record.slot, record.revision, record.host, record.next) == (0, 2, "h2", None)
    assert plan.rollout is None


def test_lost_hosts_promote_or_drop_replacements() -> None:
    """A slot whose own host is lost while its ``next`` runs on a live host is promoted to
    the next at once (available or not); a slot whose next's host is lost loses that next
    (its own container, on a live host, stays)."""
    state = rolling(replicas=2, hosts=3)  # slot 0 on h1, slot 1 on h2
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    put_replica(state, 1, "h2", 1, next=(2, "h1"))
    report(state, "h2", 0, 2, health="starting", ready_since=None)
    state.alive.pop("h1")
    plan = plan_replicas(state, "web", NOW, frozenset({"h1"}))
    slots = after(state, plan)
    assert (slots[0].revision, slots[0].host, slots[0].next) == (2, "h2", None)
    assert (slots[1].revision, slots[1].host) == (1, "h2")
    # The surge freed by the lost next may start a new one, but never on the lost host.
    assert slots[1].next is None or slots[1].next.host != "h1"
    assert all(host != "h1" for _, _, host in wanted(slots))


def test_lost_host_with_both_containers_moves_the_slot() -> None:
    """Own and next both on the lost host: the next is dropped and the slot moves,
    keeping its revision."""
    state = rolling("{max_surge: 1, max_unavailable: 0}", replicas=2, hosts=3)
    set_rollout(state, paused=True)
    put_replica(state, 0, "h1", 1, next=(2, "h1"))
    state.alive.pop("h1")
    plan = plan_replicas(state, "web", NOW, frozenset({"h1"}))
    slots = after(state, plan)
    assert slots[0].revision == 1 and slots[0].host in {"h2", "h3"} and slots[0].next is None


def test_surge_that_fits_nowhere_does_not_make_a_running_slot_pending() -> None:
    """With max_per_host 1 on two hosts a replacement has nowhere to start: the rollout
    waits, but the slot, which runs, is not reported pending (unplaced)."""
    state = cluster(("h1", 8.0, 16 * Gi), ("h2", 8.0, 16 * Gi))
    text = f"replicas: 2\nmax_per_host: 1\nupdate: {SURGE_1}\n"
    add_revision(state, app_spec(1, text), 1)
    add_app(state, app_spec(2, text), revision=2)
    for slot, host in ((0, "h1"), (1, "h2")):
        put_replica(state, slot, host, 1)
        report(state, host, slot, 1)
    set_rollout(state)
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == []
    assert plan.pending == {}


def test_deleted_app_deletes_its_replicas_and_rollout_record() -> None:
    """An app that is gone loses its replica records and its rollout record."""
    state = rolling()
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    del state.apps["web"]
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == [(slot, 50 + slot) for slot in range(4)]
    assert plan.delete_rollout == 40
    assert (plan.put, plan.rollout, plan.app) == ([], None, None)


# ------------------------------------------------------------------ a new target


@pytest.mark.parametrize(
    ("old", "start_from"),
    [
        ((2, 1, "progressing", 0), 1),
        ((2, 1, "failed", 0), 1),
        ((2, 1, "complete", 0), 2),
        ((1, 1, "progressing", 2), 1),  # a rollback of 2 running
    ],
    ids=["progressing", "failed", "complete", "rollback"],
)
def test_new_target_starts_a_new_rollout_from_the_last_complete_revision(
    old: tuple[int, int, RolloutState, int], start_from: int
) -> None:
    """A new revision while another rollout is on: the new record targets it and starts
    from the last revision that completed (the old record's from_revision, or its
    revision if it had completed); replacements of the abandoned revision are dropped."""
    state = rolling()
    add_revision(state, app_spec(3, "replicas: 4\nupdate: " + SURGE_1 + "\n"), 3)
    add_app(state, app_spec(3, "replicas: 4\nupdate: " + SURGE_1 + "\n"), revision=3)
    revision, from_revision, rollout_state, rollback_of = old
    set_rollout(
        state, revision, from_revision, rollout_state=rollout_state, rollback_of=rollback_of
    )
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="starting", ready_since=None)
    put_replica(state, 1, "h2", 2)
    report(state, "h2", 1, 2)
    plan = plan_replicas(state, "web", NOW)
    rollout = rollout_of(plan)
    assert (rollout.revision, rollout.from_revision, rollout.state) == (
        3,
        start_from,
        "progressing",
    )
    assert rollout.rollback_of == 0
    assert (rollout.started_at, rollout.progress_at) == (iso(NOW), iso(NOW))
    assert plan.app is None
    slots = after(state, plan)
    assert all(r.next is None or r.next.revision == 3 for r in slots.values())
    assert len(wanted(slots)) <= 5


def test_first_look_at_an_app_starts_from_its_own_revision() -> None:
    """Without a rollout record the record made starts from the current revision (there
    is nothing to roll back to)."""
    state = rolling()
    del state.rollouts["web"]
    plan = plan_replicas(state, "web", NOW)
    record, mod = plan.rollout or (None, -1)
    assert record is not None and mod == 0
    assert (record.revision, record.from_revision, record.state) == (2, 2, "progressing")


# ------------------------------------------------------------------ idempotence


def _surge() -> ClusterState:
    return rolling()


def _promotion() -> ClusterState:
    state = rolling()
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2)
    return state


def _in_place() -> ClusterState:
    state = rolling("{max_surge: 0, max_unavailable: 1}")
    report(state, "h2", 3, 1, status="exited", ready_since=None)
    return state


def _completion() -> ClusterState:
    state = rolling()
    for slot in range(4):
        put_replica(state, slot, f"h{slot % 2 + 1}", 2)
        report(state, f"h{slot % 2 + 1}", slot, 2)
    return state


def _first_look() -> ClusterState:
    state = rolling()
    del state.rollouts["web"]
    return state


def _failure() -> ClusterState:
    state = rolling("{max_surge: 1, max_unavailable: 0, auto_rollback: false}")
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="unhealthy")
    return state


def _new_target() -> ClusterState:
    state = rolling()
    add_app(state, app_spec(3, "replicas: 4\nupdate: " + SURGE_1 + "\n"), revision=3)
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    return state


@pytest.mark.parametrize(
    "scenario",
    [_surge, _promotion, _in_place, _completion, _first_look, _failure, _new_target],
    ids=lambda f: f.__name__.strip("_"),
)
def test_planning_again_after_a_commit_changes_nothing(
    scenario: Callable[[], ClusterState],
) -> None:
    """Once a plan's replicas and rollout record are written, planning again at the same
    moment writes nothing."""
    state = scenario()
    plan = plan_replicas(state, "web", NOW)
    assert not plan.is_empty()
    state = commit(state, plan)
    again = plan_replicas(state, "web", NOW)
    assert (again.put, again.delete, again.rollout, again.app) == ([], [], None, None)
    assert again.events == []


def test_rollback_settles_after_two_commits() -> None:
    """A rollback writes the app; the replicas follow in the next plan; then nothing."""
    state = rolling()
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h2", 0, 2, health="unhealthy")
    plan = plan_replicas(state, "web", NOW)
    assert plan.app is not None
    state = commit(state, plan)
    plan = plan_replicas(state, "web", NOW)
    assert plan.app is None and plan.put
    state = commit(state, plan)
    again = plan_replicas(state, "web", NOW)
    assert (again.put, again.rollout, again.app) == ([], None, None)


# ------------------------------------------------------------------ counts and endpoints


def counting_state() -> ClusterState:
    """App at revision 2 (min_ready 10s) with four slots in every condition:
    0: revision 1 on h1 (available) replaced by revision 2 on h2 (available);
    1: revision 2 on h1, running but not ready for min_ready yet;
    2: revision 1 on h2, exited;
    3: revision 1 on h2, not reported.
    Plus a leftover container of slot 7 that no replica wants."""
    state = rolling("{max_surge: 1, max_unavailable: 0, min_ready: 10s}", available=False)
    for host, address in (("h1", "10.0.0.1"), ("h2", "10.0.0.2")):
        stored = state.hosts[host]
        state.hosts[host] = Versioned(
            stored.value.model_copy(update={"address": address}), stored.mod_revision
        )
    http = [PortBinding(host_port=30000, container_port=80, protocol="tcp")]
    put_replica(state, 0, "h1", 1, next=(2, "h2"))
    report(state, "h1", 0, 1, ports=http)
    report(
        state,
        "h2",
        0,
        2,
        health="healthy",
        ports=[PortBinding(host_port=30001, container_port=80, protocol="tcp")],
    )
    put_replica(state, 1, "h1", 2)
    report(state, "h1", 1, 2, ready_since=NOW - 5, ports=http)
    put_replica(state, 2, "h2", 1)
    report(state, "h2", 2, 1, status="exited", ready_since=None)
    put_replica(state, 3, "h2", 1)
    report(state, "h1", 7, 1, ports=http)
    return state


def test_rollout_counts() -> None:
    """running and available count wanted containers (replacements included, leftovers
    not); updated and updated_available count slots with a container of the current
    revision; total is every container wanted."""
    state = counting_state()
    assert rollout_counts(state, "web", NOW) == RolloutCounts(
        running=3, available=2, updated=2, updated_available=1, total=5
    )
    # Five seconds later slot 1 has been ready for min_ready too.
    assert rollout_counts(state, "web", NOW + 5) == RolloutCounts(
        running=3, available=3, updated=2, updated_available=2, total=5
    )
    assert rollout_counts(state, "nope", NOW) == RolloutCounts(0, 0, 0, 0, 0)


def test_endpoints_are_the_available_containers_with_their_hosts_address() -> None:
    """One endpoint per published port of every available wanted container, with the
    address of its host; a container on an unregistered host is left out."""
    state = counting_state()
    found = [
        (e.app, e.slot, e.host, e.address, e.host_port, e.container_port, e.protocol, e.revision)
        for e in endpoints(state, "web", NOW)
    ]
    assert found == [
        ("web", 0, "h1", "10.0.0.1", 30000, 80, "tcp", 1),
        ("web", 0, "h2", "10.0.0.2", 30001, 80, "tcp", 2),
    ]
    later = [(e.slot, e.host, e.revision) for e in endpoints(state, "web", NOW + 5)]
    assert later == [(0, "h1", 1), (0, "h2", 2), (1, "h1", 2)]
    del state.hosts["h2"]
    assert [(e.slot, e.host) for e in endpoints(state, "web", NOW)] == [(0, "h1")]
    assert endpoints(state, "nope", NOW) == []


def test_revisions_in_use() -> None:
    """Revisions run by a replica (own or next) and the rollout's two ends are in use."""
    state = counting_state()
    add_revision(state, app_spec(3), 3)
    assert revisions_in_use(state, "web") == {1, 2}
    set_rollout(state, 2, 3)
    assert revisions_in_use(state, "web") == {1, 2, 3}
    assert revisions_in_use(state, "nope") == set()


def test_available_at() -> None:
    """available_at is ready_since + min_ready for a running, healthy (or unchecked)
    container, else None."""
    state = counting_state()
    observed = observe(state, "web")
    assert observed.available_at(at(1, 2, "h1"), 10.0) == pytest.approx(NOW + 5)
    assert observed.available_at(at(2, 1, "h2"), 10.0) is None
    assert observed.available_at(at(3, 1, "h2"), 10.0) is None
    report(state, "h2", 2, 1, health="starting")
    assert observe(state, "web").available_at(at(2, 1, "h2"), 10.0) is None
    report(state, "h2", 2, 1, health="healthy", ready_since=None)
    assert observe(state, "web").available_at(at(2, 1, "h2"), 10.0) is None


def test_a_global_app_rolls_host_by_host_in_place() -> None:
    """A global app has no surge: its replicas are replaced in place, on their own
    hosts, one at a time by default (max_unavailable 0 still lets one go)."""
    state = cluster(("h1", 4, 8 * Gi), ("h2", 4, 8 * Gi), ("h3", 4, 8 * Gi))
    add_revision(state, app_spec(1, "mode: global\n"), 1)
    add_app(state, app_spec(2, "mode: global\n"), revision=2)
    for slot, host in enumerate(("h1", "h2", "h3")):
        put_replica(state, slot, host, 1)
        report(state, host, slot, 1, ready_since=LONG_AGO)
    set_rollout(state, 2, 1)
    plan = plan_replicas(state, "web", NOW)
    moved = [(r.slot, r.host, r.revision, r.next) for r, _ in plan.put]
    assert len(moved) == 1, moved
    slot, host, revision, nxt = moved[0]
    assert (revision, nxt) == (2, None)  # in place, no replacement beside it
    assert host == ("h1", "h2", "h3")[slot]  # on its own host


def test_a_finished_rollout_wakes_only_for_its_replacements() -> None:
    """A complete rollout counts nothing: its containers turning available do not wake
    the plan (a storm of reconnecting hosts re-planned every app at each), but a
    replacement of it (a drain's, say) does, to take its slot over then."""
    state = rolling("{min_ready: 30s}")
    set_rollout(state, revision=2, rollout_state="complete")
    put_replica(state, 0, "h1", 2)
    report(state, "h1", 0, 2, ready_since=NOW - 10)  # available at NOW + 20
    assert plan_replicas(state, "web", NOW).wake_at is None
    put_replica(state, 1, "h1", 2, next=(2, "h2"))
    report(state, "h1", 1, 2)
    report(state, "h2", 1, 2, ready_since=NOW - 5)  # the replacement: available at NOW + 25
    assert plan_replicas(state, "web", NOW).wake_at == pytest.approx(NOW + 25)


def test_a_progressing_rollout_wakes_when_a_container_of_it_becomes_available() -> None:
    state = rolling("{min_ready: 30s}")
    for slot in range(4):
        put_replica(state, slot, "h1", 2)
        report(state, "h1", slot, 2, ready_since=NOW - 10 - slot)
    assert plan_replicas(state, "web", NOW).wake_at == pytest.approx(NOW + 17)
