"""Reading a container's usage from its cgroup files, and the cpu rate between samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.agent.stats import (
    CgroupsUnseen,
    cgroup_usage,
    cpu_rate,
    memory_in_use,
)

V1_CGROUP = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"


def _fake_proc(proc: Path, pid: int, cgroup: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(cgroup)


def test_cgroup_v1_usage_is_memory_less_reclaimable_cache(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    _fake_proc(proc, 42, V1_CGROUP)
    memory, cpu = root / "memory/docker/abc", root / "cpuacct/docker/abc"
    memory.mkdir(parents=True)
    cpu.mkdir(parents=True)
    (memory / "memory.usage_in_bytes").write_text(f"{100 << 20}\n")
    (memory / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {30 << 20}\n")
    (cpu / "cpuacct.usage").write_text("5000000000\n")
    assert cgroup_usage(42, root, proc) == (5_000_000_000, 70 << 20)


def test_missing_cgroup_files_raise_so_the_sampler_falls_back(tmp_path: Path) -> None:
    with pytest.raises((OSError, KeyError)):
        cgroup_usage(os.getpid(), tmp_path)


def test_cpu_rate_and_docker_memory() -> None:
    assert cpu_rate((1_000_000_000, 10.0), (3_000_000_000, 12.0)) == 1.0
    assert cpu_rate(None, (5, 1.0)) == 0.0
    assert cpu_rate((10, 5.0), (5, 6.0)) == 0.0  # a restarted container's counter
    stats = {"memory_stats": {"usage": 100, "stats": {"total_inactive_file": 40}}}
    assert memory_in_use(stats) == 60


def test_cgroup_v2_usage_at_the_path_the_process_names(tmp_path: Path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    _fake_proc(proc, 42, "0::/system.slice/docker-abc.scope\n")
    unified = root / "system.slice/docker-abc.scope"
    unified.mkdir(parents=True)
    (unified / "memory.current").write_text("1000\n")
    (unified / "memory.stat").write_text("anon 600\ninactive_file 300\n")
    (unified / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\n")
    assert cgroup_usage(42, root, proc) == (2_500_000, 700)


@pytest.mark.parametrize(
    "cgroup",
    [
        "0::/../docker-abc.scope\n",  # v2, the agent in a cgroup namespace of its own
        "5:memory:/../abc\n3:cpuacct:/../abc\n0::/\n",  # v1, likewise (--cgroupns private)
        "0::/\n",  # the agent's own container then: the whole host's usage is not its
    ],
)
def test_paths_outside_the_agents_cgroup_namespace_say_how_to_fix_it(
    tmp_path: Path, cgroup: str
) -> None:
    _fake_proc(tmp_path, 42, cgroup)
    with pytest.raises(CgroupsUnseen, match="--cgroupns host"):
        cgroup_usage(42, tmp_path / "cgroup", tmp_path)


def test_a_cgroup_tree_that_is_not_the_hosts_says_how_to_fix_it(tmp_path: Path) -> None:
    """On cgroup v1 a container's own /sys/fs/cgroup shows its own cgroup only."""
    _fake_proc(tmp_path, 42, V1_CGROUP)
    with pytest.raises(CgroupsUnseen, match="mount the host's /sys/fs/cgroup"):
        cgroup_usage(42, tmp_path / "cgroup", tmp_path)
