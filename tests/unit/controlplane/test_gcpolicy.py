"""The control plane's process collects only what is young, and everything now and then."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from fleet.controlplane.gcpolicy import GC_THRESHOLDS, YoungCollections


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def collections() -> Iterator[YoungCollections]:
    before = gc.get_threshold()
    policy = YoungCollections()
    policy.install()
    try:
        yield policy
    finally:
        policy.uninstall()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0


def test_survivors_of_any_collection_are_frozen(collections: YoungCollections) -> None:
    assert gc.get_threshold() == GC_THRESHOLDS
    kept = [Node() for _ in range(100)]
    gc.collect(0)
    assert gc.get_freeze_count() >= len(kept)
    young = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
    assert not young & {id(k) for k in kept}, "no collection walks them again"


def test_a_cycle_that_dies_young_is_freed_and_one_frozen_waits_for_the_full_collection(
    collections: YoungCollections,
) -> None:
    young, old = Node(), Node()
    young.other, old.other = young, old  # two cycles: each refers to itself
    young_ref, old_ref = weakref.ref(young), weakref.ref(old)
    del young
    gc.collect(0)
    assert young_ref() is None, "garbage before its first collection is freed"

    gc.collect(0)  # old is alive: frozen
    del old
    gc.collect(0)
    assert old_ref() is not None, "frozen: no collection but the full one walks it"
    assert collections.collect_everything() >= 1
    assert old_ref() is None
    assert gc.get_freeze_count() > 0, "what survived the full collection is frozen again"
