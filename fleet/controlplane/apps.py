"""What an apply or a scale changes: pure decisions over the stored app record.

The generation rises with every change of the spec; the revision rises only when the
container template changes (a change of ``replicas`` alone makes none), as Kubernetes
does for Deployments and their ReplicaSets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fleet.spec import AppSpec
from fleet.store.records import AppRecord, RevisionRecord

__all__ = ["REVISION_HISTORY", "AppChangePlan", "plan_apply", "plan_scale"]

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


def plan_apply(
    old: AppRecord | None,
    spec: AppSpec,
    now: str,
    kept_revisions: Iterable[int] = (),
    history: int = REVISION_HISTORY,
) -> AppChangePlan:
    """Decide what applying ``spec`` over ``old`` writes (``now`` stamps new records)."""
    if old is None:
        record = AppRecord(spec=spec, generation=1, revision=1, created_at=now, updated_at=now)
        revision = RevisionRecord(
            app=spec.name, revision=1, template_hash=spec.template_hash(), spec=spec, created_at=now
        )
        return AppChangePlan("created", record, tuple(type(spec).model_fields), revision, ())
    fields = _changed_fields(old.spec, spec)
    if not fields:
        return AppChangePlan("unchanged", old, (), None, ())
    new_revision: RevisionRecord | None = None
    number = old.revision
    prune: tuple[int, ...] = ()
    if spec.template_hash() != old.spec.template_hash():
        number = old.revision + 1
        new_revision = RevisionRecord(
            app=spec.name,
            revision=number,
            template_hash=spec.template_hash(),
            spec=spec,
            created_at=now,
        )
        kept = sorted(set(kept_revisions) | {number})
        prune = tuple(kept[: max(0, len(kept) - history)])
    record = AppRecord(
        spec=spec,
        generation=old.generation + 1,
        revision=number,
        created_at=old.created_at,
        updated_at=now,
    )
    return AppChangePlan("changed", record, fields, new_revision, prune)


def plan_scale(old: AppRecord, replicas: int, now: str) -> AppRecord:
    """The record after ``fleet scale``: same template, same revision."""
    spec = old.spec.model_copy(update={"replicas": replicas})
    return old.model_copy(
        update={"spec": spec, "generation": old.generation + 1, "updated_at": now}
    )
