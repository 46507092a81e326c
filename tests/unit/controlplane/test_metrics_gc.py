"""The garbage collector's pauses are timed while a control plane watches them."""

from __future__ import annotations

import gc

from fleet.controlplane.metrics import Metrics
from fleet.store import ClusterState


def _collections(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("fleet_gc_pause_seconds_count")
    assert value is not None
    return value


def test_each_collection_is_timed_while_watched_and_none_after() -> None:
    metrics = Metrics(lambda: ClusterState(revision=0), lambda: 0)
    metrics.watch_gc()
    metrics.watch_gc()  # twice is once
    try:
        gc.collect()
        gc.collect(0)
        assert _collections(metrics) == 2
        total = metrics.registry.get_sample_value("fleet_gc_pause_seconds_sum")
        assert total is not None and total > 0
    finally:
        metrics.unwatch_gc()
    gc.collect()
    assert _collections(metrics) == 2
    metrics.unwatch_gc()  # not watching: nothing to undo
