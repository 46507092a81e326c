"""One app's plan for one round of the replica controller: which steps run, in which
order, for each mode. Pure: the state and the time are parameters.

- every app: its new slots are placed and the slots of lost hosts move
  (``SlotPlanner.place_missing_and_lost``);
- a job stops there: its slots run once, with no rollout and no moves;
- then replacements that are available take their slots over
  (``SlotPlanner.promote_and_prune``), replicas leave draining hosts
  (``drains.move_off_draining``; a global app's replicas never move), and the rollout
  takes its step (``rollout.step_rollout``).

The controller (``controller``) runs this for every app that may have something to do
(``settled_inputs``) and writes the plans.
"""

from __future__ import annotations

from collections.abc import Mapping

from fleet.controlplane.drains import move_off_draining
from fleet.controlplane.rollout import step_rollout
from fleet.controlplane.slots import ReplicaPlan, SlotPlanner
from fleet.controlplane.view import HostLoad, HostViews
from fleet.store import ClusterState

__all__ = ["lost_hosts", "moves_held", "moves_held_message", "plan_replicas", "settled_inputs"]

# Most of the pool silent at once is likelier the control plane cut off from its hosts
# (a network partition, a switch, its own stall) than that many machines lost: moving
# their replicas would move them off hosts that are fine onto the few still heard, all
# to move back. So, as Kubernetes' node lifecycle controller stops evicting when most of
# a zone is NotReady (--unhealthy-zone-threshold, 0.55, and more than 2 nodes), the
# replicas of silent hosts stay where they are while that many are down.
DEFAULT_HOLD_MOVES_WHEN_DOWN = 0.55  # of the registered hosts
HOLD_MOVES_MIN_DOWN = 3  # fewer never hold: a pool of 3 that loses 2 still heals


def moves_held(down: int, registered: int, threshold: float | None) -> bool:
    """Whether the replicas of down hosts stay put: at least ``HOLD_MOVES_MIN_DOWN`` of
    the ``registered`` hosts are ``down``, and at least ``threshold`` of them (a
    fraction; None: never)."""
    if threshold is None or registered <= 0:
        return False
    # (A tolerance: 0.55 x 100 is 55.000000000000007 in floats.)
    return down >= HOLD_MOVES_MIN_DOWN and down / registered >= threshold - 1e-9


def plan_replicas(
    state: ClusterState,
    app: str,
    now: float,
    lost_hosts: frozenset[str] = frozenset(),
    written: Mapping[str, HostLoad] | None = None,
    views: HostViews | None = None,
) -> ReplicaPlan:
    """What to write so ``app``'s replicas match its spec in ``state`` at ``now`` (epoch
    seconds), and the next step of its rollout. Replicas on ``lost_hosts`` (down for
    longer than the controller waits) are placed again elsewhere, keeping their slots;
    where nothing fits they stay, pending. Placements that still fit are never moved.
    ``written``: other apps' containers written but not yet in ``state``, by host;
    ``views``: host views kept between rounds."""
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
    planner = SlotPlanner(state, app, now, lost_hosts, written, views)
    planner.place_missing_and_lost()
    if planner.mode == "job":
        return planner.finish()
    promoted = planner.promote_and_prune()
    if planner.mode != "global":
        move_off_draining(planner)
    step_rollout(planner, promoted)
    return planner.finish()


def moves_held_message(down: int, registered: int, threshold: float) -> str:
    """What a hold says (the controller's event and log, ``fleet get hosts``)."""
    return (
        f"{down} of {registered} hosts are down at once: their replicas stay where they "
        f"are while {threshold:.0%} or more are (--hold-moves-when-down); so many silent "
        "at once is likelier this control plane cut off from them than the machines lost "
        "(hosts really gone: `fleet hosts remove HOST` moves theirs)"
    )


def lost_hosts(
    state: ClusterState,
    down_since: dict[str, float],
    now: float,
    reschedule_after: float,
    *,
    hold: bool = False,
) -> frozenset[str]:
    """Hosts whose replicas go elsewhere: down for ``reschedule_after``, or gone
    (deregistered). With ``hold`` (``moves_held``) only those gone: an operator's
    removal of a host is never a partition's doing."""
    gone = set(state.hosts_with_replicas()) - state.hosts.keys()
    if hold:
        return frozenset(gone)
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
    # The hosts count while something may be placed on them: a global app's hosts are
    # its slots, and a rollout under way places replacements where there is room. An
    # app whose rollout is over (and which had nothing to do) depends on its hosts only
    # through those lost, which count anyway: in a storm of 5,000 reconnecting hosts
    # each one's coming back re-planned every app.
    rollout = state.rollouts.get(app)
    finished = (
        stored.value.spec.mode != "global"
        and rollout is not None
        and rollout.value.revision == stored.value.revision
        and rollout.value.state in ("complete", "failed")
    )
    hosts = None if finished else changes.hosts
    return (changes.apps.get(app, 0), changes.reports.get(app, 0), hosts, lost)
