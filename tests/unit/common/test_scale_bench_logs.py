"""The scale benchmark reads the server's log for hosts marked down for silence, and says
how many of those marks came within one TTL: a storm of them at once (the control
plane's own stall, or a starved simulation) reads differently from marks spread over a
run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


def scale() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # scale.py imports _harness beside it
    try:
        spec = importlib.util.spec_from_file_location("scale_bench", BENCHMARKS / "scale.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _mark(stamp: str, host: str) -> str:
    agents = "fleet.controlplane.agents"
    return f"{stamp} WARNING {agents}: host {host}: nothing heard for 15s; marking it down\n"


def test_marks_for_silence_are_counted_with_their_largest_burst(tmp_path: Path) -> None:
    first, restarted = tmp_path / "server-1.log", tmp_path / "server-2.log"
    first.write_text(
        "2026-12-06 11:50:00,000 INFO fleet.controlplane.agents: host h1 connected\n"
        + _mark("2026-12-06 11:50:01,000", "h1")
        + _mark("2026-12-06 11:50:20,000", "h2")
        + _mark("2026-12-06 11:50:30,500", "h3")
        + _mark("2026-12-06 11:50:34,999", "h4")
        + "2026-12-06 11:50:34,999 WARNING fleet.controlplane.controller: 4 of 6 hosts are "
        "down at once: their replicas stay where they are while 55% or more are ...\n"
        + "2026-12-06 11:50:35,000 ERROR fleet.x: something\n"
    )
    restarted.write_text(_mark("2026-12-06 11:50:35,000", "h5"))
    counts = scale().log_counts([first, restarted], 15.0)
    assert counts["hosts_silent"] == 5
    assert counts["hosts_silent_most_within_ttl"] == 4  # 11:50:20-11:50:35
    assert counts["warnings"] == 6 and counts["errors"] == 1
    assert counts["moves_held"] == 1


def test_the_most_within_a_window() -> None:
    most_within = scale().most_within
    assert most_within([], 15) == 0
    assert most_within([7.0], 15) == 1
    assert most_within([40.0, 0.0, 1.0, 2.0, 20.0, 21.0, 22.0, 23.0], 15) == 4
    assert most_within([0.0, 15.0], 15) == 2 and most_within([0.0, 15.1], 15) == 1
