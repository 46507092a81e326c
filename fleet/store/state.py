"""A decoded, consistent view of everything under the prefix at one etcd revision,
and how keys and values are decoded into it.

Built from the informer's cache (``fleet.store.live``, with ``locate``, ``decode`` and
``place``); ``decode_state`` builds it from a whole prefix read, the reference the
informer's state is tested against;
controllers and the API read it, never raw keys. Which record each folder holds and
where it goes is ``_HELD``; the keys themselves are parsed by ``fleet.store.keys``.
Every record keeps the mod revision it was read at, which is what a later
compare-and-swap is guarded on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from fleet.hostlabels import selectable
from fleet.policy import Policy
from fleet.store import keys
from fleet.store._etcd import KeyValue
from fleet.store.keys import Folder, KeyLayout
from fleet.store.records import (
    AppRecord,
    ContainerReport,
    DeniedRecord,
    HostDrain,
    HostLabelsRecord,
    HostRecord,
    JobRecord,
    JoinTokenRecord,
    LiveRecord,
    MaintenanceRecord,
    RegistryMirrorRecord,
    ReplicaRecord,
    RevisionRecord,
    RolloutRecord,
    RouteRecord,
    SecretRecord,
    SlottedRecord,
    StatusRecord,
    TokenRecord,
    UpgradeRecord,
)

__all__ = [
    "TABLES",
    "Changes",
    "ClusterState",
    "Versioned",
    "decode",
    "decode_state",
    "locate",
    "place",
    "report_order",
    "table_of",
    "with_containers",
    "with_report_list",
]

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T", bound=BaseModel | SlottedRecord)


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A record and the mod revision of its key when it was read (slots: the informer
    holds one for every record, 200,000 at 100,000 replicas)."""

    value: T
    mod_revision: int


class CountingDict(dict[K, V]):
    """A dict that counts its changes, so an index built on it knows when it is stale."""

    changes = 0

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.changes += 1

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self.changes += 1

    def pop(self, key: K, *default: Any) -> Any:
        self.changes += 1
        return super().pop(key, *default)

    def clear(self) -> None:
        self.changes += 1
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.changes += 1
        super().update(*args, **kwargs)

    def setdefault(self, key: K, default: Any = None) -> Any:
        self.changes += 1
        return super().setdefault(key, default)


@dataclass(frozen=True)
class Changes:
    """When each part of the state last changed, as the informer's sequence numbers:
    equal numbers in two states mean that part is the same in both. Consumers compare
    these instead of walking the state, so their cost follows what changed."""

    apps: Mapping[str, int]  # an app's own keys: app, revisions, replicas, rollout, job
    reports: Mapping[str, int]  # what agents report of an app's containers (usage aside)
    host_inputs: Mapping[str, int]  # a host's desired set: its replicas and host record
    host_inputs_seq: int  # the newest of host_inputs (unchanged: no host's changed)
    shared: int  # revisions, secrets, the mirror, the upgrade walk: every host's desired set
    hosts: int  # host records, admin labels, liveness, maintenance, upgrades, denials
    placed: int  # any replica anywhere
    status: int  # any agent report (usage included)
    # app -> (its slot log, how much of it this state has seen): the slots whose replica
    # or reports changed, in order. A log is only appended to, and replaced by a new one
    # once long, so a consumer that counted up to position p of the same log recounts
    # only the slots in log[p:seen] (``appcounts``); another log means: recount all.
    slot_logs: Mapping[str, tuple[Sequence[int], int]] = field(default_factory=dict)


# Replicas of one app by slot; of one host by (app, slot); reports of one app by
# (slot, revision, host). Shared between states: never changed once handed out.
AppReplicas = Mapping[int, Versioned[ReplicaRecord]]
HostReplicas = dict[tuple[str, int], ReplicaRecord]
AppReports = dict[tuple[int, int, str], ContainerReport]


_EMPTY: Mapping[Any, Any] = MappingProxyType({})


class ReplicaTable(Mapping[tuple[str, int], Versioned[ReplicaRecord]]):
    """Every replica by (app, slot), read through the per-app index: the informer's
    snapshots share this instead of copying a table of every replica each time (at
    100,000 replicas each copy was 2 ms, and the garbage collector walked every one)."""

    __slots__ = ("_by_app",)
    changes = 0  # never changes (see CountingDict)

    def __init__(self, by_app: Mapping[str, Mapping[int, Versioned[ReplicaRecord]]]) -> None:
        self._by_app = by_app

    def __getitem__(self, key: tuple[str, int]) -> Versioned[ReplicaRecord]:
        app, slot = key
        return self._by_app[app][slot]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for app, slots in self._by_app.items():
            for slot in slots:
                yield app, slot

    def __len__(self) -> int:
        return sum(len(slots) for slots in self._by_app.values())


