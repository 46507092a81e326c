"""Tests of host drains in the replica controller's pure planner, ``plan_replicas``
(``drains.move_off_draining`` and ``_force_off``), and of ``drained_hosts``.

A draining host's replicas move make-before-break: each gets a ``next`` of its own
revision on another ready host, which takes the slot over once available. That never
lowers availability, so every replica of the host moves at once where there is room
(at most the app's ``drain_surge`` at a time, if it sets one), whatever its
``min_available``. Past a forced drain's deadline what is left is stopped and placed
again wherever it fits, or deleted."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.controlplane.drains import drained_hosts
from fleet.controlplane.planner import plan_replicas
from fleet.controlplane.slots import ReplicaPlan
from fleet.store import ClusterState, Versioned
from fleet.store.records import HostDrain, ReplicaRecord
from tests.unit.controlplane.builders import (
    LONG_AGO,
    NOW,
    Gi,
    Mi,
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


def start_drain(
    state: ClusterState,
    host: str,
    *,
    force: bool = False,
    deadline: float | None = None,
) -> None:
    """``host`` is draining (since a minute ago), with ``deadline`` (epoch seconds) if any."""
    stored = state.hosts[host]
    drain = HostDrain(
        started_at=iso(NOW - 60.0),
        deadline_at=iso(deadline) if deadline is not None else "",
        force=force,
    )
    record = stored.value.model_copy(update={"state": "draining", "drain": drain})
    state.hosts[host] = Versioned(record, stored.mod_revision + 1)


def placed(
    text: str,
    hosts: list[str],
    *,
    cpu: float = 8.0,
    memory: int = 16 * Gi,
    available: bool = True,
) -> ClusterState:
    """``web`` at revision 1 (spec ``text``) with slot s on ``hosts[s]``, each reported
    available unless told otherwise; h1..h3 exist with the given capacity."""
    state = cluster(*((f"h{i}", cpu, memory) for i in (1, 2, 3)))
    add_app(state, app_spec(1, f"replicas: {len(hosts)}\n{text}"))
    for slot, host in enumerate(hosts):
        put_replica(state, slot, host, 1)
        if available:
            report(state, host, slot, 1)
    return state


def slots_of(state: ClusterState) -> dict[int, ReplicaRecord]:
    return {r.slot: r for r in state.replicas_of("web")}


def moving(slots: dict[int, ReplicaRecord], host: str) -> list[int]:
    """Slots on ``host`` with a replacement started."""
    return sorted(s for s, r in slots.items() if r.host == host and r.next is not None)


def report_nexts(state: ClusterState) -> None:
    """The agents report every ``next`` running and ready long ago."""
    for r in state.replicas_of("web"):
        if r.next is not None:
            report(state, r.next.host, r.slot, r.next.revision, ready_since=LONG_AGO)


def mod_of(state: ClusterState, slot: int) -> int:
    """The mod revision ``web``'s slot was read at."""
    return state.replicas[("web", slot)].mod_revision


def forget_all(state: ClusterState, host: str) -> None:
    """``host``'s agent reports no container any more."""
    stored = state.status[host]
    state.status[host] = Versioned(
        stored.value.model_copy(update={"containers": []}), stored.mod_revision
    )


# ------------------------------------------------------------------ make-before-break


def test_draining_host_replica_gets_a_next_of_its_revision_and_keeps_running() -> None:
    """A replica on a draining host gets a ``next`` of its own revision, with that
    revision's reservations, on another ready host; its own host is unchanged in the plan
    and nothing is deleted, so the old container keeps running until the new one is
    available. The other slots are not touched."""
    state = placed("resources: {cpu: 0.5, memory: 64Mi}\n", ["h1", "h2", "h3"])
    start_drain(state, "h1")
    before = slots_of(state)
    plan = plan_replicas(state, "web", NOW)
    assert (plan.delete, plan.pending, plan.drain_blocked) == ([], {}, {})
    [(record, mod)] = plan.put
    assert (record.slot, mod) == (0, state.replicas[("web", 0)].mod_revision)
    assert record.model_copy(update={"next": None}) == before[0]  # only `next` changes
    assert record.next is not None
    assert record.next.revision == 1
    assert record.next.host in {"h2", "h3"}
    assert record.next.resources == before[0].resources
    assert record.next.host_ports == before[0].host_ports
    slots = after(state, plan)
    assert wanted(slots) >= wanted(before)  # no container stops
    assert {s: r for s, r in slots.items() if s != 0} == {1: before[1], 2: before[2]}


