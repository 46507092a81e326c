"""A decoded, consistent view of everything under the prefix at one etcd revision.

Built from a prefix read (``Store.snapshot``) or from the informer's cache; controllers
and the API read it, never raw keys. Every record keeps the mod revision it was read at,
which is what a later compare-and-swap is guarded on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from fleet.policy import Policy
from fleet.store._etcd import KeyValue
from fleet.store.keys import KeyLayout
from fleet.store.records import (
    AppRecord,
    HostRecord,
    JobRecord,
    LiveRecord,
    MaintenanceRecord,
    ReplicaRecord,
    RevisionRecord,
    RolloutRecord,
    SecretRecord,
    StatusRecord,
    TokenRecord,
    UpgradeRecord,
)

__all__ = ["ClusterState", "Versioned", "decode_state"]

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Versioned(Generic[T]):
    """A record and the mod revision of its key when it was read."""

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


@dataclass
class ClusterState:
    revision: int
    apps: dict[str, Versioned[AppRecord]] = field(default_factory=dict)
    revisions: dict[tuple[str, int], Versioned[RevisionRecord]] = field(default_factory=dict)
    replicas: dict[tuple[str, int], Versioned[ReplicaRecord]] = field(default_factory=CountingDict)
    rollouts: dict[str, Versioned[RolloutRecord]] = field(default_factory=dict)
    jobs: dict[str, Versioned[JobRecord]] = field(default_factory=dict)
    hosts: dict[str, Versioned[HostRecord]] = field(default_factory=dict)
    alive: dict[str, Versioned[LiveRecord]] = field(default_factory=dict)
    status: dict[str, Versioned[StatusRecord]] = field(default_factory=dict)
    secrets: dict[str, Versioned[SecretRecord]] = field(default_factory=dict)
    tokens: dict[str, Versioned[TokenRecord]] = field(default_factory=dict)
    policy: Versioned[Policy] | None = None  # None: the default, which allows nothing
    maintenance: Versioned[MaintenanceRecord] | None = None  # None: nobody holds a slot
    upgrade: Versioned[UpgradeRecord] | None = None  # the last upgrade walk
    _by_app: dict[str, list[ReplicaRecord]] | None = field(default=None, repr=False)
    _by_host: dict[str, list[ReplicaRecord]] | None = field(default=None, repr=False)
    _stamp: tuple[int, int | None] | None = field(default=None, repr=False)

    @property
    def current_policy(self) -> Policy:
        return self.policy.value if self.policy else Policy()

    def _indexes(self) -> tuple[dict[str, list[ReplicaRecord]], dict[str, list[ReplicaRecord]]]:
        """Replicas by app and by host (own or next), built once per state: a state is
        read many times (once per agent session, app and request) and never changed."""
        stamp = (id(self.replicas), getattr(self.replicas, "changes", None))
        if (
            self._by_app is None
            or self._by_host is None
            or stamp != self._stamp
            or stamp[1] is None
        ):
            self._stamp = stamp
            by_app: dict[str, list[ReplicaRecord]] = {}
            by_host: dict[str, list[ReplicaRecord]] = {}
            for (app, _), versioned in sorted(self.replicas.items()):
                replica = versioned.value
                by_app.setdefault(app, []).append(replica)
                by_host.setdefault(replica.host, []).append(replica)
                if replica.next is not None and replica.next.host != replica.host:
                    by_host.setdefault(replica.next.host, []).append(replica)
            self._by_app, self._by_host = by_app, by_host
        return self._by_app, self._by_host

    def replicas_of(self, app: str) -> list[ReplicaRecord]:
        return list(self._indexes()[0].get(app, []))

    def replicas_on(self, host: str) -> list[ReplicaRecord]:
        """Replicas with a container on ``host``: their own or their next."""
        return list(self._indexes()[1].get(host, []))

    def containers_on(self, host: str) -> list[tuple[ReplicaRecord, int]]:
        """(replica, revision) for every container ``host`` should run."""
        return [
            (replica, revision)
            for replica in self.replicas_on(host)
            for revision, on in replica.instances()
            if on == host
        ]

    def revision_spec(self, app: str, revision: int) -> RevisionRecord | None:
        found = self.revisions.get((app, revision))
        return found.value if found else None


# key -> (mod revision, folder, position, record): what decode_state made of a key.
DecodeCache = dict[bytes, tuple[int, str, Any, Any]]


def _decode(model: type[T], kv: KeyValue) -> Versioned[T] | None:
    try:
        return Versioned(model.model_validate_json(kv.value), kv.mod_revision)
    except ValidationError as error:
        # A record this version cannot read is skipped, not fatal: it is logged so an
        # operator can see it, and the rest of the state stays usable.
        log.error("skipping unreadable record %s: %s", kv.key.decode(errors="replace"), error)
        return None


def decode_state(
    layout: KeyLayout, kvs: Iterable[KeyValue], revision: int, cache: DecodeCache | None = None
) -> ClusterState:
    """Sort raw keys into typed records. With ``cache`` (key -> (mod revision, folder,
    position, record)), a key unchanged since the last call is neither parsed nor
    validated again: records are frozen, so they are shared between states."""
    state = ClusterState(revision=revision)
    replicas: dict[Any, Any] = {}  # filled plain, then wrapped (see CountingDict)
    # folder -> (record type, where it goes, how its key segments index it)
    table: dict[str, tuple[type[BaseModel], dict[Any, Any], Callable[[tuple[str, ...]], Any]]] = {
        "apps": (AppRecord, state.apps, lambda p: p[0]),
        "revisions": (RevisionRecord, state.revisions, lambda p: (p[0], int(p[1]))),
        "replicas": (ReplicaRecord, replicas, lambda p: (p[0], int(p[1]))),
        "rollouts": (RolloutRecord, state.rollouts, lambda p: p[0]),
        "jobs": (JobRecord, state.jobs, lambda p: p[0]),
        "hosts": (HostRecord, state.hosts, lambda p: p[0]),
        "alive": (LiveRecord, state.alive, lambda p: p[0]),
        "status": (StatusRecord, state.status, lambda p: p[0]),
        "secrets": (SecretRecord, state.secrets, lambda p: p[0]),
        "tokens": (TokenRecord, state.tokens, lambda p: p[0]),
    }
    singles: dict[str, type[BaseModel]] = {
        "policy": Policy,
        "maintenance": MaintenanceRecord,
        "upgrade": UpgradeRecord,
    }
    depth = {"revisions": 2, "replicas": 2}
    seen: set[bytes] = set()
    for kv in kvs:
        seen.add(kv.key)
        hit = cache.get(kv.key) if cache is not None else None
        if hit is not None and hit[0] == kv.mod_revision:
            _, kind, position, record = hit
            if kind in singles:
                setattr(state, kind, record)
            else:
                table[kind][1][position] = record
            continue
        parsed = layout.parse(kv.key)
        if parsed is None:
            continue
        if parsed.kind in singles and not parsed.parts:
            single = _decode(singles[parsed.kind], kv)
            setattr(state, parsed.kind, single)
            if cache is not None and single is not None:
                cache[kv.key] = (kv.mod_revision, parsed.kind, None, single)
            continue
        if parsed.kind not in table or len(parsed.parts) != depth.get(parsed.kind, 1):
            continue
        model, target, index = table[parsed.kind]
        try:
            position = index(parsed.parts)
        except ValueError:
            log.error("skipping key with a malformed segment: %s", kv.key.decode(errors="replace"))
            continue
        decoded = _decode(model, kv)
        if decoded is not None:
            target[position] = decoded
            if cache is not None:
                cache[kv.key] = (kv.mod_revision, parsed.kind, position, decoded)
    state.replicas = CountingDict(replicas)
    if cache is not None and len(cache) > 2 * len(seen) + 1024:
        for key in [k for k in cache if k not in seen]:
            del cache[key]  # deleted keys: forget their records
    return state