@dataclass
class ClusterState:
    revision: int
    apps: dict[str, Versioned[AppRecord]] = field(default_factory=dict)
    revisions: dict[tuple[str, int], Versioned[RevisionRecord]] = field(default_factory=dict)
    # A dict when decoded or built by hand; the informer's snapshots share a read-only view.
    replicas: MutableMapping[tuple[str, int], Versioned[ReplicaRecord]] | ReplicaTable = field(
        default_factory=CountingDict
    )
    rollouts: dict[str, Versioned[RolloutRecord]] = field(default_factory=dict)
    jobs: dict[str, Versioned[JobRecord]] = field(default_factory=dict)
    hosts: dict[str, Versioned[HostRecord]] = field(default_factory=dict)
    host_labels: dict[str, Versioned[HostLabelsRecord]] = field(default_factory=dict)
    alive: dict[str, Versioned[LiveRecord]] = field(default_factory=dict)
    status: dict[str, Versioned[StatusRecord]] = field(default_factory=dict)
    secrets: dict[str, Versioned[SecretRecord]] = field(default_factory=dict)
    tokens: dict[str, Versioned[TokenRecord]] = field(default_factory=dict)
    join_tokens: dict[str, Versioned[JoinTokenRecord]] = field(default_factory=dict)
    # Ingress routes by name (http:HOST/PATH, tcp:PORT): the app that holds each.
    routes: dict[str, Versioned[RouteRecord]] = field(default_factory=dict)
    # Certificate serials refused on every stream, by serial (fleet hosts remove).
    denied: dict[str, Versioned[DeniedRecord]] = field(default_factory=dict)
    policy: Versioned[Policy] | None = None  # None: the default, which allows nothing
    registry_mirror: Versioned[RegistryMirrorRecord] | None = None  # None: no mirror
    maintenance: Versioned[MaintenanceRecord] | None = None  # None: nobody holds a slot
    upgrade: Versioned[UpgradeRecord] | None = None  # the last upgrade walk
    # Set by the informer, which keeps the indexes below as it applies each change;
    # a state built otherwise (a snapshot read, a test) builds them when first asked.
    changes: Changes | None = None
    _by_app: Mapping[str, AppReplicas] | None = field(default=None, repr=False)
    _by_host: dict[str, HostReplicas] | None = field(default=None, repr=False)
    _reports: Mapping[str, Mapping[tuple[int, int, str], ContainerReport]] | None = field(
        default=None, repr=False
    )
    _stamp: tuple[int, int | None] | None = field(default=None, repr=False)
    # app or host -> (the index entry it was sorted from, the sorted list)
    _sorted: dict[Any, tuple[object, list[ReplicaRecord]]] = field(default_factory=dict, repr=False)
    _draining: tuple[object, dict[str, HostDrain]] | None = field(default=None, repr=False)

    @property
    def current_policy(self) -> Policy:
        return self.policy.value if self.policy else Policy()

    def admin_labels(self, host_id: str) -> dict[str, str]:
        """The labels admins set on ``host_id`` (``fleet label host``)."""
        found = self.host_labels.get(host_id)
        return dict(found.value.labels) if found else {}

    def selectable_labels(self, host_id: str) -> dict[str, str]:
        """What constraints and selectors match on a registered host: its admin labels,
        its agent's as ``agent.<key>`` and its facts (see ``fleet.hostlabels``)."""
        host = self.hosts[host_id].value
        return selectable(self.admin_labels(host_id), host.labels, host.facts)

    def _indexes(self) -> tuple[Mapping[str, AppReplicas], dict[str, HostReplicas]]:
        """Replicas by app and by host (own or next). The informer hands them over
        ready; otherwise they are built once per state and rebuilt if ``replicas`` is
        changed (only tests change a state)."""
        if self.changes is not None and self._by_app is not None and self._by_host is not None:
            return self._by_app, self._by_host
        stamp = (id(self.replicas), getattr(self.replicas, "changes", None))
        if (
            self._by_app is None
            or self._by_host is None
            or stamp != self._stamp
            or stamp[1] is None
        ):
            self._stamp = stamp
            by_app: dict[str, dict[int, Versioned[ReplicaRecord]]] = {}
            by_host: dict[str, HostReplicas] = {}
            for (app, slot), versioned in self.replicas.items():
                replica = versioned.value
                by_app.setdefault(app, {})[slot] = versioned
                by_host.setdefault(replica.host, {})[(app, slot)] = replica
                if replica.next is not None:
                    by_host.setdefault(replica.next.host, {})[(app, slot)] = replica
            self._by_app, self._by_host = by_app, by_host
            self._sorted = {}
        return self._by_app, self._by_host

    def replica_slots(self, app: str) -> Mapping[int, Versioned[ReplicaRecord]]:
        """``app``'s replica records by slot (not to be changed)."""
        return self._indexes()[0].get(app, _EMPTY)

    def replica_count(self, app: str) -> int:
        return len(self._indexes()[0].get(app, {}))

    def replicas_of(self, app: str) -> list[ReplicaRecord]:
        """``app``'s replicas by slot."""
        slots = self._indexes()[0].get(app)
        if not slots:
            return []
        memo = self._sorted.get(("app", app))
        if memo is None or memo[0] is not slots:
            memo = (slots, [slots[s].value for s in sorted(slots)])
            self._sorted[("app", app)] = memo
        return list(memo[1])

    def replicas_on(self, host: str) -> list[ReplicaRecord]:
        """Replicas with a container on ``host`` (their own or their next), by app and
        slot."""
        placed = self._indexes()[1].get(host)
        if not placed:
            return []
        memo = self._sorted.get(("host", host))
        if memo is None or memo[0] is not placed:
            memo = (placed, [placed[k] for k in sorted(placed)])
            self._sorted[("host", host)] = memo
        return list(memo[1])

    def apps_with_replicas(self) -> Iterable[str]:
        """Every app some replica record names (its app record may be gone)."""
        return self._indexes()[0].keys()

    def draining(self) -> Mapping[str, HostDrain]:
        """The hosts being drained, with their drains (not to be changed). Every app's
        plan asks: an informer's snapshot, whose tables never change, works it out once
        for its hosts' table (at 5,000 hosts, once per app was 5% of a round)."""
        memo = self._draining
        if memo is None or memo[0] is not self.hosts or self.changes is None:
            found = {
                host_id: host.value.drain
                for host_id, host in self.hosts.items()
                if host.value.state == "draining" and host.value.drain is not None
            }
            memo = self._draining = (self.hosts, found)
        return memo[1]

    def hosts_with_replicas(self) -> Iterable[str]:
        """Every host some replica record names (registered or not)."""
        return self._indexes()[1].keys()

    def host_replicas(self, host: str) -> Mapping[tuple[str, int], ReplicaRecord]:
        """The replicas with a container on ``host`` by (app, slot), unsorted: the same
        object for as long as they do not change (not to be changed)."""
        return self._indexes()[1].get(host, _EMPTY)

    def reports_of(self, app: str) -> Mapping[tuple[int, int, str], ContainerReport]:
        """What the agents report of ``app``'s containers, by (slot, revision, host)."""
        if self._reports is not None:
            return self._reports.get(app, _EMPTY)
        return {
            (c.slot, c.revision, host_id): c
            for host_id, status in self.status.items()
            for c in status.value.containers
            if c.app == app
        }

    def containers_on(self, host: str) -> list[tuple[ReplicaRecord, int]]:
        """(replica, revision) for every container ``host`` should run."""
        # ``ReplicaRecord.containers()`` spelled out: this runs for every container of a
        # host at every push of its desired set, and most replicas have no next.
        found = []
        for replica in self.replicas_on(host):
            if replica.host == host:
                found.append((replica, replica.revision))
            nxt = replica.next
            if nxt is not None and nxt.host == host:
                found.append((replica, nxt.revision))
        return found

    def revision_spec(self, app: str, revision: int) -> RevisionRecord | None:
        found = self.revisions.get((app, revision))
        return found.value if found else None