def test_drain_move_of_an_outdated_replica_keeps_its_revision() -> None:
    """During a paused rollout (so the rollout starts nothing itself) a replica of the old
    revision on a draining host moves at its own revision, not the rollout's target."""
    state = cluster(("h1", 8.0, 16 * Gi), ("h2", 8.0, 16 * Gi))
    text = "replicas: 1\n"
    add_revision(state, app_spec(1, text), 1)
    add_app(state, app_spec(2, text), revision=2)
    put_replica(state, 0, "h1", 1)
    report(state, "h1", 0, 1)
    set_rollout(state, paused=True)
    start_drain(state, "h1")
    slots = after(state, plan_replicas(state, "web", NOW))
    assert slots[0].host == "h1" and slots[0].revision == 1
    assert slots[0].next is not None
    assert (slots[0].next.revision, slots[0].next.host) == (1, "h2")


# ------------------------------------------------------------------ at once, within the surge


SIX = ["h1", "h1", "h1", "h2", "h3", "h2"]  # slots 0-2 on the draining h1


@pytest.mark.parametrize(
    "text",
    [
        "min_available: 5\n",
        "min_available: 6\n",
        "min_available: 90%\n",
        "",  # min_available defaults to replicas - max_unavailable (0): 6 of 6
        "update: {max_surge: 1, max_unavailable: 2}\n",
        "drain_surge: 100%\n",
        "drain_surge: 10\n",
    ],
)
def test_every_replica_of_the_host_moves_at_once_whatever_the_budget(text: str) -> None:
    """Six available replicas, three on a draining host: one plan starts a replacement for
    each of the three, even when min_available is every replica (a make-before-break move
    costs no availability); the old containers stay, nothing is deleted."""
    state = placed(text, SIX)
    start_drain(state, "h1")
    before = slots_of(state)
    plan = plan_replicas(state, "web", NOW)
    slots = after(state, plan)
    assert moving(slots, "h1") == [0, 1, 2]
    assert all(r.host == SIX[s] for s, r in slots.items())
    assert all(r.next.host != "h1" for r in slots.values() if r.next is not None)
    assert (plan.delete, plan.drain_blocked) == ([], {})
    assert wanted(slots) >= wanted(before)  # nothing stops before its replacement runs


@pytest.mark.parametrize(
    ("text", "at_once"),
    [
        ("drain_surge: 1\n", 1),
        ("drain_surge: 2\n", 2),
        ("drain_surge: 25%\n", 2),  # 1.5 rounds up
        ("drain_surge: 1%\n", 1),  # never below one
        ("drain_surge: 2\nmin_available: 0\n", 2),  # the surge, not the budget
    ],
)
def test_drain_surge_bounds_the_moves_at_once(text: str, at_once: int) -> None:
    """An app's ``drain_surge`` bounds its replacements started at once, the lowest slots
    first."""
    state = placed(text, SIX)
    start_drain(state, "h1")
    plan = plan_replicas(state, "web", NOW)
    slots = after(state, plan)
    assert moving(slots, "h1") == list(range(at_once))
    assert plan.delete == []


def test_replacements_start_for_as_many_as_the_pool_has_room_for() -> None:
    """Room for two replacements in the pool: two start at once, the third stays where it
    is (nothing stops) and ``drain_blocked`` says why."""
    state = placed("resources: {memory: 768Mi}\n", ["h1", "h1", "h1"], memory=Gi)
    start_drain(state, "h1")
    plan = plan_replicas(state, "web", NOW)
    slots = after(state, plan)
    assert len(moving(slots, "h1")) == 2
    assert sorted(r.next.host for r in slots.values() if r.next is not None) == ["h2", "h3"]
    [blocked] = plan.drain_blocked
    assert blocked not in moving(slots, "h1")
    assert "insufficient memory" in plan.drain_blocked[blocked]
    assert plan.delete == [] and all(r.host == "h1" for r in slots.values())


