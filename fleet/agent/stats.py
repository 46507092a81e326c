"""Live usage of a host: cpu and memory of every running container, fleet's or not.

Docker's ``stats(stream=False)`` blocks about a second per container; with
``one_shot=True`` it answers in milliseconds but gives one cumulative cpu counter, so
the rate comes from two samples a few seconds apart (the pure ``cpu_rate``).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker.errors

__all__ = ["HostUsage", "UsageSampler", "cpu_rate", "memory_in_use"]

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


def cpu_rate(previous: tuple[int, float] | None, current: tuple[int, float]) -> float:
    """Cores used between two samples of (cumulative cpu ns, monotonic seconds)."""
    if previous is None or current[1] <= previous[1] or current[0] < previous[0]:
        return 0.0
    return (current[0] - previous[0]) / 1e9 / (current[1] - previous[1])


class UsageSampler:
    """Samples every running container of one daemon, a few threads at a time."""

    def __init__(self, client_factory: Any, *, threads: int = 8) -> None:
        self._client = client_factory
        self._threads = threads
        self._last: dict[str, tuple[int, float]] = {}

    def _one(self, container_id: str) -> tuple[str, int, int, int] | None:
        try:
            stats = self._client().api.stats(container_id, stream=False, one_shot=True)
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
