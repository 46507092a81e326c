"""What an apply or a scale changes: pure decisions over the stored app record.

The generation rises with every change of the spec; the revision rises only when the
container template changes (a change of ``replicas`` alone makes none), as Kubernetes
does for Deployments and their ReplicaSets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fleet.spec import AppSpec, template_of
from fleet.store.records import AppRecord, RevisionRecord

__all__ = [
    "REVISION_HISTORY",
    "AppChangePlan",
    "plan_apply",
    "plan_restart",
    "plan_scale",
    "plan_undo",
    "revision_hash",
    "too_large",
]

REVISION_HISTORY = 10

Action = Literal["created", "changed", "unchanged"]


@dataclass(frozen=True)
class AppChangePlan:
    action: Action
    record: AppRecord
    fields: tuple[str, ...]  # top-level spec fields that differ
    new_revision: RevisionRecord | None
    prune_revisions: tuple[int, ...]


def _changed_fields(old: AppSpec, new: AppSpec) -> tuple[str, ...]:
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return tuple(name for name in after if before.get(name) != after[name])


def revision_hash(spec: AppSpec, restarted_at: str = "") -> str:
    """What identifies a revision's containers: the template, and the restart stamp."""
    if not restarted_at:
        return spec.template_hash()
    return hashlib.sha256(f"{spec.template_hash()}@{restarted_at}".encode()).hexdigest()[:12]


def _prune(kept: Iterable[int], new: int, in_use: Iterable[int], history: int) -> tuple[int, ...]:
    """The oldest revisions beyond ``history``, except those still in use (run by a
    replica, or the one a rollback would return to)."""
    numbers = sorted(set(kept) | {new})
    excess = numbers[: max(0, len(numbers) - history)]
    busy = set(in_use) | {new}
    return tuple(n for n in excess if n not in busy)


def too_large(apps: int, operations: int, limit: int, per_app: int) -> str:
    """Why an apply is refused whole: its ``apps`` apps take ``operations`` etcd
    operations (the most one of them: ``per_app``), and etcd takes at most ``limit`` in
    one transaction (its --max-txn-ops). An apply is one transaction: all or nothing."""
    fit = max(1, limit // max(1, per_app))
    return (
        f"this apply writes {apps} apps in {operations} etcd operations (each app's record, "
        f"its new revision and the old ones it prunes), and etcd takes at most {limit} in "
        "one transaction (its --max-txn-ops, as `fleet server --etcd-max-txn-ops` says); "
        "an apply is stored whole or not at all, so nothing was: split the file into "
        f"applies of at most {fit} apps"
    )


def plan_apply(
    old: AppRecord | None,
    spec: AppSpec,
    now: str,
    kept_revisions: Iterable[int] = (),
    history: int = REVISION_HISTORY,
    *,
    cause: str = "fleet apply",
    in_use: Iterable[int] = (),
) -> AppChangePlan:
    """Decide what applying ``spec`` over ``old`` writes (``now`` stamps new records).
    A new revision is numbered after every revision kept, so an undo to an older one
    never makes a number come back."""
    if old is None:
        record = AppRecord(spec=spec, generation=1, revision=1, created_at=now, updated_at=now)
        revision = RevisionRecord(
            app=spec.name,
            revision=1,
            template_hash=spec.template_hash(),
            spec=spec,
            created_at=now,
            cause=cause,
        )
        return AppChangePlan("created", record, tuple(type(spec).model_fields), revision, ())
    fields = _changed_fields(old.spec, spec)
    if not fields:
        return AppChangePlan("unchanged", old, (), None, ())
    new_revision: RevisionRecord | None = None
    number = old.revision
    prune: tuple[int, ...] = ()
    kept = set(kept_revisions)
    if spec.template_hash() != old.spec.template_hash():
        number = max(kept | {old.revision}) + 1
        new_revision = RevisionRecord(
            app=spec.name,
            revision=number,
            template_hash=revision_hash(spec, old.restarted_at),
            spec=spec,
            created_at=now,
            cause=cause,
        )
        prune = _prune(kept, number, {*in_use, old.revision}, history)
    record = old.model_copy(
        update={
            "spec": spec,
            "generation": old.generation + 1,
            "revision": number,
            "updated_at": now,
        }
    )
    return AppChangePlan("changed", record, fields, new_revision, prune)


def plan_restart(
    old: AppRecord,
    now: str,
    kept_revisions: Iterable[int],
    in_use: Iterable[int] = (),
    history: int = REVISION_HISTORY,
) -> AppChangePlan:
    """``fleet rollout restart``: a new revision of the same template, so every replica
    is replaced (gated like any rollout)."""
    kept = set(kept_revisions)
    number = max(kept | {old.revision}) + 1
    revision = RevisionRecord(
        app=old.spec.name,
        revision=number,
        template_hash=revision_hash(old.spec, now),
        spec=old.spec,
        created_at=now,
        cause="fleet rollout restart",
    )
    record = old.model_copy(
        update={
            "generation": old.generation + 1,
            "revision": number,
            "restarted_at": now,
            "updated_at": now,
        }
    )
    prune = _prune(kept, number, {*in_use, old.revision}, history)
    return AppChangePlan("changed", record, ("restarted_at",), revision, prune)


def plan_undo(old: AppRecord, to: RevisionRecord, now: str) -> AppRecord:
    """Point the app back at revision ``to``: its template, today's count and placement."""
    return old.model_copy(
        update={
            "spec": template_of(old.spec, to.spec),
            "revision": to.revision,
            "generation": old.generation + 1,
            "updated_at": now,
        }
    )


def plan_scale(old: AppRecord, replicas: int, now: str) -> AppRecord:
    """The record after ``fleet scale``: same template, same revision."""
    spec = old.spec.model_copy(update={"replicas": replicas})
    return old.model_copy(
        update={"spec": spec, "generation": old.generation + 1, "updated_at": now}
    )