def test_next_move_starts_once_the_previous_one_is_available() -> None:
    """With a drain_surge of 1 one move at a time: a move in progress (not yet
    available) holds the surge, so planning again starts nothing; once its ``next`` is
    reported running and ready it takes the slot over (own host = the next's, no next)
    and the following slot's move starts in the same plan. Three rounds empty the host."""
    state = placed("drain_surge: 1\n", SIX)
    start_drain(state, "h1")
    state = commit(state, plan_replicas(state, "web", NOW))
    assert moving(slots_of(state), "h1") == [0]
    first = slots_of(state)[0].next
    assert first is not None
    # Not reported yet: nothing else moves.
    report(state, first.host, 0, 1, health="starting", ready_since=None)
    assert plan_replicas(state, "web", NOW).put == []
    for slot in (0, 1, 2):
        target = slots_of(state)[slot].next
        assert target is not None
        report_nexts(state)
        plan = plan_replicas(state, "web", NOW)
        assert plan.delete == []
        slots = after(state, plan)
        assert (slots[slot].host, slots[slot].next) == (target.host, None)
        assert moving(slots, "h1") == ([slot + 1] if slot < 2 else [])
        state = commit(state, plan)
    assert all(r.host != "h1" and r.next is None for r in state.replicas_of("web"))
    assert plan_replicas(state, "web", NOW).put == []


def test_next_not_promoted_before_min_ready() -> None:
    """A drain's ``next`` ready for less than ``min_ready`` does not take over yet, and
    the plan wakes when it will be available."""
    state = placed("update: {min_ready: 10s}\n", ["h1", "h2"])
    start_drain(state, "h1")
    put_replica(state, 0, "h1", 1, next=(1, "h3"))
    report(state, "h3", 0, 1, ready_since=NOW - 4)
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == []
    assert plan.wake_at is not None and plan.wake_at <= NOW + 6


# ------------------------------------------------------------------ no room elsewhere


def test_drain_with_no_room_elsewhere_blocks_and_changes_nothing() -> None:
    """When no other host can take a replica of a draining host, no ``next`` is made;
    ``plan.drain_blocked`` says why, per host, and nothing is written or deleted (the replica
    keeps running where it is)."""
    state = placed("resources: {memory: 768Mi}\n", ["h1", "h2", "h3"], memory=Gi)
    start_drain(state, "h1")
    plan = plan_replicas(state, "web", NOW)
    assert (plan.put, plan.delete, plan.pending) == ([], [], {})
    assert plan.drain_blocked == {0: "0/3 hosts fit: 2 insufficient memory, 1 draining"}


def test_with_no_room_a_drain_evicts_within_the_budget_and_no_further() -> None:
    """No host has room for h1's two replicas (each needs 768Mi of 1Gi hosts) and the
    app may lose one (min_available 3 of 4): one is stopped where it is and waits
    pending, as `kubectl drain` evicts within a PodDisruptionBudget; the other stays
    (blocked, saying why) until the first is placed again or room appears."""
    state = placed(
        "resources: {memory: 768Mi}\nmin_available: 3\n", ["h1", "h1", "h2", "h3"], memory=Gi
    )
    state.hosts["h1"] = Versioned(
        state.hosts["h1"].value.model_copy(
            update={
                "capacity": state.hosts["h1"].value.capacity.model_copy(update={"memory": 2 * Gi})
            }
        ),
        state.hosts["h1"].mod_revision,
    )
    start_drain(state, "h1")
    plan = plan_replicas(state, "web", NOW)
    [evicted] = plan.pending
    assert evicted in (0, 1)
    assert plan.pending[evicted] == "evicted from its draining host: no other host has room"
    assert plan.delete == [(evicted, mod_of(state, evicted))]
    [blocked] = plan.drain_blocked
    assert blocked == 1 - evicted and "insufficient memory" in plan.drain_blocked[blocked]
    # Planned again with the first gone (pending, not available): no further eviction.
    state = commit(state, plan)
    again = plan_replicas(state, "web", NOW + 1)
    assert again.delete == [] and set(again.drain_blocked) == {blocked}


