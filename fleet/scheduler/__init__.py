"""Placement: which host runs each replica. Pure functions over a snapshot.

``plan = schedule(snapshot, requests)``: no etcd, gRPC, Docker or clock in here; the
control plane builds the snapshot from etcd and commits the plan in a transaction.
Filters reject hosts with a reason, scorers rank the rest (bin-packing by default,
``placement: spread`` on request), and ``displaced`` says which placed replicas must
be scheduled again because their host is lost, drained or they were evicted.

Its arrays are numpy's, which only the control plane needs: it comes with the
``server`` extra, so an agent's or a CLI's install goes without it.
"""

from __future__ import annotations

from fleet.errors import FailedPrecondition

try:
    import numpy  # noqa: F401
except ModuleNotFoundError as error:
    raise FailedPrecondition(
        "the control plane needs numpy, which fleet's server extra installs: "
        "pip install 'fleet-orchestrator[server]'"
    ) from error

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
