"""Placement: which host runs each replica. Pure functions over a snapshot.

``plan = schedule(snapshot, requests)``: no etcd, gRPC, Docker or clock in here; the
control plane builds the snapshot from etcd and commits the plan in a transaction.
"""

from __future__ import annotations

from fleet.scheduler._placement import schedule
from fleet.scheduler._types import (
    HostView,
    PlacedReplica,
    Placement,
    Plan,
    ReplicaRequest,
    Snapshot,
)

__all__ = [
    "HostView",
    "PlacedReplica",
    "Placement",
    "Plan",
    "ReplicaRequest",
    "Snapshot",
    "schedule",
]
