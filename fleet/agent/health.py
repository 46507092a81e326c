"""Health checks: http and tcp checks run by the agent, exec checks read from Docker.

http and tcp checks run from the agent but inside the container's network namespace
(a socket is opened there with ``setns`` and used from the agent's event loop), so they
reach ``127.0.0.1:PORT`` as the app itself does: no published port, no tool in the
image and no route to the container's address are needed, as with kubelet's probes.
exec checks are Docker's own HEALTHCHECK (see ``DockerRuntime.create``).

Status follows Docker's rules: ``starting`` until the first pass, ``healthy`` after a
pass, ``unhealthy`` after ``retries`` failures in a row; failures within
``start_period`` of the start do not count. ``record`` is that rule, pure.

Until its first pass a container is checked sooner than every ``interval``
(``check_delay``: 0.1 s, then doubling up to the interval, as Docker's
``start_interval``), so a replacement that serves at once is seen available at once
(a make-before-break move or a rollout waits for that) instead of an interval after a
first check that came a moment too early. Those early checks cannot make it unhealthy
any sooner: a failure counts only an interval after the last one that counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from fleet.agent.runtime import ObservedContainer
from fleet.proto import fleet_pb2 as pb

__all__ = ["HealthStatus", "Prober", "ProcessGone", "check_delay", "probe", "record"]

log = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
_FIRST_EARLY_CHECK = 0.1  # seconds after a failed check before a container's first pass
_SLACK = 0.05  # seconds: a check due an interval after the last is not early, if a bit soon
_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()


@dataclass(frozen=True)
class HealthStatus:
    status: str  # starting | healthy | unhealthy
    failures: int = 0
    healthy_since: float | None = None
    message: str = ""
    counted_at: float | None = None  # when a failure last counted


def record(
    previous: HealthStatus,
    passed: bool,
    message: str,
    now: float,
    started: float,
    check: pb.HealthCheck,
) -> HealthStatus:
    """The status after one check that ``passed`` or not, at ``now``."""
    if passed:
        since = previous.healthy_since if previous.status == "healthy" else now
        return HealthStatus("healthy", 0, since, message)
    if previous.status != "healthy" and now < started + check.start_period_seconds:
        return replace(previous, message=message)  # still starting: failures do not count
    counted = previous.counted_at
    if (
        previous.status == "starting"
        and counted is not None
        and now < counted + _interval(check) - _SLACK
    ):
        return replace(previous, message=message)  # an early check: it does not count
    failures = previous.failures + 1
    if failures >= max(1, check.retries):
        return HealthStatus("unhealthy", failures, None, message, now)
    return replace(previous, failures=failures, message=message, counted_at=now)


def check_delay(status: HealthStatus, check: pb.HealthCheck, early: int, now: float) -> float:
    """Seconds until the next check after one at ``now``: the interval; before the first
    pass, the ``early``-th delay of 0.1 s doubling (``early`` counts from 0), but never
    past the check an interval after the last failure that counted, which keeps its
    time (so a container that never passes is unhealthy exactly as soon as before)."""
    interval = _interval(check)
    if status.status != "starting":
        return interval
    delay = min(interval, _FIRST_EARLY_CHECK * (1 << min(early, 16)))
    if status.counted_at is not None:
        delay = min(delay, max(_SLACK, status.counted_at + interval - now))
    return delay


def _interval(check: pb.HealthCheck) -> float:
    return max(0.1, float(check.interval_seconds or 2.0))


class ProcessGone(Exception):
    """The container's main process is gone (it stopped, or the container was removed):
    there is nothing to check, and nothing to say about its health."""


def _socket_in(pid: int) -> socket.socket:
    """A TCP socket in the network namespace of process ``pid`` (needs CAP_SYS_ADMIN).

    setns changes only the calling thread's namespace; the lock keeps other checks from
    interleaving, and the thread is switched back before it runs anything else.
    """
    with _setns_lock:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            try:
                target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            except (FileNotFoundError, ProcessLookupError):
                raise ProcessGone(pid) from None
            try:
                if _libc.setns(target, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into the container: {os.strerror(errno)}")
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                finally:
                    if _libc.setns(own, _CLONE_NEWNET) != 0:  # pragma: no cover
                        # A thread stuck in a container's namespace must not run on.
                        os.abort()
            finally:
                os.close(target)
        finally:
            os.close(own)
    sock.setblocking(False)
    return sock


async def probe(check: pb.HealthCheck, pid: int) -> tuple[bool, str]:
    """Run one http or tcp check against the container whose main process is ``pid``;
    ``ProcessGone`` when that process is gone."""
    try:
        return await asyncio.wait_for(_probe(check, pid), check.timeout_seconds or 1.0)
    except TimeoutError:
        return False, f"timed out after {check.timeout_seconds:g}s"
    except OSError as error:
        return False, error.strerror or str(error)


async def _probe(check: pb.HealthCheck, pid: int) -> tuple[bool, str]:
    sock = await asyncio.to_thread(_socket_in, pid)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", check.port))
        if check.kind == "tcp":
            return True, f"port {check.port} accepts connections"
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            request = (
                f"GET {check.path or '/'} HTTP/1.1\r\nHost: localhost:{check.port}\r\n"
                "User-Agent: fleet-agent\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode())
            await writer.drain()
            line = (await reader.readline()).decode(errors="replace").strip()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f"not an HTTP answer: {line[:80]!r}"
        code = int(parts[1])
        return 200 <= code < 400, f"HTTP {code}"
    finally:
        sock.close()


class Prober:
    """Runs the http and tcp checks of the running containers, one task each.

    ``sync`` is called with every fresh list of containers; a container that stops or
    restarts starts over (``starting``). ``on_change`` is called when a status changes,
    so the agent reports it at once.
    """

    def __init__(self, on_change: Callable[[], None], clock: Callable[[], float] = time.time):
        self._on_change = on_change
        self._clock = clock
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}  # (id, started) -> task
        self.statuses: dict[str, HealthStatus] = {}  # container id -> status

    def sync(self, containers: list[ObservedContainer]) -> None:
        wanted = {
            (c.container_id, c.started_at): c
            for c in containers
            if c.state == "running"
            and c.pid
            and c.health_check is not None
            and c.health_check.kind in ("http", "tcp")
        }
        for key in list(self._tasks):
            if key not in wanted:
                self._tasks.pop(key).cancel()
                self.statuses.pop(key[0], None)
        for key, container in wanted.items():
            if key not in self._tasks:
                self.statuses[container.container_id] = HealthStatus("starting")
                self._tasks[key] = asyncio.create_task(self._run(container))

    async def _run(self, container: ObservedContainer) -> None:
        check = container.health_check
        assert check is not None
        started = container.started_epoch or self._clock()
        cid = container.container_id
        early = 0
        while True:
            try:
                passed, message = await probe(check, container.pid)
            except ProcessGone:
                # Stopped or removed since the last look (the next ``sync`` drops it). Not
                # "unhealthy": that report outlived the container and failed a rollout
                # whose new container was placed on this host in the same slot and
                # revision (the soak, seed 25), before that container's own first check.
                log.debug("%s: its process is gone; checks end", container.name)
                return
            before = self.statuses.get(cid, HealthStatus("starting"))
            after = record(before, passed, message, self._clock(), started, check)
            self.statuses[cid] = after
            if after.status != before.status:
                log.info("%s is %s: %s", container.name, after.status, message)
                self._on_change()
            await asyncio.sleep(check_delay(after, check, early, self._clock()))
            early += 1

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