# ------------------------------------------------------------------ forced drains


@pytest.mark.parametrize("deadline", [NOW - 1.0, NOW, None], ids=["past", "now", "none"])
def test_forced_drain_past_its_deadline_moves_what_is_left_at_once(
    deadline: float | None,
) -> None:
    """Forced, with its deadline passed (or with none), a drain stops what is still on
    the host and places it again where it fits: the slot's own host changes (same
    revision, no next), whatever the budget; no slot is deleted."""
    state = placed("", ["h1", "h1", "h2", "h3"])
    start_drain(state, "h1", force=True, deadline=deadline)
    before = slots_of(state)
    plan = plan_replicas(state, "web", NOW)
    assert (plan.delete, plan.pending, plan.drain_blocked) == ([], {}, {})
    slots = after(state, plan)
    for slot in (0, 1):
        assert slots[slot].host in {"h2", "h3"}
        assert (slots[slot].revision, slots[slot].next) == (1, None)
        assert slots[slot].resources == before[slot].resources
    assert (slots[2], slots[3]) == (before[2], before[3])
    puts = {r.slot: mod for r, mod in plan.put}
    assert puts == {0: mod_of(state, 0), 1: mod_of(state, 1)}


def test_forced_drain_deletes_what_fits_nowhere_and_says_why() -> None:
    """Past a forced drain's deadline a slot that fits nowhere else is deleted (with the
    mod revision it was read at) and ``plan.drain_blocked`` says why; one that fits moves."""
    state = placed("resources: {memory: 1Gi}\n", ["h1", "h1", "h2"], memory=Gi + 512 * Mi)
    start_drain(state, "h1", force=True, deadline=NOW - 1.0)
    plan = plan_replicas(state, "web", NOW)
    slots = after(state, plan)
    [gone] = {0, 1, 2} - set(slots)
    assert gone in (0, 1)
    [kept] = {0, 1} - {gone}
    assert plan.delete == [(gone, mod_of(state, gone))]
    assert (slots[kept].host, slots[kept].next) == ("h3", None)
    assert set(plan.drain_blocked) == {gone}
    assert "insufficient memory" in plan.drain_blocked[gone]
    assert plan.drain_blocked[gone].startswith("0/3 hosts fit")


def test_forced_drain_with_no_room_at_all_deletes_every_slot_on_it() -> None:
    """Nothing fits anywhere else: every slot still on a forced host past its deadline is
    deleted and blocked; the slots elsewhere stay."""
    state = placed("resources: {memory: 768Mi}\n", ["h1", "h2", "h3"], memory=Gi)
    start_drain(state, "h1", force=True)
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == [(0, mod_of(state, 0))]
    assert plan.drain_blocked == {0: "0/3 hosts fit: 2 insufficient memory, 1 draining"}
    assert plan.put == []


def test_deadline_passed_without_force_still_only_moves_make_before_break() -> None:
    """A drain that is not forced does nothing drastic at its deadline: a ``next`` for
    each replica, own hosts unchanged, nothing deleted."""
    state = placed("", ["h1", "h1", "h2", "h3"])
    start_drain(state, "h1", force=False, deadline=NOW - 100.0)
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == []
    slots = after(state, plan)
    assert [r.host for _, r in sorted(slots.items())] == ["h1", "h1", "h2", "h3"]
    assert moving(slots, "h1") == [0, 1]
    assert wanted(slots) >= wanted(slots_of(state))


def test_forced_drain_before_its_deadline_moves_make_before_break_and_wakes_then() -> None:
    """Before its deadline a forced drain moves make-before-break like any other, and the
    plan asks to be woken by the deadline."""
    state = placed("", ["h1", "h1", "h2", "h3"])
    start_drain(state, "h1", force=True, deadline=NOW + 30.0)
    plan = plan_replicas(state, "web", NOW)
    slots = after(state, plan)
    assert [r.host for _, r in sorted(slots.items())] == ["h1", "h1", "h2", "h3"]
    assert moving(slots, "h1") == [0, 1]
    assert plan.delete == []
    assert plan.wake_at is not None and plan.wake_at <= NOW + 30.0


