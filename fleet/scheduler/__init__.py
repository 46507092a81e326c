"""Placement: which host runs each replica. Pure functions over a snapshot.

``plan = schedule(snapshot, requests)``: no etcd, gRPC, Docker or clock in here; the
control plane builds the snapshot from etcd and commits the plan in a transaction.
Filters reject hosts with a reason, scorers rank the rest (bin-packing by default,
``placement: spread`` on request), and ``displaced`` says which placed replicas must
be scheduled again because their host is lost, drained or they were evicted.
"""

from __future__ import annotations

from fleet.scheduler._cluster import nanocores
from fleet.scheduler._displaced import LOST_STATES, displaced
from fleet.scheduler._placement import FILTERS, STRATEGIES, Weighted, schedule
from fleet.scheduler._types import (
    HostView,
    PlacedReplica,
    Placement,
    PlacementStrategy,
    Plan,
    ReplicaRequest,
    Snapshot,
)

__all__ = [
    "FILTERS",
    "LOST_STATES",
    "STRATEGIES",
    "HostView",
    "PlacedReplica",
    "Placement",
    "PlacementStrategy",
    "Plan",
    "ReplicaRequest",
    "Snapshot",
    "Weighted",
    "displaced",
    "nanocores",
    "schedule",
]
