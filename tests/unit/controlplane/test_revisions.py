"""Tests of fleet.controlplane.revisions: which revision ``fleet rollout undo`` goes
back to, and how new revisions are numbered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.controlplane.revisions import next_revision, pruned, undo_target
from fleet.errors import FailedPrecondition, InvalidArgument, NotFound
from fleet.store.records import RolloutRecord


def rollout(revision: int, from_revision: int) -> RolloutRecord:
    return RolloutRecord(
        app="web",
        revision=revision,
        from_revision=from_revision,
        state="complete",
        started_at="t0",
        progress_at="t0",
        updated_at="t0",
    )


def test_undo_goes_back_to_where_the_last_rollout_came_from() -> None:
    # Revision 2 was skipped over: the rollout to 4 came from 1.
    assert undo_target("web", 4, [1, 2, 3, 4], rollout(4, 1)) == 1


def test_undo_without_a_rollout_goes_to_the_newest_older_revision() -> None:
    assert undo_target("web", 4, [4, 1, 3], None) == 3


def test_undo_after_an_undo_goes_on_back_not_forth() -> None:
    # The rollout record says it came from the current revision (a rollout back to it
    # finished): the newest older one is next.
    assert undo_target("web", 3, [1, 2, 3], rollout(3, 3)) == 2


def test_undo_to_a_given_revision() -> None:
    assert undo_target("web", 4, [1, 2, 3, 4], rollout(4, 3), to_revision=1) == 1


def test_undo_to_a_revision_not_kept_names_those_kept() -> None:
    with pytest.raises(NotFound, match=r"no revision 7 \(kept: 1, 2; see `fleet rollout history"):
        undo_target("web", 2, [2, 1], None, to_revision=7)


def test_undo_to_a_negative_revision_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="--to-revision must be a revision number"):
        undo_target("web", 2, [1, 2], None, to_revision=-1)


def test_undo_with_nothing_older_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="has no revision before 1 to go back to"):
        undo_target("web", 1, [1], None)


def test_undo_to_the_current_revision_is_refused() -> None:
    with pytest.raises(FailedPrecondition, match="already runs revision 2"):
        undo_target("web", 2, [1, 2], None, to_revision=2)


@given(st.sets(st.integers(1, 50), min_size=1), st.integers(1, 50))
def test_a_new_revision_number_never_comes_back(kept: set[int], current: int) -> None:
    new = next_revision(kept, current)
    assert new not in kept | {current}
    assert new > max(kept | {current})


@given(st.sets(st.integers(1, 40)), st.integers(1, 12), st.sets(st.integers(1, 40)))
def test_pruning_spares_what_is_in_use_and_the_newest(
    kept: set[int], history: int, in_use: set[int]
) -> None:
    new = max(kept | {0}) + 1
    gone = set(pruned(kept, new, in_use, history))
    assert gone <= kept and not gone & (in_use | {new})
    assert len(kept | {new}) - len(gone) >= min(history, len(kept | {new}))