def test_forced_drain_keeps_a_replacement_already_started() -> None:
    """A slot on a forced host whose drain ``next`` already runs (not yet available) on a
    ready host: past the deadline the slot should be the next (as a lost host's slot is),
    not placed again from scratch where the scheduler likes, which may start yet another
    container and stop the one that was starting."""
    state = placed("", ["h1", "h2", "h2", "h2"])  # h3 is the emptiest host
    start_drain(state, "h1", force=True, deadline=NOW - 1.0)
    put_replica(state, 0, "h1", 1, next=(1, "h2"))
    report(state, "h2", 0, 1, health="starting", ready_since=None)
    slots = after(state, plan_replicas(state, "web", NOW))
    assert (slots[0].host, slots[0].next) == ("h2", None)


# ------------------------------------------------------------------ nexts on draining hosts


def test_rollout_next_on_a_draining_host_is_dropped() -> None:
    """A rollout's surge (``next`` of the new revision) that was started on a host which
    is now draining is dropped; a replacement, if one starts in the same plan, is never
    on the draining host. The slot's own container stays."""
    state = cluster(("h1", 8.0, 16 * Gi), ("h2", 8.0, 16 * Gi), ("h3", 8.0, 16 * Gi))
    text = "replicas: 2\nupdate: {max_surge: 1, max_unavailable: 0}\n"
    add_revision(state, app_spec(1, text), 1)
    add_app(state, app_spec(2, text), revision=2)
    put_replica(state, 0, "h2", 1, next=(2, "h1"))
    put_replica(state, 1, "h3", 1)
    report(state, "h2", 0, 1)
    report(state, "h3", 1, 1)
    report(state, "h1", 0, 2, health="starting", ready_since=None)
    set_rollout(state)
    start_drain(state, "h1")
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == []
    slots = after(state, plan)
    assert (slots[0].host, slots[0].revision) == ("h2", 1)
    assert (slots[1].host, slots[1].revision) == ("h3", 1)
    assert all(host != "h1" for _, _, host in wanted(slots))


def test_drain_next_on_a_host_that_started_draining_since_is_moved() -> None:
    """A drain's ``next`` on a host that has since started draining too is dropped and
    the move starts again on a ready host."""
    state = placed("", ["h1", "h3"])
    start_drain(state, "h1")
    start_drain(state, "h2")
    put_replica(state, 0, "h1", 1, next=(1, "h2"))
    plan = plan_replicas(state, "web", NOW)
    slots = after(state, plan)
    assert slots[0].host == "h1"
    assert slots[0].next is not None and slots[0].next.host == "h3"


def test_available_rollout_next_on_a_draining_host_does_not_take_over() -> None:
    """A rollout's ``next`` on a host that is now draining, already available: it should
    be dropped like any other next there; the slot must not move from its ready host onto
    the draining host (only to have to move off it again)."""
    state = cluster(("h1", 8.0, 16 * Gi), ("h2", 8.0, 16 * Gi), ("h3", 8.0, 16 * Gi))
    text = "replicas: 2\nupdate: {max_surge: 1, max_unavailable: 0}\n"
    add_revision(state, app_spec(1, text), 1)
    add_app(state, app_spec(2, text), revision=2)
    put_replica(state, 0, "h2", 1, next=(2, "h1"))
    put_replica(state, 1, "h3", 1)
    report(state, "h2", 0, 1)
    report(state, "h3", 1, 1)
    report(state, "h1", 0, 2)  # available
    set_rollout(state)
    start_drain(state, "h1")
    slots = after(state, plan_replicas(state, "web", NOW))
    assert slots[0].host == "h2"
    assert all(host != "h1" for _, _, host in wanted(slots))


# ------------------------------------------------------------------ no churn


def test_replicas_on_ready_hosts_are_not_moved_by_a_drain() -> None:
    """A drain elsewhere never moves, replaces or rewrites replicas on ready hosts, even
    with a generous budget and unbalanced hosts; only the draining host's slots change."""
    state = placed("min_available: 0\n", ["h1", "h2", "h2", "h2", "h2", "h3"])
    start_drain(state, "h1")
    before = slots_of(state)
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == []
    assert {r.slot for r, _ in plan.put} == {0}
    slots = after(state, plan)
    assert all(slots[s] == before[s] for s in range(1, 6))


