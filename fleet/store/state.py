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

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class Versioned(Generic[T]):
    """A record and the mod revision of its key when it was read."""

    value: T
    mod_revision: int


@dataclass
class ClusterState:
    revision: int
    apps: dict[str, Versioned[AppRecord]] = field(default_factory=dict)
    revisions: dict[tuple[str, int], Versioned[RevisionRecord]] = field(default_factory=dict)
    replicas: dict[tuple[str, int], Versioned[ReplicaRecord]] = field(default_factory=dict)
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

    @property
    def current_policy(self) -> Policy:
        return self.policy.value if self.policy else Policy()

    def replicas_of(self, app: str) -> list[ReplicaRecord]:
        return sorted(
            (v.value for (a, _), v in self.replicas.items() if a == app), key=lambda r: r.slot
        )

    def replicas_on(self, host: str) -> list[ReplicaRecord]:
        """Replicas with a container on ``host``: their own or their next."""
        return sorted(
            (
                v.value
                for v in self.replicas.values()
                if v.value.host == host or (v.value.next is not None and v.value.next.host == host)
            ),
            key=lambda r: (r.app, r.slot),
        )

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


def _decode(model: type[T], kv: KeyValue) -> Versioned[T] | None:
    try:
        return Versioned(model.model_validate_json(kv.value), kv.mod_revision)
    except ValidationError as error:
        # A record this version cannot read is skipped, not fatal: it is logged so an
        # operator can see it, and the rest of the state stays usable.
        log.error("skipping unreadable record %s: %s", kv.key.decode(errors="replace"), error)
        return None


def decode_state(layout: KeyLayout, kvs: Iterable[KeyValue], revision: int) -> ClusterState:
    """Sort raw keys into typed records."""
    state = ClusterState(revision=revision)
    # folder -> (record type, where it goes, how its key segments index it)
    table: dict[str, tuple[type[BaseModel], dict[Any, Any], Callable[[tuple[str, ...]], Any]]] = {
        "apps": (AppRecord, state.apps, lambda p: p[0]),
        "revisions": (RevisionRecord, state.revisions, lambda p: (p[0], int(p[1]))),
        "replicas": (ReplicaRecord, state.replicas, lambda p: (p[0], int(p[1]))),
        "rollouts": (RolloutRecord, state.rollouts, lambda p: p[0]),
        "jobs": (JobRecord, state.jobs, lambda p: p[0]),
        "hosts": (HostRecord, state.hosts, lambda p: p[0]),
        "alive": (LiveRecord, state.alive, lambda p: p[0]),
        "status": (StatusRecord, state.status, lambda p: p[0]),
        "secrets": (SecretRecord, state.secrets, lambda p: p[0]),
        "tokens": (TokenRecord, state.tokens, lambda p: p[0]),
    }
    depth = {"revisions": 2, "replicas": 2}
    for kv in kvs:
        parsed = layout.parse(kv.key)
        if parsed is not None and parsed.kind == "policy" and not parsed.parts:
            state.policy = _decode(Policy, kv)
            continue
        if parsed is not None and parsed.kind == "maintenance" and not parsed.parts:
            state.maintenance = _decode(MaintenanceRecord, kv)
            continue
        if parsed is not None and parsed.kind == "upgrade" and not parsed.parts:
            state.upgrade = _decode(UpgradeRecord, kv)
            continue
        if parsed is None or parsed.kind not in table:
            continue
        if len(parsed.parts) != depth.get(parsed.kind, 1):
            continue
        model, target, index = table[parsed.kind]
        try:
            position = index(parsed.parts)
        except ValueError:
            log.error("skipping key with a malformed segment: %s", kv.key.decode(errors="replace"))
            continue
        record = _decode(model, kv)
        if record is not None:
            target[position] = record
    return state
