"""Tests of the revision a container is reported as (``fleet.agent.report``): two
revisions of an app may share a template, and a container kept for its template must
count as the revision the desired set places it as (the soak found a move that never
finished: a container labelled revision 9 kept for a slot placed at revision 7)."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.report import desired_revisions, reported_revision
from fleet.agent.runtime import ObservedContainer
from fleet.proto import fleet_pb2 as pb
from tests.unit.agent.builders import container, spec


def _spec(revision: int, spec_hash: str = "aaaa1111", slot: int = 0) -> pb.ContainerSpec:
    made = spec(slot=slot, spec_hash=spec_hash)
    made.revision = revision
    return made


def _labelled(revision: int, spec_hash: str = "aaaa1111") -> ObservedContainer:
    return dataclasses.replace(container(spec_hash=spec_hash), revision=revision)


def test_a_container_kept_for_its_template_is_reported_as_the_placed_revision() -> None:
    wanted = desired_revisions([_spec(7)])
    assert reported_revision(_labelled(9), wanted) == 7


def test_its_own_revision_when_nothing_wants_its_template() -> None:
    assert reported_revision(_labelled(9), desired_revisions([_spec(7, "bbbb2222")])) == 9
    assert reported_revision(_labelled(9), desired_revisions(None)) == 9


def test_the_newest_wanted_revision_of_its_template() -> None:
    assert reported_revision(_labelled(9), desired_revisions([_spec(7), _spec(9)])) == 9
    # A move from 8 to 12 of one template, its replacement on this same host: the one
    # container counts as the replacement, or the move never finishes.
    assert reported_revision(_labelled(8), desired_revisions([_spec(8), _spec(12)])) == 12


@given(st.integers(1, 50), st.sets(st.integers(1, 50), max_size=4))
def test_always_a_wanted_revision_of_its_template_when_there_is_one(
    label: int, revisions: set[int]
) -> None:
    wanted = desired_revisions([_spec(r) for r in revisions])
    got = reported_revision(_labelled(label), wanted)
    assert got == (max(revisions) if revisions else label)
