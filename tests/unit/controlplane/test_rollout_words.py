"""Tests of the words ``get apps`` and ``rollout history`` say of a rollout: never
``complete`` for an app with nothing up, never ``progressing`` while paused."""

from __future__ import annotations

from typing import Any

from fleet.controlplane.appstatus import revision_outcome, rollout_word
from fleet.store.records import RolloutRecord


def rollout(**fields: Any) -> RolloutRecord:
    base: dict[str, Any] = dict(
        app="web",
        revision=2,
        from_revision=1,
        state="complete",
        started_at="t0",
        progress_at="t0",
        updated_at="t0",
    )
    return RolloutRecord(**{**base, **fields})


def test_complete_with_fewer_available_than_wanted_is_degraded() -> None:
    assert rollout_word(rollout(), available=0, desired=2) == "degraded"
    assert rollout_word(rollout(), available=2, desired=2) == "complete"


def test_a_paused_rollout_says_paused() -> None:
    assert rollout_word(rollout(state="progressing", paused=True), 1, 2) == "paused"
    assert rollout_word(rollout(state="progressing"), 1, 2) == "progressing"


def test_failed_and_unknown() -> None:
    assert rollout_word(rollout(state="failed"), 0, 2) == "failed"
    assert rollout_word(None, 0, 2) == ""


def test_history_outcomes_from_a_rollback() -> None:
    # Revision 2 crash-looped and was rolled back to 1 (the rollback is revision 1's).
    back = rollout(revision=1, from_revision=1, rollback_of=2, failure="replica 0 crash-looping")
    assert revision_outcome(back, 2) == (
        "rolled back",
        "replica 0 crash-looping; rolled back to revision 1",
    )
    assert revision_outcome(back, 1) == ("complete", "")
    failed = rollout(revision=3, from_revision=1, state="failed", failure="deadline passed")
    assert revision_outcome(failed, 3) == ("failed", "deadline passed")
    assert revision_outcome(failed, 1) == ("complete", "")
    assert revision_outcome(failed, 2) == ("", "")
