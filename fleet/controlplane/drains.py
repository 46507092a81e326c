"""Drains: moving replicas off a draining host, make-before-break, and knowing when the
host is empty. Pure.

A drained host's replicas each get a replacement of their own revision on another host
(the slot's ``next``), which takes the slot over once available
(``SlotPlanner.promote_and_prune``). Such a move never lowers availability (the old
container stops only once its replacement is available), so it needs none of the app's
disruption budget: every replica of the host moves at once where the pool has room, at
most ``drain_surge`` of an app at a time when the app sets one (``AppSpec.
drain_moves_at_once``; Nomad's ``migrate.max_parallel``). A replica that no host has
room for stays where it is, and ``drain_blocked`` says why, unless the app's disruption
budget (``min_available``) lets it be stopped first: then it is, and waits pending
(``_evict_within_budget``, break-before-make). Past a forced drain's deadline what is
left is stopped and placed again wherever it fits (break-before-make, even below
``min_available``, as ``fleet drain --force`` says). A host is drained when nothing
that counts is left on it (``drained_hosts``); the controller then marks it so.
``fleet drain`` and the ``fleet upgrade-hosts`` walk both put hosts in the
``draining`` state this module reads.
"""

from __future__ import annotations

from fleet._time import epoch
from fleet.controlplane.slots import SlotPlanner, promoted
from fleet.store import ClusterState

__all__ = ["drain_wake_at", "drained_hosts", "move_off_draining"]


def move_off_draining(planner: SlotPlanner) -> None:
    """Start replacements elsewhere for the app's replicas on draining hosts, all at once
    (within the app's ``drain_surge``, if it sets one); past a forced drain's deadline,
    stop what is left (``_force_off``)."""
    if not planner.draining:
        return
    slots = planner.slots
    for slot, replica in sorted(slots.items()):
        if replica.next is not None and replica.next.host in planner.draining:
            slots[slot] = replica.model_copy(update={"next": None})
    forced = {
        host_id
        for host_id, drain in planner.draining.items()
        if drain.force and (not drain.deadline_at or planner.now >= (epoch(drain.deadline_at) or 0))
    }
    _force_off(planner, sorted(s for s, r in slots.items() if r.host in forced))
    at_once = planner.spec.drain_moves_at_once()
    moving = [s for s, r in slots.items() if r.host in planner.draining and r.next is not None]
    waiting = sorted(s for s, r in slots.items() if r.host in planner.draining and r.next is None)
    chosen = waiting if at_once is None else waiting[: max(0, at_once - len(moving))]
    no_room: dict[int, str] = {}
    planner.place_each_revision(
        chosen,
        leave_out_moving=False,
        placed=planner.start_replacement,
        unplaced=no_room.__setitem__,
    )
    evicted = _evict_within_budget(planner, sorted(no_room))
    planner.plan.drain_blocked.update({s: why for s, why in no_room.items() if s not in evicted})


def _evict_within_budget(planner: SlotPlanner, slots: list[int]) -> set[int]:
    """Of ``slots`` (replicas of a draining host that no other host has room for), stop
    as many as the app's disruption budget allows, break-before-make, as `kubectl
    drain` evicts within a PodDisruptionBudget: each then waits, pending, for a place
    (another host's room, once there is some). The budget is what is available beyond
    ``min_available``; a replica that is not available costs none of it. With the
    default ``min_available`` (every replica) the budget is 0: nothing stops, and the
    drain waits, saying why. Replicated apps only (a global app's replica belongs to its
    host; a job's runs end by themselves). Returns the slots stopped."""
    if not slots or planner.spec.mode != "replicated":
        return set()
    available = sum(1 for r in planner.slots.values() if planner.available(r))
    budget = available - planner.spec.budget_min_available()
    evicted: set[int] = set()
    for slot in slots:
        cost = 1 if planner.available(planner.slots[slot]) else 0
        if cost > budget:
            continue
        budget -= cost
        evicted.add(slot)
        planner.plan.pending[slot] = "evicted from its draining host: no other host has room"
        if slot in planner.mods:
            planner.plan.delete.append((slot, planner.mods[slot]))
        del planner.slots[slot]
    return evicted


def _force_off(planner: SlotPlanner, slots: list[int]) -> None:
    """Stop ``slots`` where they are; a replacement already started takes over, the
    others are placed again where they fit, else they wait (pending) with no container
    at all."""
    plan = planner.plan
    rest = []
    for slot in slots:
        if planner.slots[slot].next is not None:
            planner.slots[slot] = promoted(planner.slots[slot])
        else:
            rest.append(slot)

    def place(slot: int, revision: int, host: str) -> None:
        planner.slots[slot] = planner.own(slot, revision, host)

    def give_up(slot: int, why: str) -> None:
        plan.pending[slot] = plan.drain_blocked[slot] = why
        if slot in planner.mods:
            plan.delete.append((slot, planner.mods[slot]))
        del planner.slots[slot]

    planner.place_each_revision(rest, leave_out_moving=True, placed=place, unplaced=give_up)


def drain_wake_at(planner: SlotPlanner) -> float | None:
    """When the next forced drain's deadline passes (what is left is then stopped)."""
    deadlines = [
        deadline
        for drain in planner.draining.values()
        if drain.force
        and drain.deadline_at
        and (deadline := epoch(drain.deadline_at)) is not None
        and deadline > planner.now
    ]
    return min(deadlines) if deadlines else None


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
    # The draining hosts alone (worked out once per hosts' table): each round of the
    # controller asks, and sorting every host of 5,000 was 2% of a restart storm.
    for host_id, drain in sorted(state.draining().items()):
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
