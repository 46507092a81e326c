"""The informer's state, changed key by key as the watch delivers changes.

Consumers get immutable ``ClusterState`` snapshots. A snapshot copies the top-level
tables (a dict copy of 100,000 entries takes about 2 ms) but shares the per-app and
per-host indexes: an index entry is copied before it is changed once a snapshot holds
it (copy-on-write), so one change costs the size of the entry it touches (one app's
replicas, one host's), never a walk of the whole state. ``Changes`` tells consumers
what changed between two snapshots without comparing them.
"""

from __future__ import annotations

import dataclasses
import itertools
from array import array
from typing import Any

from fleet.store import keys
from fleet.store._etcd import KeyValue
from fleet.store.appslots import AppSlots
from fleet.store.keys import KeyLayout
from fleet.store.records import ContainerReport, ReplicaRecord
from fleet.store.reportindex import AppReportIndex, chunk_of
from fleet.store.state import (
    TABLES,
    Changes,
    ClusterState,
    HostReplicas,
    ReplicaTable,
    Versioned,
    decode,
    locate,
    place,
    report_order,
    table_of,
    with_report_list,
)

__all__ = ["LiveState"]

# One sequence for every LiveState, so that numbers from a state listed again (after a
# compaction) never equal the old ones by chance.
_sequence = itertools.count(1)

_NO_SLOTS = AppSlots()

# Entries of an app's slot log before a new log is started (4 bytes each); a consumer
# further behind than that recounts the app's slots.
_SLOT_LOG_MAX = 1 << 15


