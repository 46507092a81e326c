"""Reading a container's usage from its cgroup files, and the cpu rate between samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.agent.stats import _cgroup_paths, cgroup_usage, cpu_rate, memory_in_use


def _fake_v1(root: Path, pid: int, usage: int, inactive: int, cpu_ns: int) -> None:
    paths = _cgroup_paths(pid)
    if "memory" not in paths or "cpuacct" not in paths:
        pytest.skip("this machine runs cgroup v2; the v1 layout is read elsewhere")
    memory = root / "memory" / paths["memory"].lstrip("/")
    memory.mkdir(parents=True, exist_ok=True)
    (memory / "memory.usage_in_bytes").write_text(f"{usage}\n")
    (memory / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {inactive}\n")
    cpu = root / "cpuacct" / paths["cpuacct"].lstrip("/")
    cpu.mkdir(parents=True, exist_ok=True)
    (cpu / "cpuacct.usage").write_text(f"{cpu_ns}\n")


def test_cgroup_v1_usage_is_memory_less_reclaimable_cache(tmp_path: Path) -> None:
    _fake_v1(tmp_path, os.getpid(), usage=100 << 20, inactive=30 << 20, cpu_ns=5_000_000_000)
    assert cgroup_usage(os.getpid(), tmp_path) == (5_000_000_000, 70 << 20)


def test_missing_cgroup_files_raise_so_the_sampler_falls_back(tmp_path: Path) -> None:
    with pytest.raises((OSError, KeyError)):
        cgroup_usage(os.getpid(), tmp_path)


def test_cpu_rate_and_docker_memory() -> None:
    assert cpu_rate((1_000_000_000, 10.0), (3_000_000_000, 12.0)) == 1.0
    assert cpu_rate(None, (5, 1.0)) == 0.0
    assert cpu_rate((10, 5.0), (5, 6.0)) == 0.0  # a restarted container's counter
    stats = {"memory_stats": {"usage": 100, "stats": {"total_inactive_file": 40}}}
    assert memory_in_use(stats) == 60