# What the state holds of each folder: the record its keys hold and the ClusterState
# field that record goes in, at the values its key names (one value: that value
# itself; none: the field is the record). Reports are put back into their host's
# status record. Folders not here (leader, events) are not held.
_HELD: dict[Folder, tuple[type[BaseModel] | type[SlottedRecord], str]] = {
    keys.APPS: (AppRecord, "apps"),
    keys.REVISIONS: (RevisionRecord, "revisions"),
    keys.REPLICAS: (ReplicaRecord, "replicas"),
    keys.ROLLOUTS: (RolloutRecord, "rollouts"),
    keys.JOBS: (JobRecord, "jobs"),
    keys.HOSTS: (HostRecord, "hosts"),
    keys.HOST_LABELS: (HostLabelsRecord, "host_labels"),
    keys.ALIVE: (LiveRecord, "alive"),
    keys.STATUS: (StatusRecord, "status"),
    keys.REPORTS: (ContainerReport, "status"),
    keys.SECRETS: (SecretRecord, "secrets"),
    keys.TOKENS: (TokenRecord, "tokens"),
    keys.JOIN_TOKENS: (JoinTokenRecord, "join_tokens"),
    keys.ROUTES: (RouteRecord, "routes"),
    keys.DENIED: (DeniedRecord, "denied"),
    keys.POLICY: (Policy, "policy"),
    keys.REGISTRY_MIRROR: (RegistryMirrorRecord, "registry_mirror"),
    keys.MAINTENANCE: (MaintenanceRecord, "maintenance"),
    keys.UPGRADE: (UpgradeRecord, "upgrade"),
}
# The ClusterState fields that are tables of records by key.
TABLES = tuple(
    table for folder, (_, table) in _HELD.items() if folder.segments and folder is not keys.REPORTS
)
ReportKey = tuple[str, int, int]  # app, slot, revision