def test_forced_drain_does_not_move_replicas_on_ready_hosts() -> None:
    """Nor does a forced drain past its deadline."""
    state = placed("", ["h1", "h2", "h2", "h2", "h3"])
    start_drain(state, "h1", force=True, deadline=NOW - 1.0)
    before = slots_of(state)
    plan = plan_replicas(state, "web", NOW)
    slots = after(state, plan)
    assert {r.slot for r, _ in plan.put} == {0}
    assert all(slots[s] == before[s] for s in range(1, 5))


# ------------------------------------------------------------------ drained_hosts


def test_drained_hosts_are_the_empty_draining_ones() -> None:
    """``drained_hosts`` returns draining hosts that no replica wants a container on
    (neither its own nor its next) and whose agent reports no running container; a
    stopping container still running (its shutdown delay) keeps the host draining; a
    ready host, empty or not, is never drained."""
    state = cluster(*((f"h{i}", 8.0, 16 * Gi) for i in range(1, 8)))
    add_app(state, app_spec(1, "replicas: 3\n"))
    put_replica(state, 0, "h2", 1)  # h2: a replica's own container
    put_replica(state, 1, "h6", 1, next=(1, "h3"))  # h3: a replica's next
    put_replica(state, 2, "h6", 1)
    report(state, "h4", 5, 1)  # h4: a container no replica wants, still running
    report(state, "h5", 5, 1, status="exited", ready_since=None)  # h5: only an exited one
    for host in ("h1", "h2", "h3", "h4", "h5"):
        start_drain(state, host)
    # h6 (ready, with replicas) and h7 (ready, empty) are never drained.
    assert drained_hosts(state) == ["h1", "h5"]
    forget_all(state, "h4")
    assert drained_hosts(state) == ["h1", "h4", "h5"]


def test_drained_host_after_a_whole_drain() -> None:
    """Plan, commit, let the agents act, repeat: the draining host is emptied and is
    drained once its agent no longer reports the old containers."""
    state = placed("min_available: 4\n", ["h1", "h1", "h2", "h3", "h1"])
    start_drain(state, "h1")
    for _ in range(10):
        plan = plan_replicas(state, "web", NOW)
        state = commit(state, plan)
        report_nexts(state)
        containers = wanted(slots_of(state))
        for host in list(state.status):
            for c in state.status[host].value.containers:
                if (c.slot, c.revision, host) not in containers:
                    stored = state.status[host]
                    kept = [x for x in stored.value.containers if x != c]
                    state.status[host] = Versioned(
                        stored.value.model_copy(update={"containers": kept}), stored.mod_revision
                    )
        if drained_hosts(state):
            break
    assert drained_hosts(state) == ["h1"]
    assert len(state.replicas_of("web")) == 5
    assert all(r.host != "h1" and r.next is None for r in state.replicas_of("web"))


# ------------------------------------------------------------------ property


