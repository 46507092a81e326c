"""Everything etcd: the key layout, typed records, compare-and-swap writes, the
watch-driven informer cache and leases. Nothing outside this package builds keys."""

from __future__ import annotations

from fleet.store._etcd import DEFAULT_MAX_TXN_OPS, MIN_TXN_OPS, Etcd
from fleet.store.events import EventLog
from fleet.store.informer import Informer, Subscription
from fleet.store.keys import DEFAULT_PREFIX, KeyLayout, check_host_id, check_name
from fleet.store.leases import LeaseKeeper
from fleet.store.state import ClusterState, Versioned
from fleet.store.store import AppWrite, HostReport, Store

__all__ = [
    "DEFAULT_MAX_TXN_OPS",
    "DEFAULT_PREFIX",
    "MIN_TXN_OPS",
    "AppWrite",
    "ClusterState",
    "Etcd",
    "EventLog",
    "HostReport",
    "Informer",
    "KeyLayout",
    "LeaseKeeper",
    "Store",
    "Subscription",
    "Versioned",
    "check_host_id",
    "check_name",
]
