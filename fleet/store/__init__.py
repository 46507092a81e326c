"""Everything etcd: nothing outside this package builds or parses a key.

Where to go for what:

- ``keys``: the key layout, the one place that builds and parses keys: every folder
  under the prefix, the segments of its keys, name checks (``check_name``).
- ``records``: what is stored under the keys: the pydantic records, as JSON.
- ``store``: ``Store``, every write (a compare-and-swap transaction guarded on the mod
  revisions read, or on a host's session) and the few reads straight from etcd.
- ``reportwrites``: agents' reports, many hosts to a transaction (``Store.report_many``).
- ``written``: ``Written``, the reports this process wrote, which the informer takes as
  the watch brings them back instead of decoding them again.
- ``state``: ``ClusterState``, the decoded view of every key at one revision that
  controllers and the API read, and which record each folder holds there.
- ``live``: ``LiveState``, that view changed key by key as the watch delivers changes.
- ``informer``: ``Informer``, the watch-driven cache: list, watch, resume, list again.
- ``events``: ``EventLog``, recent events in etcd, kept an hour within a size cap.
- ``leases``: ``LeaseKeeper``, lease keep-alives from a thread, and hosts' silence.
- ``election``: ``Election``, leader election and the fence a leader's writes carry.
- ``compactor``: ``Compactor``, the leader's compaction of etcd's history.
- ``_etcd``: the etcd client itself (calls, error mapping); private.
- ``_members``: a channel per etcd member, which one is in use, when a failed call
  may go again on the next; private.
"""

from __future__ import annotations

from fleet.store._etcd import DEFAULT_MAX_TXN_OPS, MIN_TXN_OPS, Etcd
from fleet.store.events import EventLog
from fleet.store.informer import Informer, Subscription
from fleet.store.keys import DEFAULT_PREFIX, KeyLayout, check_host_id, check_name
from fleet.store.leases import LeaseKeeper
from fleet.store.state import ClusterState, Versioned
from fleet.store.store import Alive, AppWrite, HostReport, Store

__all__ = [
    "DEFAULT_MAX_TXN_OPS",
    "DEFAULT_PREFIX",
    "MIN_TXN_OPS",
    "Alive",
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