@st.composite
def drain_setups(draw: st.DrawFn) -> tuple[ClusterState, str, int]:
    """1-6 replicas at random over three roomy hosts, one of them draining (forced or
    not, deadline in the future), each replica available or not, a random min_available
    (or none) and drain_surge (or none). Returns the state, the draining host, and the
    replacements the app may have started at once."""
    replicas = draw(st.integers(1, 6))
    min_available = draw(st.none() | st.integers(0, replicas))
    surge = draw(st.none() | st.integers(1, 8) | st.sampled_from(["1%", "50%", "100%"]))
    text = f"replicas: {replicas}\n"
    if min_available is not None:
        text += f"min_available: {min_available}\n"
    if surge is not None:
        text += f"drain_surge: {surge}\n"
    state = cluster(*((f"h{i}", 64.0, 64 * Gi) for i in (1, 2, 3)))
    add_app(state, app_spec(1, text))
    for slot in range(replicas):
        host = f"h{draw(st.integers(1, 3))}"
        put_replica(state, slot, host, 1)
        how = draw(st.sampled_from(["available", "warming", "starting", "missing"]))
        if how == "available":
            report(state, host, slot, 1)
        elif how == "warming":
            report(state, host, slot, 1, ready_since=NOW + 5)
        elif how == "starting":
            report(state, host, slot, 1, health="starting", ready_since=None)
    draining = f"h{draw(st.integers(1, 3))}"
    start_drain(state, draining, force=draw(st.booleans()), deadline=NOW + 60.0)
    if surge is None:
        at_once = replicas
    elif isinstance(surge, int):
        at_once = surge
    else:
        at_once = max(1, -(-int(surge[:-1]) * replicas // 100))
    return state, draining, at_once


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drain_setups())
def test_one_plan_respects_the_drain_rules(setup: tuple[ClusterState, str, int]) -> None:
    """After one plan: no ``next`` targets the draining host; every slot on it has a next,
    or as many as the drain_surge allows, whatever min_available says; no slot on a ready
    host changes host (or is deleted); nothing is pending or deleted with ample room."""
    state, draining, at_once = setup
    before = slots_of(state)
    plan: ReplicaPlan = plan_replicas(state, "web", NOW)
    assert (plan.delete, plan.pending, plan.drain_blocked) == ([], {}, {})
    slots = after(state, plan)
    assert all(r.next is None or r.next.host != draining for r in slots.values())
    assert len(moving(slots, draining)) == min(
        at_once, sum(r.host == draining for r in before.values())
    )
    for slot, replica in before.items():
        if replica.host != draining:
            assert slots[slot] == replica
        else:
            assert slots[slot].host == draining  # make-before-break: own host stays


def available_slots(state: ClusterState) -> set[int]:
    """Slots with a container the plan wants that its agent reports available."""
    reported = {
        (c.slot, c.revision, host)
        for host, stored in state.status.items()
        for c in stored.value.containers
        if c.state == "running" and c.health in ("", "healthy") and c.ready_since
    }
    return {slot for slot, _, _ in wanted(slots_of(state)) & reported if slot >= 0}


def agents_act(state: ClusterState, ready: list[bool]) -> None:
    """The agents stop the containers no replica wants any more and start the wanted
    ones: each new one reports starting, then available on a later round if ``ready``
    says so (one draw per container started)."""
    containers = wanted(slots_of(state))
    for host in list(state.status):
        stored = state.status[host]
        kept = [c for c in stored.value.containers if (c.slot, c.revision, host) in containers]
        state.status[host] = Versioned(
            stored.value.model_copy(update={"containers": kept}), stored.mod_revision
        )
    for slot, revision, host in sorted(containers):
        stored = state.status.get(host)
        found = [
            c
            for c in (stored.value.containers if stored else [])
            if (c.slot, c.revision) == (slot, revision)
        ]
        if not found:
            report(state, host, slot, revision, health="starting", ready_since=None)
        elif found[0].health == "starting" and (ready.pop() if ready else True):
            report(state, host, slot, revision, ready_since=LONG_AGO)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    replicas=st.integers(2, 12),
    on_drained=st.integers(1, 6),
    min_available=st.none() | st.sampled_from([0, 1, "50%", "100%"]),
    surge=st.none() | st.integers(1, 4),
    room=st.integers(1, 12),
    ready=st.lists(st.booleans(), max_size=60),
)
def test_a_whole_drain_never_lowers_availability(
    replicas: int,
    on_drained: int,
    min_available: int | str | None,
    surge: int | None,
    room: int,
    ready: list[bool],
) -> None:
    """A drain run to its end, round after round (plan, commit, the agents act, new
    containers becoming available at random later rounds), on hosts with room for
    ``room`` more replicas each: no round has more replacements started than the
    drain_surge, or fewer than it allows while room and replicas to move are left; no
    replica stops before its replacement is available, but those no host has room for,
    as far as the budget allows (evicted: pending, break-before-make), so the available
    replicas never fall below min_available; and the host ends empty when the pool has
    room for it, else what stays there is blocked and says why."""
    on_drained = min(on_drained, replicas)
    hosts = ["h1"] * on_drained + [f"h{2 + s % 2}" for s in range(replicas - on_drained)]
    text = f"resources: {{memory: 256Mi}}\nreplicas: {replicas}\n"
    if min_available is not None:
        text += f"min_available: {min_available}\n"
    if surge is not None:
        text += f"drain_surge: {surge}\n"
    state = cluster(
        ("h1", 64.0, 64 * Gi),
        *((h, 64.0, (hosts.count(h) + room) * 256 * Mi) for h in ("h2", "h3")),
    )
    add_app(state, app_spec(1, text))
    for slot, host in enumerate(hosts):
        put_replica(state, slot, host, 1)
        report(state, host, slot, 1)
    spec = state.apps["web"].value.spec
    floor = spec.budget_min_available()
    start_drain(state, "h1")
    # Each "not ready" draw holds a new container back one round, at most: the rounds a
    # drain may take grow with them (60 of them against 2 replicas ran out of rounds).
    for _ in range(4 * replicas + 4 + len(ready)):
        was = available_slots(state)
        plan = plan_replicas(state, "web", NOW)
        slots = after(state, plan)
        started = moving(slots, "h1")
        on_h1 = [s for s, r in slots.items() if r.host == "h1"]
        assert len(started) <= (surge or replicas)
        evicted = {s for s, _ in plan.delete}  # only evictions delete a slot: pending
        assert evicted <= set(plan.pending)
        if len(on_h1) > len(started):  # one that waits: the surge is full, or no room
            assert len(started) == surge or plan.drain_blocked or evicted
        assert all(state.replicas[("web", s)].value.host == "h1" for s in evicted)
        assert not evicted & {s for s, r in slots.items() if r.next is not None}
        state = commit(state, plan)
        assert was - evicted <= available_slots(state)  # no other available one stopped
        agents_act(state, ready)
        assert len(available_slots(state)) >= floor
        if not on_h1:
            break
    emptied = all(r.host != "h1" for r in state.replicas_of("web"))
    if on_drained <= 2 * room:
        assert emptied
    if not emptied:
        assert plan.drain_blocked  # it says why
    assert drained_hosts(state) == (["h1"] if emptied else [])