def locate(layout: KeyLayout, key: bytes) -> tuple[Folder, Any] | None:
    """(folder, position in its ClusterState field) of ``key``, or None for a key the
    state does not hold; a single's position is None. A key that does not parse is
    skipped (warned of once per folder, see ``KeyLayout.parse_or_warn``)."""
    parsed = layout.parse_or_warn(key)
    if parsed is None or parsed.folder not in _HELD:
        return None
    parts = parsed.parts
    return parsed.folder, (parts[0] if len(parts) == 1 else parts or None)


def decode(folder: Folder, kv: KeyValue) -> Versioned[Any] | None:
    """The record ``kv`` holds (``folder`` from ``locate``); None, logged, if unreadable:
    a record this version cannot read is skipped, not fatal, so the rest of the state
    stays usable."""
    try:
        return Versioned(_HELD[folder][0].model_validate_json(kv.value), kv.mod_revision)
    except ValidationError as error:
        log.error("skipping unreadable record %s: %s", kv.key.decode(errors="replace"), error)
        return None


def table_of(folder: Folder) -> str:
    """The ClusterState field that holds the records of ``folder``: ``host-labels`` ->
    ``host_labels``."""
    return _HELD[folder][1]


def place(
    state: ClusterState, folder: Folder, position: Any, record: Versioned[Any] | None
) -> None:
    """Put ``record`` (None: remove it) where ``locate`` says it goes in ``state``."""
    if not folder.segments:
        setattr(state, _HELD[folder][1], record)
        return
    target: dict[Any, Any] = getattr(state, _HELD[folder][1])
    if record is None:
        target.pop(position, None)
    else:
        target[position] = record


def with_containers(
    status: Versioned[StatusRecord], reports: Mapping[ReportKey, ContainerReport]
) -> Versioned[StatusRecord]:
    """A host's status record with its containers' reports put back (``report_order``)."""
    return with_report_list(status, sorted(reports.values(), key=report_order))


def report_order(report: ContainerReport) -> ReportKey:
    """Where a report goes in its host's status record: by app, slot and revision."""
    return report.app, report.slot, report.revision


def with_report_list(
    status: Versioned[StatusRecord], containers: list[ContainerReport]
) -> Versioned[StatusRecord]:
    """A host's status record with its containers' reports put back, in the order given
    (``report_order``)."""
    return Versioned(
        status.value.model_copy(update={"containers": containers}), status.mod_revision
    )


def decode_state(layout: KeyLayout, kvs: Iterable[KeyValue], revision: int) -> ClusterState:
    """Sort raw keys (a prefix read) into typed records."""
    state = ClusterState(revision=revision, replicas={})
    reports: dict[str, dict[ReportKey, ContainerReport]] = {}
    for kv in kvs:
        found = locate(layout, kv.key)
        if found is None:
            continue
        record = decode(found[0], kv)
        if record is None:
            continue
        if found[0] is keys.REPORTS:
            host, app, slot, number = found[1]
            reports.setdefault(host, {})[(app, slot, number)] = record.value
        else:
            place(state, found[0], found[1], record)
    by_app: dict[str, AppReports] = {}
    for host, containers in reports.items():
        for (app, slot, number), report in containers.items():
            by_app.setdefault(app, {})[(slot, number, host)] = report
    for host, status in state.status.items():
        state.status[host] = with_containers(status, reports.get(host, {}))
    state._reports = by_app  # as the informer's: every report key, status record or not
    state.replicas = CountingDict(state.replicas)
    return state
