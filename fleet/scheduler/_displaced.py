"""Re-placement: which placed replicas must go back through the scheduler.

A replica moves only when its host cannot keep it: the host is lost (gone from the
snapshot, its agent not connected, or marked down), drained, or the replica was
evicted (from a cordoned or draining host). Every other placement stays, even where
the scheduler would now choose another host: no churn.
"""

from __future__ import annotations

from fleet.scheduler._types import PlacedReplica, Snapshot

__all__ = ["LOST_STATES", "displaced"]

LOST_STATES = frozenset({"down", "drained"})  # host states that keep no replica


def displaced(snapshot: Snapshot) -> list[PlacedReplica]:
    """The placed replicas that must move, by (app, slot). Schedule them again on the
    snapshot without them (``Snapshot(hosts, kept)``) as requests of their apps."""
    keeps = {h.host_id for h in snapshot.hosts if h.connected and h.state not in LOST_STATES}
    return sorted(
        (r for r in snapshot.placed if r.evicted or r.host not in keeps),
        key=lambda r: (r.app, r.slot),
    )