def test_drain_setups_budget_matches_the_spec() -> None:
    """The property's budget is the one the spec resolves (min_available defaults to
    replicas - max_unavailable, which is 0 by default)."""
    spec = app_spec(1, "replicas: 4\n")
    assert spec.budget_min_available() == 4
    assert app_spec(1, "replicas: 4\nmin_available: 75%\n").budget_min_available() == 3
    assert app_spec(1, "replicas: 4\nmin_available: 9\n").budget_min_available() == 4


# ------------------------------------------------------------------ one slot on two hosts


def test_a_slot_reported_on_two_hosts_moves_nothing_but_the_drain_budget() -> None:
    """Agents report containers the records do not place there (an earlier pool's
    leftovers, once adopted: slot 4 on h1 besides h3, slot 0 on h2 besides h1). Such a
    report counts for nothing: the drain of h1 still starts one replacement at a time
    (drain_surge 1), of slot 0's own revision, and touches no other slot."""
    state = placed("min_available: 5\ndrain_surge: 1\n", ["h1", "h1", "h2", "h2", "h3", "h3"])
    report(state, "h1", 4, 1)
    report(state, "h2", 0, 1)
    start_drain(state, "h1")
    before = slots_of(state)
    plan = plan_replicas(state, "web", NOW)
    assert (plan.delete, plan.pending, plan.drain_blocked) == ([], {}, {})
    slots = after(state, plan)
    assert moving(slots, "h1") == [0]
    assert slots[0].next is not None and slots[0].next.revision == 1
    assert {s: r for s, r in slots.items() if s != 0} == {s: before[s] for s in (1, 2, 3, 4, 5)}
    # The next round, slot 0's replacement available: it takes the slot over, slot 1
    # moves next; the stray reports still change nothing else.
    state = commit(state, plan)
    report_nexts(state)
    slots = after(state, plan_replicas(state, "web", NOW + 1))
    assert slots[0].host != "h1" and slots[0].next is None
    assert moving(slots, "h1") == [1]
    assert {s: r for s, r in slots.items() if s > 1} == {s: before[s] for s in (2, 3, 4, 5)}
