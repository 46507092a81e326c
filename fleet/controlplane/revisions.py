"""Revision history rules: how an app's revisions are numbered, identified and pruned,
and which one ``fleet rollout undo`` goes back to. Pure functions over numbers and
records (``appchanges`` decides when an apply or a restart makes a new revision).

A new revision is numbered after every revision kept, so an undo to an older one
never makes a number come back; the newest ``REVISION_HISTORY`` are kept, and any
older one still in use (``revisions_in_use``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from fleet.errors import FailedPrecondition, InvalidArgument, NotFound
from fleet.spec import AppSpec
from fleet.store import ClusterState
from fleet.store.records import RolloutRecord

__all__ = [
    "REVISION_HISTORY",
    "kept_revisions",
    "next_revision",
    "pruned",
    "revision_hash",
    "revisions_in_use",
    "undo_target",
]

REVISION_HISTORY = 10


def revisions_in_use(state: ClusterState, app: str) -> set[int]:
    """Revisions that must not be pruned: run by a replica, or a rollback's way back."""
    used = {c.revision for r in state.replicas_of(app) for c in r.containers()}
    rollout = state.rollouts.get(app)
    if rollout is not None:
        used |= {rollout.value.revision, rollout.value.from_revision}
    return used


def kept_revisions(state: ClusterState, app: str) -> list[int]:
    """The numbers of ``app``'s stored revisions, oldest first."""
    return sorted(n for (name, n) in state.revisions if name == app)


def revision_hash(spec: AppSpec, restarted_at: str = "") -> str:
    """What identifies a revision's containers: the template, and the restart stamp."""
    if not restarted_at:
        return spec.template_hash()
    return hashlib.sha256(f"{spec.template_hash()}@{restarted_at}".encode()).hexdigest()[:12]


def next_revision(kept: Iterable[int], current: int) -> int:
    """The number of a new revision: after every one kept and the ``current`` one."""
    return max({*kept, current}) + 1


def pruned(
    kept: Iterable[int], new: int, in_use: Iterable[int], history: int = REVISION_HISTORY
) -> tuple[int, ...]:
    """The oldest revisions beyond ``history`` once ``new`` is kept, except those still
    in use (run by a replica, or the one a rollback would return to)."""
    numbers = sorted(set(kept) | {new})
    excess = numbers[: max(0, len(numbers) - history)]
    busy = set(in_use) | {new}
    return tuple(n for n in excess if n not in busy)


def undo_target(
    app: str,
    current: int,
    kept: Iterable[int],
    rollout: RolloutRecord | None,
    to_revision: int = 0,
) -> int:
    """The revision ``fleet rollout undo`` points ``app`` back at: ``to_revision`` if
    given (it must be kept); otherwise the one its last rollout came from, unless that
    is the ``current`` one; otherwise the newest kept before the current. Never the
    current one (FailedPrecondition)."""
    numbers = sorted(kept)
    if to_revision < 0:
        raise InvalidArgument("--to-revision must be a revision number (see rollout history)")
    if to_revision:
        to = to_revision
        if to not in numbers:
            raise NotFound(
                f"app {app!r} has no revision {to} (kept: "
                f"{', '.join(map(str, numbers)) or 'none'}; see `fleet rollout history {app}`)"
            )
    else:
        older = [n for n in numbers if n < current]
        if rollout is not None and rollout.from_revision != current:
            to = rollout.from_revision
        elif older:
            to = older[-1]
        else:
            raise FailedPrecondition(f"app {app!r} has no revision before {current} to go back to")
    if to == current:
        raise FailedPrecondition(f"app {app!r} already runs revision {to}")
    return to
