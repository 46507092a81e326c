"""The benchmarks' harness records how fast the machine was at a run's start and end
(a VM's speed drifts: figures compare only beside it) and says so in its report line."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

HARNESS = Path(__file__).resolve().parents[3] / "benchmarks" / "_harness.py"


def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_harness", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_run_records_and_reports_the_speed_probe_at_its_start_and_end() -> None:
    h = harness()
    facts = h.machine()
    assert 0 < facts["speed_probe_seconds"] < 30
    assert f"speed probe {facts['speed_probe_seconds']:.3f} s, fleet " in h.describe(facts)
    h.ended(facts)
    assert 0 < facts["speed_probe_seconds_at_end"] < 30
    line = h.describe(facts)
    start, end = facts["speed_probe_seconds"], facts["speed_probe_seconds_at_end"]
    assert f"speed probe {start:.3f} s -> {end:.3f} s" in line
    assert f"load {facts['loadavg_at_start']} -> {facts['loadavg_at_end']}" in line
