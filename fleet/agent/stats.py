"""Live usage of a host: cpu and memory of every running container, fleet's or not.

Docker's ``stats(stream=False)`` blocks about a second per container, and even
``one_shot=True`` took about a second per call on a loaded 20.10 daemon here (measured
by benchmarks/agent.py). So the sampler reads each container's cgroup files directly
(microseconds; the agent runs on its host) and asks Docker only where it cannot. Both
give one cumulative cpu counter; the rate comes from two samples (``cpu_rate``).

An agent in a container reads the host's cgroup tree mounted at ``/sys/fs/cgroup`` (on
cgroup v1 a container's own mounts show only its own cgroup) and must see other
containers' cgroup paths whole: in a cgroup namespace of its own (Docker's default on
cgroup v2) ``/proc/PID/cgroup`` shows them as ``/../..``, relative to the agent's own
cgroup, which the agent cannot place in the tree. Either mistake is said once, and
usage then comes from Docker, slowly (``CgroupsUnseen``).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from fleet.agent.logonce import WarnOnce

__all__ = [
    "CgroupsUnseen",
    "HostUsage",
    "UsageSampler",
    "cgroup_usage",
    "cpu_rate",
    "memory_in_use",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostUsage:
    cpu: float  # cores in use, summed over containers
    memory: int  # bytes in use, summed over containers
    containers: int
    seconds: float  # how long the sampling round took
    images: tuple[str, ...] = ()  # what the daemon has, by reference
    # container id -> (cores, bytes in use, memory limit)
    per_container: dict[str, tuple[float, int, int]] = field(default_factory=dict)


def memory_in_use(stats: dict[str, Any]) -> int:
    """What ``docker stats`` shows: usage less the page cache that can be reclaimed."""
    memory = stats.get("memory_stats") or {}
    details = memory.get("stats") or {}
    cache = details.get("total_inactive_file", details.get("inactive_file", 0))
    return max(0, int(memory.get("usage", 0)) - int(cache))


class CgroupsUnseen(OSError):
    """Containers' cgroup files cannot be read from where the agent runs, and why."""


def _cgroup_paths(text: str) -> dict[str, str]:
    """Controller -> cgroup path, from a ``/proc/PID/cgroup`` ("" is the cgroup v2
    unified one)."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller.removeprefix("name=")] = path
    return paths


def _stat(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def cgroup_usage(
    pid: int, root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")
) -> tuple[int, int]:
    """(cumulative cpu ns, memory in use) of the cgroup of ``pid``, v1 or v2; OSError or
    ValueError when the files are not there to read (``CgroupsUnseen`` when they never
    will be)."""
    paths = _cgroup_paths((proc / str(pid) / "cgroup").read_text())
    v1 = "memory" in paths and "cpuacct" in paths
    # In a cgroup namespace of the agent's own, other containers' cgroups show as
    # "/../..." and the agent's own as "/", which no container's really is.
    used = [paths[c] for c in (("memory", "cpuacct") if v1 else ("",))]
    if any(path == "/" or path.startswith("/..") for path in used):
        raise CgroupsUnseen(
            "containers' cgroups lie outside the agent's cgroup namespace: run the agent's "
            "container with --cgroupns host"
        )
    try:
        return _read_usage(paths, root, v1)
    except FileNotFoundError:
        if (proc / str(pid)).exists():  # (else it just exited)
            raise CgroupsUnseen(
                f"containers' cgroup files are not under {root}: mount the host's "
                f"/sys/fs/cgroup there (read-only) in the agent's container"
            ) from None
        raise


def _read_usage(paths: dict[str, str], root: Path, v1: bool) -> tuple[int, int]:
    if v1:
        memory = root / "memory" / paths["memory"].lstrip("/")
        usage = int((memory / "memory.usage_in_bytes").read_text())
        cache = _stat(memory / "memory.stat", "total_inactive_file")
        cpu = int((root / "cpuacct" / paths["cpuacct"].lstrip("/") / "cpuacct.usage").read_text())
        return cpu, max(0, usage - cache)
    unified = root / paths[""].lstrip("/")  # cgroup v2
    usage = int((unified / "memory.current").read_text())
    cache = _stat(unified / "memory.stat", "inactive_file")
    return _stat(unified / "cpu.stat", "usage_usec") * 1000, max(0, usage - cache)


def cpu_rate(previous: tuple[int, float] | None, current: tuple[int, float]) -> float:
    """Cores used between two samples of (cumulative cpu ns, monotonic seconds)."""
    if previous is None or current[1] <= previous[1] or current[0] < previous[0]:
        return 0.0
    return (current[0] - previous[0]) / 1e9 / (current[1] - previous[1])


@functools.cache
def _host_memory() -> int:
    """The limit of a container without one: the machine's memory, as Docker reports."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class UsageSampler:
    """Samples every running container of one daemon, a few threads at a time."""

    def __init__(self, client_factory: Any, *, threads: int = 8) -> None:
        self._client = client_factory
        self._threads = threads
        self._last: dict[str, tuple[int, float]] = {}
        self._from_docker = WarnOnce(log, "live usage comes from Docker's stats API (slow)")

    def _one(self, container_id: str) -> tuple[str, int, int, int] | None:
        api = self._client().api
        try:
            state = api.inspect_container(container_id)
            limit = int(state["HostConfig"].get("Memory") or 0)
            pid = int(state["State"].get("Pid") or 0)
            if pid:
                try:
                    cpu, memory = cgroup_usage(pid)
                    return container_id, cpu, memory, limit or _host_memory()
                except CgroupsUnseen as error:
                    self._from_docker.failed(error)
                except (OSError, ValueError, KeyError):
                    pass
            stats = api.stats(container_id, stream=False, one_shot=True)
        except docker.errors.NotFound:
            return None  # exited between the list and the sample
        total = int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage", 0))
        limit = int((stats.get("memory_stats") or {}).get("limit", 0))
        return container_id, total, memory_in_use(stats), limit

    def sample(self) -> HostUsage:
        started = time.monotonic()
        ids = [c["Id"] for c in self._client().api.containers()]
        with ThreadPoolExecutor(max_workers=self._threads) as pool:
            results = [r for r in pool.map(self._one, ids) if r is not None]
        now = time.monotonic()
        cpu, memory, seen, each = 0.0, 0, {}, {}
        for container_id, total, used, limit in results:
            rate = cpu_rate(self._last.get(container_id), (total, now))
            cpu += rate
            memory += used
            seen[container_id] = (total, now)
            each[container_id] = (rate, used, limit)
        self._last = seen
        images = sorted(
            tag for image in self._client().api.images() for tag in image.get("RepoTags") or []
        )
        return HostUsage(cpu, memory, len(results), now - started, tuple(images), each)