class LiveState:
    def __init__(self, layout: KeyLayout) -> None:
        self._layout = layout
        self.revision = 0
        # Its tables are the live ones, but for replicas (``_by_app``, ``_by_host``).
        self._live = ClusterState(revision=0, replicas={})
        self._by_app: dict[str, AppSlots] = {}
        self._by_host: dict[str, HostReplicas] = {}
        self._reports: dict[str, AppReportIndex] = {}
        # Each host's reports, in no order: the reports by app are what is looked up; this
        # puts each host's status together (``snapshot``). A list, changed in place (no
        # snapshot holds it), where a dict by (app, slot, revision) held a key tuple of its
        # own for every report: 9 MiB more at 100,000 replicas.
        self._host_reports: dict[str, list[ContainerReport]] = {}
        # Hosts whose status (``_live.status``) must be put together again with their
        # reports: a status record as written, or one whose reports changed. The record
        # put together is the only one held (the containers a status record is written
        # with are never read: its reports are), not one as written beside it.
        self._status_hosts: set[str] = set()
        # Index entries changed since the last snapshot, so not shared with one.
        self._owned: set[tuple[str, object]] = set()
        self._dirty: set[str] = set(TABLES)  # tables changed since the last snapshot
        self._apps: dict[str, int] = {}
        self._app_reports: dict[str, int] = {}
        self._host_inputs: dict[str, int] = {}
        self._host_inputs_seq = 0  # the newest of them: no host's inputs changed since
        # The copies the last snapshot took of _by_host and _host_inputs: shared by the
        # next while no replica and no host record changes (at 5,000 hosts each copy is
        # 5,000 entries, and a storm of reconnects or reports takes a snapshot a batch).
        self._host_copies: tuple[dict[str, HostReplicas], dict[str, int]] | None = None
        self._slot_logs: dict[str, array[int]] = {}  # app -> slots changed, in order
        self._shared = self._hosts = self._placed = self._status = next(_sequence)
        self._snapshot: ClusterState | None = None
        self._sorted: dict[Any, tuple[object, list[ReplicaRecord]]] = {}

    # ---------------------------------------------------------------- changes

    def apply(
        self, key: bytes, value: bytes | None, mod_revision: int, made: Any | None = None
    ) -> None:
        """Apply one put (``value``) or delete (None) seen at ``mod_revision``; ``made``:
        the record ``value`` was dumped from, if this process has it (``Written``)."""
        self.revision = max(self.revision, mod_revision)
        found = locate(self._layout, key)
        if found is None:
            return
        folder, position = found
        if value is None:
            record = None
        elif made is not None:
            record = Versioned(made, mod_revision)
        else:
            record = decode(folder, KeyValue(key, value, mod_revision))
        if value is not None and record is None:
            return  # unreadable (logged): the last readable record stays
        if folder is keys.REPORTS:
            self._report(position, record)
            return
        if folder is keys.STATUS:
            # Put together with the host's reports when a snapshot is taken.
            if record is None:
                self._live.status.pop(position, None)
            else:
                self._live.status[position] = record
            self._status_hosts.add(position)
            self._dirty.add("status")
            self._status = next(_sequence)
            return
        if folder is keys.REPLICAS:
            # Held by app and by host only (snapshots read them through ``ReplicaTable``):
            # a table of every replica beside them was 53 bytes a replica.
            self._replica(position, record)
        else:
            place(self._live, folder, position, record)
        self._dirty.add(table_of(folder))
        seq = next(_sequence)
        if folder in (keys.APPS, keys.ROLLOUTS, keys.JOBS):
            self._apps[position] = seq
        elif folder is keys.REVISIONS:
            self._apps[position[0]] = seq
            self._shared = seq
        elif folder is keys.HOSTS:
            self._hosts = self._host_inputs[position] = self._host_inputs_seq = seq
            self._host_copies = None
        elif folder in (keys.ALIVE, keys.MAINTENANCE, keys.HOST_LABELS, keys.DENIED):
            self._hosts = seq  # (admin labels: which hosts an app may use)
        elif folder in (keys.SECRETS, keys.REGISTRY_MIRROR, keys.UPGRADE):
            self._shared = seq
            if folder is keys.UPGRADE:
                self._hosts = seq

    def _entry(self, table: dict[str, dict[Any, Any]], tag: str, key: str) -> dict[Any, Any]:
        """``table[key]`` ready to be changed: copied first if a snapshot shares it."""
        entry = table.get(key)
        if entry is None:
            entry = table[key] = {}
        elif (tag, key) not in self._owned:
            entry = table[key] = dict(entry)
        self._owned.add((tag, key))
        return entry

    def _drop_if_empty(self, table: dict[str, dict[Any, Any]], key: str) -> None:
        if key in table and not table[key]:
            del table[key]

    def _replica(self, position: tuple[str, int], record: Versioned[Any] | None) -> None:
        app, slot = position
        seq = self._host_inputs_seq = next(_sequence)
        self._host_copies = None
        old = self._by_app.get(app, _NO_SLOTS).record(slot)
        if old is not None:
            for host in {old.host, *([old.next.host] if old.next else [])}:
                self._entry(self._by_host, "host", host).pop(position, None)
                self._drop_if_empty(self._by_host, host)
                self._host_inputs[host] = seq
            self._slots(app).pop(slot)
            if not self._by_app[app]:
                del self._by_app[app]
        if record is not None:
            replica: ReplicaRecord = record.value
            self._slots(app).put(slot, replica, record.mod_revision)
            for host in {replica.host, *([replica.next.host] if replica.next else [])}:
                self._entry(self._by_host, "host", host)[position] = replica
                self._host_inputs[host] = seq
        self._apps[app] = self._placed = seq
        self._log_slot(app, slot)

    def _slots(self, app: str) -> AppSlots:
        """``app``'s replicas ready to be changed: copied first if a snapshot shares them."""
        slots = self._by_app.get(app)
        if slots is None:
            slots = self._by_app[app] = AppSlots()
        elif ("app", app) not in self._owned:
            slots = self._by_app[app] = slots.copy()
        self._owned.add(("app", app))
        return slots

    def _log_slot(self, app: str, slot: int) -> None:
        log = self._slot_logs.get(app)
        if log is None or len(log) >= _SLOT_LOG_MAX:
            log = self._slot_logs[app] = array("l")
        log.append(slot)

    def _report(self, position: tuple[str, str, int, int], record: Versioned[Any] | None) -> None:
        host, app, slot, revision = position
        key = (slot, revision, host)
        by_app = self._reports.get(app)
        if by_app is None:
            by_app = self._reports[app] = AppReportIndex()
        elif ("reports", app) not in self._owned:
            by_app = self._reports[app] = by_app.copy()  # (its chunks still shared)
        self._owned.add(("reports", app))
        containers = self._host_reports.setdefault(host, [])
        old = by_app.get(key)
        chunk = ("report-chunk", (app, chunk_of(slot)))
        shared = chunk not in self._owned
        if old is not None or record is not None:  # (else the chunk is left as it is)
            self._owned.add(chunk)
        if old is not None:
            # By identity: the report as its key placed it, whatever its fields say.
            for at, report in enumerate(containers):
                if report is old:
                    del containers[at]
                    break
        if record is None:
            by_app.pop(key, shared=shared)
            if not by_app:
                del self._reports[app]
        else:
            by_app.put(key, record.value, shared=shared)
            containers.append(record.value)
        if not containers:
            del self._host_reports[host]
        # A report is written only when it changes: every write is news for the app.
        self._app_reports[app] = self._status = next(_sequence)
        self._log_slot(app, slot)
        self._status_hosts.add(host)
        self._dirty.add("status")

    # ---------------------------------------------------------------- snapshots

    def snapshot(self) -> ClusterState:
        """The state at the latest revision applied; the same object until the next
        change. Tables that did not change are shared with the previous snapshot."""
        if self._snapshot is not None and self._snapshot.revision == self.revision:
            return self._snapshot
        previous = self._snapshot
        if previous is not None and not self._dirty:
            # Only keys the state does not hold changed (events): same tables.
            self._snapshot = dataclasses.replace(previous, revision=self.revision)
            return self._snapshot
        live = self._live
        for host in self._status_hosts:
            status = live.status.get(host)
            if status is not None:
                reports = sorted(self._host_reports.get(host, ()), key=report_order)
                live.status[host] = with_report_list(status, reports)
        self._status_hosts.clear()
        tables: dict[str, Any] = {}
        by_app = dict(self._by_app)
        if self._host_copies is None:
            self._host_copies = (dict(self._by_host), dict(self._host_inputs))
        by_host, host_inputs = self._host_copies
        for name in TABLES:
            if name == "replicas":
                tables[name] = ReplicaTable(by_app)
            elif previous is not None and name not in self._dirty:
                tables[name] = getattr(previous, name)
            else:
                tables[name] = dict(getattr(live, name))
        snapshot = ClusterState(
            revision=self.revision,
            policy=live.policy,
            registry_mirror=live.registry_mirror,
            maintenance=live.maintenance,
            upgrade=live.upgrade,
            changes=Changes(
                apps=dict(self._apps),
                reports=dict(self._app_reports),
                host_inputs=host_inputs,
                host_inputs_seq=self._host_inputs_seq,
                shared=self._shared,
                hosts=self._hosts,
                placed=self._placed,
                status=self._status,
                slot_logs={app: (log, len(log)) for app, log in self._slot_logs.items()},
            ),
            _by_app=by_app,
            _by_host=by_host,
            _reports=dict(self._reports),
            _sorted=self._sorted,
            **tables,
        )
        self._owned.clear()
        self._dirty.clear()
        if len(self._slot_logs) > 2 * (len(self._by_app) + len(self._reports)) + 64:
            # Apps with neither replicas nor reports left (deleted): a consumer of a
            # log that is gone recounts the app, which then has nothing to count.
            self._slot_logs = {
                a: log
                for a, log in self._slot_logs.items()
                if a in self._by_app or a in self._reports
            }
        if len(self._sorted) > 2 * (len(self._by_app) + len(self._by_host)) + 1024:
            self._sorted.clear()  # entries of apps and hosts that are gone
        self._snapshot = snapshot
        return snapshot
