"""``fleet agent``: keeps one Docker host in line with the desired set it is sent.

Three loops share one state:
- the connection loop keeps a stream to any control plane in ``--server`` (with
  backoff), registers, sends heartbeats with the containers' status, and stores every
  desired set pushed to it;
- the reconcile loop compares desired with observed and runs the tasks, on every
  push, every Docker event and a timer (level-triggered: a missed wake-up costs
  nothing);
- a thread follows Docker's events and wakes the reconcile loop.

A renewed certificate (its files rewritten while the agent runs) is taken up without a
restart: the stream ends and the next one is opened with the new files
(``fleet.agent.certwatch``).

Until the first desired set arrives (after a restart, or while the control plane is
away) the agent takes the containers it finds as desired: it adopts them, never
duplicates or removes them, and keeps their restart policies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from fleet._time import iso_at
from fleet.agent.certwatch import CertificateWatch
from fleet.agent.events import EventQueue, from_docker, own, restart_events
from fleet.agent.failures import FailureBook
from fleet.agent.health import Prober
from fleet.agent.images import ImageKeeper, stale_images
from fleet.agent.reconcile import Create, Plan, Remove, Start, Stop, Task, plan
from fleet.agent.requests import RequestHandler
from fleet.agent.restarts import Backoff, RestartBook, restart_verdict
from fleet.agent.runtime import (
    FollowedEvents,
    ObservedContainer,
    PushedEvents,
    Runtime,
    call,
    container_name,
)
from fleet.agent.stats import HostUsage
from fleet.errors import FleetError, PullFailed, Unavailable
from fleet.policy import Policy, Privileges, host_violations, prefix_warnings
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.refusals import agent_refused, explain_refusal
from fleet.transport import Transport

__all__ = ["Agent", "AgentConfig"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_REPORT_BATCH = 0.2  # seconds: changes this close together go in one report
_CREATE_FAILURES_SHOWN = 3  # creates refused in a row before the replica says so


@dataclass(frozen=True)
class AgentConfig:
    servers: Sequence[str]
    host_id: str
    transport: Transport  # the agent's own certificate names host_id
    # What containers may ask of this host, whatever the control plane says.
    policy: Policy = field(default_factory=Policy)
    labels: dict[str, str] = field(default_factory=dict)
    resync_seconds: float = 10.0
    parallel_tasks: int = 8  # docker create+start scales to about 8 threads here
    stats_seconds: float = 3.0  # how often live usage is sampled
    # What the host offers fleet, when less than the daemon reports (room kept for the
    # OS and other tenants); None: what `docker info` says.
    cpus: float | None = None
    memory: int | None = None
    # Remove images fleet containers have not used for this long (None: keep them all).
    image_gc_after: float | None = None
    # Where restart counts are kept so they survive an agent restart (None: in memory).
    state_dir: Path | None = None
    reconnect_max: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    # A pull or a Docker call that failed is tried again after this backoff.
    failure_backoff: Backoff = field(default_factory=lambda: Backoff(initial=2.0, cap=60.0))
    # Where this host's published ports answer, for `fleet endpoints` ("" : unknown).
    address: str = ""
    # The OS's own description (ID, VERSION_ID, ...): an upgrade changes it.
    os_release: Path = Path("/etc/os-release")
    # Whether the control plane may have this host run a command (an OS upgrade walk).
    allow_host_commands: bool = False
    # How often the certificate files are looked at: once changed into a usable set,
    # the agent reconnects with them (renewal without a restart).
    cert_check_seconds: float = 2.0


def _adopted(containers: list[ObservedContainer]) -> list[pb.ContainerSpec]:
    """Desired specs that keep what runs as it is (before any desired set arrived)."""
    return [
        pb.ContainerSpec(
            app=c.app,
            slot=c.slot,
            revision=c.revision,
            spec_hash=c.spec_hash,
            restart=c.restart,
            stop_grace_seconds=c.stop_grace,
        )
        for c in containers
    ]


def _statuses(containers: list[ObservedContainer]) -> set[tuple[str, str, int, str]]:
    return {(c.container_id, c.state, c.exit_code, c.docker_health) for c in containers}


@dataclass(frozen=True)
class Held:
    """A desired container the agent cannot run now, and why: ``state`` is what its
    status says instead of Docker's (refused, pull-failed, create-failed, held: the
    control plane holds it)."""

    state: str
    reason: str
    message: str


ReplicaKey = tuple[str, int, int]  # app, slot, revision
TaskKey = tuple[str, str, int, str]  # what, app or container id, slot, template


def _task_key(task: Task) -> TaskKey:
    if isinstance(task, Create):
        return ("create", task.spec.app, task.spec.slot, task.spec.spec_hash)
    return (type(task).__name__.lower(), task.container.container_id, 0, "")


def _task_text(task: Task) -> str:
    if isinstance(task, Create):
        return f"create {task.spec.app}.{task.spec.slot}"
    return f"{type(task).__name__.lower()} {task.container.name}"


def _iso(seconds: float | None) -> str:
    return "" if seconds is None else iso_at(seconds)


def os_facts(path: Path) -> dict[str, str]:
    """os_name, os_version and os_id from an os-release file (none if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isidentifier():
            fields[key.strip()] = value.strip().strip("\"'")
    facts = {
        "os_name": fields.get("NAME", ""),
        "os_version": fields.get("VERSION_ID", "") or fields.get("VERSION", ""),
        "os_id": fields.get("ID", ""),
    }
    return {k: v[:200] for k, v in facts.items() if v}


def _address_towards(server: str) -> str:
    """This host's address on the route to ``server`` (no packet is sent)."""
    host = server.rpartition(":")[0].strip("[]") or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return ""


class Agent:
    def __init__(self, config: AgentConfig, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.desired: list[pb.ContainerSpec] | None = None
        self.desired_version = 0
        self.applied_version = 0
        self.observed: list[ObservedContainer] = []
        # Desired containers that cannot run here now (refused by this host's policy,
        # their image cannot be pulled, dockerd refuses to create them), and why.
        self.held: dict[ReplicaKey, Held] = {}
        # Images whose last pull failed, and tasks whose last try failed: tried again
        # after a backoff, not on every round.
        self.pulls: FailureBook[str] = FailureBook(config.failure_backoff)
        self.task_failures: FailureBook[TaskKey] = FailureBook(config.failure_backoff)
        self._round_failures: FailureBook[str] = FailureBook(config.failure_backoff)
        self._tracebacks: set[tuple[str, str]] = set()  # unexpected errors already logged
        self.usage = HostUsage(0.0, 0, 0, 0.0)
        self._restarts_file = config.state_dir / "restarts.json" if config.state_dir else None
        self.restarts = (
            RestartBook.load(self._restarts_file) if self._restarts_file else RestartBook()
        )
        self.events = EventQueue()
        self._raised: set[tuple[str, int, str]] = set()  # restart events already raised
        self._images = ImageKeeper(config.state_dir / "images.json" if config.state_dir else None)
        self._images_due = 0.0  # monotonic time of the next image collection
        self._first_round = True
        self._starting: set[str] = set()  # containers being restarted this round
        self._requests = RequestHandler(runtime, lambda: self.observed)
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._report_now = asyncio.Event()
        self._parallel = asyncio.Semaphore(config.parallel_tasks)
        self._stop_events = threading.Event()
        self._prober = Prober(self._report_now.set)
        self._commands: set[asyncio.Task[None]] = set()  # host commands being waited for
        tls = config.transport.tls
        self._certs = CertificateWatch(tls) if tls is not None else None

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Run until cancelled."""
        for warning in prefix_warnings(self.config.policy):
            log.warning("%s", warning)
        loop = asyncio.get_running_loop()
        runtime = self.runtime
        if isinstance(runtime, PushedEvents):
            runtime.push_events(lambda raw: self._on_docker_event(loop, raw))
        elif isinstance(runtime, FollowedEvents):
            # A daemon thread: a blocking read of Docker's event stream must never hold
            # up the process's exit.
            events = threading.Thread(
                target=self._follow_docker_events,
                args=(loop, runtime),
                name="docker-events",
                daemon=True,
            )
            events.start()
        try:
            await asyncio.gather(
                self._connection_loop(),
                self._reconcile_loop(),
                self._sample_usage_forever(self.config.stats_seconds),
            )
        finally:
            self._stop_events.set()
            if isinstance(runtime, PushedEvents):
                runtime.push_events(None)
            elif isinstance(runtime, FollowedEvents):
                runtime.stop_events()

    async def _docker(self, method: Callable[..., _T], *args: Any) -> _T:
        return await call(self.runtime, method, *args)

    # ------------------------------------------------------------------ docker events

    def _on_docker_event(self, loop: asyncio.AbstractEventLoop, raw: dict[str, Any]) -> None:
        """Runs in the events thread: queue the event and wake the reconcile loop."""
        event = from_docker(raw)
        if event is not None:
            loop.call_soon_threadsafe(self.events.put, event)
        loop.call_soon_threadsafe(self.wake)

    def _follow_docker_events(
        self, loop: asyncio.AbstractEventLoop, runtime: FollowedEvents
    ) -> None:
        delay = 0.2
        while not self._stop_events.is_set():
            try:
                runtime.events(lambda e: self._on_docker_event(loop, e), self._stop_events)
                delay = 0.2
            except Exception as error:  # dockerd restarting: follow again after a pause
                log.debug("docker events stream broke: %s", error)
                loop.call_soon_threadsafe(self.wake)
                if self._stop_events.wait(delay):
                    return
                delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ reconcile

    def _log_failure(self, message: str, error: BaseException) -> None:
        """A failure in the log: fleet's own errors in a line, anything unexpected with
        its traceback the first time (then in a line: a loop must not fill the disk)."""
        seen = (type(error).__name__, str(error))
        if isinstance(error, FleetError) or seen in self._tracebacks:
            log.warning("%s", message)
            return
        self._tracebacks.add(seen)
        log.error("%s", message, exc_info=error)

    async def _reconcile_loop(self) -> None:
        while True:
            look_again: float | None = None
            try:
                look_again = await self.reconcile_once()
                if self._round_failures.succeeded("round"):
                    log.info("reconciling works again")
            except Exception as error:
                # Whatever a round raises ends that round only: it is said once, and
                # the next round comes after a backoff (dockerd restarting, say).
                now = time.time()
                text = str(error) if isinstance(error, FleetError) else repr(error)
                if self._round_failures.failed("round", "reconcile-failed", text, now):
                    self._log_failure(f"reconcile failed: {text}", error)
                    self.events.put(own("reconcile-failed", text[:500]))
                look_again = self._round_failures.next_retry()
            timeout = self.config.resync_seconds
            if look_again is not None:
                timeout = max(0.05, min(timeout, look_again - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # (wait_for may swallow a cancel)
                    await self._wake.wait()
            self._wake.clear()

    async def reconcile_once(self) -> float | None:
        """One round: observe, plan, act. Returns when a backoff wants a look again."""
        version = self.desired_version
        observed_before, held_before = self.observed, dict(self.held)
        observed = await self._docker(self.runtime.list_containers)
        self.observed = observed
        self._prober.sync(observed)
        if self._first_round:
            for container in observed:
                self.events.put(own("adopted", f"found running as {container.name}", container))
            self._first_round = False
        desired = self.desired if self.desired is not None else _adopted(observed)
        now = time.time()
        planned = plan(desired, observed, self.restarts, now, self.config.backoff)
        look_again = planned.look_again
        for key, event in restart_events(observed, self.restarts, self.config.backoff, now):
            if key not in self._raised:
                self._raised.add(key)
                self.events.put(event)
        wanted = {(c.app, c.slot, c.revision) for c in desired}
        present = {(c.app, c.slot, c.revision) for c in observed}
        self.held = {k: v for k, v in self.held.items() if k in wanted and k not in present}
        self._hold(desired, present)
        self.task_failures.forget_except(_task_key(t) for t in planned.tasks)
        # New images are pulled before anything stops: a replica replaced in place must
        # not be down for the length of a pull (or for good, if the pull fails).
        await self._pull_images([t for t in planned.tasks if isinstance(t, Create)])
        ready = self._ready(planned, desired, time.time())
        tasks = ready.tasks
        for retry in (self.pulls.next_retry(), self.task_failures.next_retry()):
            if retry is not None:
                look_again = retry if look_again is None else min(look_again, retry)
        # Each phase runs concurrently; a new desired set arriving meanwhile ends the
        # round early.
        for phase in ready.phases:
            if self.desired_version != version:
                break
            await asyncio.gather(*(self._bounded(t) for t in phase))
        if tasks:
            self.observed = await self._docker(self.runtime.list_containers)
            self._prober.sync(self.observed)
        self._starting.clear()
        if _statuses(self.observed) != _statuses(observed_before) or self.held != held_before:
            self._report_now.set()  # tell the control plane now, not at the next beat
        self.restarts.forget_except(c.container_id for c in self.observed)
        live_ids = {c.container_id for c in self.observed}
        self._raised = {k for k in self._raised if k[0] in live_ids}
        if self._restarts_file is not None and tasks:
            await asyncio.to_thread(self.restarts.save, self._restarts_file)
        if self.desired is not None and self.desired_version == version:
            self.applied_version = version
        if self.config.image_gc_after is not None:
            # Every image desired now counts as used now, even between two collections.
            self._images.saw([c.image for c in desired if c.image], time.time())
        if self.config.image_gc_after is not None and time.monotonic() >= self._images_due:
            self._images_due = time.monotonic() + min(30.0, self.config.image_gc_after)
            try:
                await self._collect_images()
            except Exception as error:  # the containers come first: collect next time
                self._log_failure(f"image collection failed: {error!r}", error)
        return look_again

    def _ready(self, planned: Plan, desired: list[pb.ContainerSpec], now: float) -> Plan:
        """The tasks to run this round: not those waiting out a failure's backoff, nor
        creates whose image could not be pulled; and a container being replaced in place
        stays while its replacement's image cannot be pulled (it may serve on, and a
        rollback will want it back)."""
        wanted = {(c.app, c.slot, c.spec_hash) for c in desired}
        unpulled = set()
        for task in planned.tasks:
            if not isinstance(task, Create):
                continue
            spec = task.spec
            key = (spec.app, spec.slot, spec.revision)
            failure = self.pulls.get(spec.image)
            if failure is not None:
                unpulled.add((spec.app, spec.slot))
                self.held[key] = Held("pull-failed", failure.reason, failure.message)
            elif key in self.held and self.held[key].state == "pull-failed":
                del self.held[key]

        def ready(task: Task) -> bool:
            if isinstance(task, Create) and (task.spec.app, task.spec.slot) in unpulled:
                return False
            if (
                isinstance(task, Remove)
                and (task.container.app, task.container.slot) in unpulled
                and task.container.key not in wanted
            ):
                return False
            return self.task_failures.due(_task_key(task), now)

        return planned.only(ready)

    async def _collect_images(self) -> None:
        """Forget-and-remove images no container has used for ``image_gc_after``."""
        now = time.time()
        in_use = await self._docker(self.runtime.images_in_use)
        self._images.saw(in_use & set(self._images.last_used), now)
        assert self.config.image_gc_after is not None
        for image in stale_images(self._images.last_used, in_use, now, self.config.image_gc_after):
            if await self._docker(self.runtime.remove_image, image):
                log.info("removed image %s: unused for %gs", image, self.config.image_gc_after)
                self.events.put(own("image-removed", image))
                self._images.forget(image)
        await asyncio.to_thread(self._images.save)

    async def _pull_images(self, creates: list[Create]) -> None:
        """Pull what new containers need: each image once, however many replicas want
        it; an image whose pull failed waits for its backoff."""
        by_image: dict[str, list[pb.ContainerSpec]] = {}
        for task in creates:
            spec = task.spec
            asked = Privileges.of_container(spec)
            if spec.image and not host_violations(asked, self.config.policy):
                by_image.setdefault(spec.image, []).append(spec)
        self.pulls.forget_except(by_image)  # an undo or a fixed image ends a failure
        now = time.time()
        await asyncio.gather(
            *(self._pull(i, specs) for i, specs in by_image.items() if self.pulls.due(i, now))
        )

    async def _pull(self, image: str, specs: list[pb.ContainerSpec]) -> None:
        async with self._parallel:
            try:
                pulled = await self._docker(self.runtime.ensure_image, image)
            except PullFailed as error:
                self._pull_failed(image, specs, error)
                return
            except Exception as error:  # dockerd itself away: the round tries again
                self._log_failure(f"pulling {image} failed: {error}", error)
                return
        if self.pulls.succeeded(image):
            log.info("pulled %s after failures", image)
        if pulled:
            for app in sorted({s.app for s in specs}):
                self.events.put(own("image-pulled", image, app=app))

    def _pull_failed(self, image: str, specs: list[pb.ContainerSpec], error: PullFailed) -> None:
        """Remember the failure; say it once per app and reason (not on every retry)."""
        if not self.pulls.failed(image, error.reason, str(error), time.time()):
            return
        failure = self.pulls.get(image)
        assert failure is not None
        log.warning("%s; trying again in %gs", error, failure.retry_at - time.time())
        for app in sorted({s.app for s in specs}):
            slots = sorted(s.slot for s in specs if s.app == app)
            replicas = f"{len(slots)} replica{'s' if len(slots) > 1 else ''}"
            self.events.put(own(error.reason, f"{error} ({replicas})", app=app, slot=slots[0]))

    async def _bounded(self, task: Task) -> None:
        if isinstance(task, Remove) and task.container.state == "running":
            delay = task.container.shutdown_delay
            if delay:
                # The control plane already took it out of the endpoints; let load
                # balancers catch up before it stops serving.
                log.info("stopping %s in %gs: %s", task.container.name, delay, task.reason)
                await asyncio.sleep(delay)
        async with self._parallel:
            await self._execute(task)

    async def _execute(self, task: Task) -> None:
        """Run one task. Whatever it raises is that task's failure only: said once,
        tried again after a backoff, while every other container is served."""
        try:
            await self._run_task(task)
        except Exception as error:
            self._task_failed(task, error)
        else:
            if self.task_failures.succeeded(_task_key(task)):
                log.info("%s worked after failures", _task_text(task))

    def _task_failed(self, task: Task, error: Exception) -> None:
        if isinstance(error, PullFailed) and isinstance(task, Create):
            self._pull_failed(task.spec.image, [task.spec], error)
            return
        detail = str(error) if isinstance(error, FleetError) else repr(error)
        message = f"{_task_text(task)} failed: {detail}"
        news = self.task_failures.failed(_task_key(task), "task-failed", message, time.time())
        failure = self.task_failures.get(_task_key(task))
        # dockerd answered and refused, again and again: the replica's status says why
        # it is not up (and a rollout of it fails). Once may be a hiccup.
        if (
            isinstance(task, Create)
            and not isinstance(error, Unavailable)
            and failure is not None
            and failure.count >= _CREATE_FAILURES_SHOWN
        ):
            key = (task.spec.app, task.spec.slot, task.spec.revision)
            self.held[key] = Held("create-failed", "create-failed", message[:1000])
        if not news:
            return
        self._log_failure(message, error)
        if isinstance(task, Create):
            app, slot = task.spec.app, task.spec.slot
        else:
            app, slot = task.container.app, task.container.slot
        self.events.put(own("task-failed", message[:1000], app=app, slot=slot))

    async def _run_task(self, task: Task) -> None:
        if isinstance(task, Remove):
            log.info("removing %s: %s", task.container.name, task.reason)
            await self._docker(
                self.runtime.stop_and_remove,
                task.container.container_id,
                task.container.stop_grace,
            )
        elif isinstance(task, Create):
            spec = task.spec
            key = (spec.app, spec.slot, spec.revision)
            refused = host_violations(Privileges.of_container(spec), self.config.policy)
            if refused:
                self._refuse(key, refused)
                return
            if await self._docker(self.runtime.ensure_image, spec.image):
                self.events.put(own("image-pulled", spec.image, app=spec.app, slot=spec.slot))
            await self._docker(
                self.runtime.remove_by_name, container_name(spec.app, spec.slot, spec.spec_hash)
            )
            container_id = await self._docker(self.runtime.create, spec)
            if Privileges.of_container(spec).bind_mounts:
                # Again on what Docker recorded, right before the start mounts it.
                sources = await self._docker(self.runtime.bind_sources, container_id)
                if await self._refused_mounts(container_id, key, sources):
                    return
            self.held.pop(key, None)
            await self._docker(self.runtime.start, container_id)
            log.info("started %s.%d (%s)", spec.app, spec.slot, container_id[:12])
        elif isinstance(task, Stop):
            log.info("stopping %s: %s", task.container.name, task.reason)
            await self._docker(
                self.runtime.stop, task.container.container_id, task.container.stop_grace
            )
        elif isinstance(task, Start):
            container = task.container
            key = (container.app, container.slot, container.revision)
            if await self._refused_mounts(container.container_id, key, container.bind_sources):
                return
            log.info("starting %s: %s", task.container.name, task.reason)
            # Until the round lists containers again, `observed` still shows this one
            # exited: it must not look failed in a heartbeat meanwhile.
            self._starting.add(task.container.container_id)
            if task.container.state != "created":
                self.restarts.record(task.container, self.config.backoff)
                if self._restarts_file is not None:  # before the start: a crash keeps it
                    await asyncio.to_thread(self.restarts.save, self._restarts_file)
            await self._docker(self.runtime.start, task.container.container_id)

    def _hold(self, desired: list[pb.ContainerSpec], present: set[ReplicaKey]) -> None:
        """Hold the replicas the control plane holds (``plan`` makes none of them) that
        have no container here: their status says why; said once. One it holds no
        longer is made this round."""
        for spec in desired:
            key = (spec.app, spec.slot, spec.revision)
            if not spec.held or key in present:
                if key in self.held and self.held[key].state == "held":
                    del self.held[key]
                continue
            held = Held("held", "held", spec.held[:1000])
            if self.held.get(key) != held:
                log.warning("not starting %s.%d: %s", spec.app, spec.slot, held.message)
                self.events.put(own("held", held.message, app=spec.app, slot=spec.slot))
            self.held[key] = held

    def _refuse(self, key: ReplicaKey, refused: list[str]) -> None:
        """Hold a replica this host's policy refuses: its status says why; said once."""
        app, slot, _ = key
        message = f"refused by this host's policy: {', '.join(refused)}"
        held = Held("refused", "refused", message)
        if self.held.get(key) != held:
            log.warning("not starting %s.%d: %s", app, slot, message)
            self.events.put(own("refused", message, app=app, slot=slot))
        self.held[key] = held

    async def _refused_mounts(
        self, container_id: str, key: ReplicaKey, sources: tuple[str, ...]
    ) -> bool:
        """Whether a container must not start because of what its bind sources lead to
        now (every start mounts them again, following symlinks: a folder swapped for a
        symlink since the last check would take the mount out of its prefix). Such a
        container is removed and its replica held as refused."""
        if not sources:
            return False
        refused = host_violations(Privileges(bind_mounts=sources), self.config.policy)
        if not refused:
            return False
        await self._docker(self.runtime.stop_and_remove, container_id, 0)
        self._refuse(key, refused)
        return True

    # ------------------------------------------------------------------ connection

    async def _connection_loop(self) -> None:
        delay = 0.2
        attempt = 0
        while True:
            server = self.config.servers[attempt % len(self.config.servers)]
            attempt += 1
            try:
                renewed = await self._session(server)
                delay = 0.2
                if renewed:
                    continue  # reconnect at once, with the new certificate
            except grpc.aio.AioRpcError as error:
                details = error.details() or ""
                refused = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
                if error.code() in refused:
                    # The control plane refuses who this agent is (its certificate names
                    # another host): no retry can change that, so the agent stops.
                    tls = self.config.transport.tls
                    raise agent_refused(self.config.host_id, server, details, tls) from None
                transport, now = self.config.transport, datetime.now(UTC)
                detail = explain_refusal(details, transport, server, now) or details
                log.warning("control plane %s: %s; retrying in %.1fs", server, detail, delay)
            except (FleetError, OSError) as error:
                log.warning("control plane %s: %s; retrying in %.1fs", server, error, delay)
            except Exception as error:  # a bug must cost a reconnect, never the agent
                self._log_failure(f"session with {server} failed: {error!r}", error)
            finally:
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.reconnect_max)

    async def _register_message(self) -> pb.AgentMessage:
        cpus, memory, facts = await self._docker(self.runtime.host_facts)
        facts.update(await asyncio.to_thread(os_facts, self.config.os_release))
        cpus = min(cpus, self.config.cpus) if self.config.cpus is not None else cpus
        memory = min(memory, self.config.memory) if self.config.memory is not None else memory
        return pb.AgentMessage(
            register=pb.Register(
                host_id=self.config.host_id,
                capacity=pb.Resources(cpu=cpus, memory_bytes=memory),
                labels=self.config.labels,
                facts=facts,
                address=self.config.address
                or await asyncio.to_thread(_address_towards, self.config.servers[0]),
            )
        )

    async def _sample_usage_forever(self, every: float) -> None:
        """Keep ``self.usage`` fresh for heartbeats; a failed round keeps the last one."""
        while True:
            try:
                self.usage = await self._docker(self.runtime.sample_usage)
            except Exception as error:  # dockerd away: usage is simply not refreshed
                log.debug("usage sampling failed: %s", error)
            await asyncio.sleep(every)

    def _health(self, container: ObservedContainer) -> tuple[str, str, str]:
        """(health, ready since, message) as reported to the control plane."""
        if container.state != "running":
            return ("", "", "")
        check = container.health_check
        if check is None:
            return ("", _iso(container.started_epoch), "")
        if check.kind == "exec":
            since = container.docker_healthy_since
            return (
                container.docker_health or "starting",
                _iso(since),
                container.docker_health_output,
            )
        probed = self._prober.statuses.get(container.container_id)
        if probed is None:
            return ("starting", "", "")
        return (probed.status, _iso(probed.healthy_since), probed.message)

    def _status(self, container: ObservedContainer) -> pb.ContainerStatus:
        status = container.to_status()
        status.health, status.ready_since, message = self._health(container)
        if status.health == "unhealthy":
            status.message = message
        status.restarts = self.restarts.count(container.container_id)
        usage = self.usage.per_container.get(container.container_id)
        if usage is not None and container.state == "running":
            status.cpu, status.memory_bytes, status.memory_limit = usage
        verdict = restart_verdict(container, self.restarts, self.config.backoff, time.time())
        if container.container_id not in self._starting and verdict.action == "limit":
            status.state = "failed"
            status.message = f"restart limit of {container.restart} reached; left for ops"
        return status

    def _heartbeat(self) -> pb.AgentMessage:
        return pb.AgentMessage(
            heartbeat=pb.Heartbeat(
                usage=pb.Resources(cpu=self.usage.cpu, memory_bytes=self.usage.memory),
                containers=[self._status(c) for c in self.observed]
                + [
                    pb.ContainerStatus(
                        app=app,
                        slot=slot,
                        revision=revision,
                        state=held.state,
                        reason=held.reason,
                        message=held.message,
                    )
                    for (app, slot, revision), held in sorted(self.held.items())
                ],
                applied_version=self.applied_version,
                images=self.usage.images,
            )
        )

    async def _watch_certificate(self, call: grpc.aio.Call, renewed: asyncio.Event) -> None:
        """End the stream (``call``) once the certificate files changed into a usable
        set: the next connection presents the new certificate."""
        assert self._certs is not None
        while True:
            await asyncio.sleep(self.config.cert_check_seconds)
            serial = await asyncio.to_thread(self._certs.renewed)
            if serial is not None:
                log.info(
                    "the certificate %s changed (serial %s): reconnecting with it",
                    self._certs.files.cert,
                    serial,
                )
                renewed.set()
                call.cancel()
                return

    async def _session(self, server: str) -> bool:
        """One stream with ``server``, until it ends; True when it ended because the
        certificate was renewed (reconnect at once)."""
        outbox: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()
        await outbox.put(await self._register_message())

        async def outgoing() -> AsyncIterator[pb.AgentMessage]:
            while True:
                yield await outbox.get()

        if self._certs is not None:
            self._certs.mark()  # before the channel reads the files
        async with self.config.transport.aio_channel(server) as channel:
            stub = pb_grpc.AgentServiceStub(channel)
            call = stub.Connect(outgoing())
            heartbeats: asyncio.Task[None] | None = None
            senders: asyncio.Task[None] | None = None
            renewed = asyncio.Event()
            watcher = (
                asyncio.create_task(self._watch_certificate(call, renewed))
                if self._certs is not None
                else None
            )

            async def respond(response: pb.ContainerResponse) -> None:
                await outbox.put(pb.AgentMessage(response=response))

            first_set = True
            try:
                async for message in call:
                    kind = message.WhichOneof("kind")
                    if kind == "registered":
                        log.info("registered with %s as %s", server, message.registered.host_id)
                        self.connected.set()
                        heartbeats = asyncio.create_task(
                            self._send_heartbeats(outbox, message.registered.heartbeat_seconds)
                        )
                        senders = asyncio.create_task(self._send_events(outbox))
                    elif kind == "request":
                        self._requests.submit(message.request, respond)
                    elif kind == "desired" and (
                        # Versions rise with etcd's revision; an older set from a lagging
                        # server is ignored, except the first one of a new stream.
                        first_set or message.desired.version >= self.desired_version
                    ):
                        self.desired = list(message.desired.containers)
                        self.desired_version = message.desired.version
                        first_set = False
                        self.wake()
                        if message.desired.HasField("command"):
                            await self._host_command(message.desired.command)
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                current = asyncio.current_task()
                if renewed.is_set() and not (current is not None and current.cancelling()):
                    return True  # the stream we ended ourselves, to renew
                raise
            finally:
                for task in (heartbeats, senders, watcher):
                    if task is not None:
                        task.cancel()
                self._requests.cancel_all()
                call.cancel()
            return renewed.is_set()

    async def _host_command(self, command: pb.HostCommand) -> None:
        """Run an upgrade command once per id: detached, so it may restart the agent
        itself; the id is written down first, so a restart never runs it again."""
        done_file = (self.config.state_dir or Path(".")) / "commands.json"
        try:
            done = set(json.loads(done_file.read_text()))
        except (OSError, ValueError, TypeError):
            done = set()
        if command.id in done:
            return
        if not self.config.allow_host_commands:
            log.warning(
                "refusing host command %s: start the agent with --allow-host-commands", command.id
            )
            self.events.put(
                own("host-command-refused", "the agent was not started with --allow-host-commands")
            )
            done.add(command.id)
        else:
            log.info("running host command %s: %s", command.id, command.command)
            self.events.put(own("host-command", f"running: {command.command}"))
            done.add(command.id)
        done_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = done_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(sorted(done)))
        temporary.replace(done_file)
        if self.config.allow_host_commands:
            output = done_file.parent / f"command-{command.id}.log"
            with output.open("ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    "sh",
                    "-c",
                    command.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # it outlives the agent if it restarts it
                    env={**os.environ, "FLEET_HOST_ID": self.config.host_id},
                )
            self._commands.add(asyncio.create_task(self._report_exit(command, process)))

    async def _report_exit(
        self, command: pb.HostCommand, process: asyncio.subprocess.Process
    ) -> None:
        code = await process.wait()
        log.info("host command %s exited with %d", command.id, code)
        self.events.put(own("host-command-exited", f"exit code {code}: {command.command}"))

    async def _send_events(self, outbox: asyncio.Queue[pb.AgentMessage]) -> None:
        while True:
            await self.events.ready.wait()
            batch = self.events.take()
            if batch:
                await outbox.put(pb.AgentMessage(events=pb.EventBatch(events=batch)))

    async def _send_heartbeats(self, outbox: asyncio.Queue[pb.AgentMessage], every: float) -> None:
        while True:
            self._report_now.clear()
            await outbox.put(self._heartbeat())
            try:
                async with asyncio.timeout(max(every, 0.1)):  # (wait_for may swallow a cancel)
                    await self._report_now.wait()
            except TimeoutError:
                continue
            # A change goes out at once, but the changes that follow it within
            # _REPORT_BATCH go with it (Nomad's client batches allocation updates every
            # 200 ms too): a host starting a hundred containers sends a few reports, not
            # a hundred, each of which the control plane compares container by container.
            await asyncio.sleep(_REPORT_BATCH)

    def __repr__(self) -> str:
        return f"Agent({self.config.host_id!r})"
