"""Which fleet containers on a host are this pool's (fleet.agent.ownership), the name a
new container takes beside another pool's, and the labels it carries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fleet.agent.ownership import Claims, sort_out, stranger_message
from fleet.agent.runtime import LABEL_POOL, ObservedContainer, container_labels, free_name
from tests.unit.agent.builders import container, spec

POOL, OTHER = "a" * 32, "b" * 32


def _in(pool: str, item: ObservedContainer) -> ObservedContainer:
    return dataclasses.replace(item, pool=pool)


def test_this_pools_containers_are_ours_another_pools_are_strangers() -> None:
    mine, theirs = _in(POOL, container(slot=0)), _in(OTHER, container(slot=1, state="exited"))
    found = sort_out([mine, theirs], POOL, [spec(slot=0), spec(slot=1)], frozenset())
    assert found.ours == [mine]
    # Even placed here (same app, slot and template: the same name), another pool's
    # container is not taken: the agent makes its own.
    assert [(c, why) for c, why in found.strangers] == [
        (theirs, f"it belongs to pool {OTHER[:12]}, not {POOL[:12]}")
    ]


def test_a_pool_less_container_is_ours_only_where_this_pool_places_that_very_replica() -> None:
    placed, elsewhere, other_template = (
        container(slot=0, state="exited"),
        container(slot=4),
        container(slot=1, spec_hash="cccc3333"),
    )
    desired = [spec(slot=0), spec(slot=1)]
    found = sort_out([placed, elsewhere, other_template], POOL, desired, frozenset())
    assert found.ours == [placed] and found.claimed == [placed.container_id]
    assert [c for c, _ in found.strangers] == [elsewhere, other_template]
    assert "does not place web.4 of template aaaa1111 here" in found.strangers[0][1]


def test_a_claimed_pool_less_container_stays_ours_once_its_slot_moves_away() -> None:
    """Taken once, it is this pool's: the agent removes it itself when no longer
    desired (left as a stranger, it would run on, unknown to the pool)."""
    claimed = container(slot=0)
    found = sort_out([claimed], POOL, [], frozenset({claimed.container_id}))
    assert found.ours == [claimed] and not found.strangers


def test_before_the_first_desired_set_pool_less_containers_wait_to_be_judged() -> None:
    labelled, bare = _in(POOL, container(slot=0)), container(slot=1)
    found = sort_out([labelled, bare], POOL, None, frozenset())
    assert found.ours == [labelled] and not found.strangers and found.undecided == 1


def test_an_unknown_pool_takes_nothing_and_a_control_plane_without_one_takes_all() -> None:
    items = [_in(OTHER, container(slot=0)), container(slot=1)]
    unknown = sort_out(items, None, [spec(slot=0), spec(slot=1)], frozenset())
    assert unknown.ours == [] and not unknown.strangers and unknown.undecided == 2
    assert sort_out(items, "", None, frozenset()).ours == items


def test_the_stranger_event_says_what_was_found_and_how_to_clear_it() -> None:
    theirs = _in(OTHER, container(slot=4, state="exited", container_id="f" * 64))
    text = stranger_message(theirs, "it belongs to pool bbbb")
    assert "web.4.aaaa1111 (ffffffffffff, exited)" in text
    assert "not adopted" in text and "docker rm -f web.4.aaaa1111" in text


def test_claims_are_remembered_and_forgotten_with_their_containers(tmp_path: Path) -> None:
    claims = Claims(tmp_path / "pool.json")
    assert claims.pool_id is None and claims.ids == frozenset()
    assert claims.update(POOL, ["c1", "c2"], present=["c1", "c2", "c3"])
    claims.save()
    again = Claims(tmp_path / "pool.json")
    assert (again.pool_id, again.ids) == (POOL, frozenset({"c1", "c2"}))
    assert again.update(POOL, [], present=["c2"]) and again.ids == frozenset({"c2"})
    assert not again.update(POOL, [], present=["c2"])
    # A host moved to another pool keeps no claim made for the one before.
    assert again.update(OTHER, [], present=["c2"]) and again.ids == frozenset()
    (tmp_path / "bad.json").write_text("[not json")
    assert Claims(tmp_path / "bad.json").pool_id is None


def test_a_new_container_carries_the_pool_and_steps_aside_from_another_pools_name() -> None:
    made = spec(slot=4)
    assert LABEL_POOL not in container_labels(made)
    made.pool_id = POOL
    assert container_labels(made)[LABEL_POOL] == POOL
    name = "web.4.aaaa1111"
    assert free_name(name, POOL, None) == name  # nobody holds it
    assert free_name(name, POOL, POOL) == name  # this pool's leftover: removed first
    assert free_name(name, POOL, OTHER) == f"{name}.{POOL[:8]}"
    assert free_name(name, POOL, "") == f"{name}.{POOL[:8]}"  # a pool-less stranger
    assert free_name(name, "", OTHER) == name  # no pool ids: as before
