"""Carrying out a plan: the tasks of each phase run concurrently (at most
``parallel_tasks`` at once) against the runtime.

Every task is checked against this host's policy once more right where it acts (a
create, and the bind mounts again right before each start). Whatever a task raises is
that task's failure only: said once, tried again after a backoff
(``fleet.agent.failures``), while every other container is served. Images are pulled
before anything stops, each once however many replicas want it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from fleet.agent.config import AgentConfig
from fleet.agent.events import own
from fleet.agent.failures import Failure, FailureBook
from fleet.agent.held import ReplicaKey, replica_key
from fleet.agent.logonce import FailureLog
from fleet.agent.previouslogs import MAX_LINES, PreviousLogs
from fleet.agent.reconcile import Create, Plan, Remove, Start, Stop, Task
from fleet.agent.runtime import ObservedContainer, Runtime, call, container_name
from fleet.agent.state import HostState
from fleet.errors import FleetError, NotFound, PullFailed, Unavailable
from fleet.policy import Privileges, host_violations
from fleet.proto import fleet_pb2 as pb

__all__ = ["Executor"]

log = logging.getLogger(__name__)

_CREATE_FAILURES_SHOWN = 3  # creates refused in a row before the replica says so

TaskKey = tuple[str, str, int, str]  # what, app or container id, slot, template


def _task_key(task: Task) -> TaskKey:
    if isinstance(task, Create):
        return ("create", task.spec.app, task.spec.slot, task.spec.spec_hash)
    return (type(task).__name__.lower(), task.container.container_id, 0, "")


def _task_text(task: Task) -> str:
    if isinstance(task, Create):
        return f"create {task.spec.app}.{task.spec.slot}"
    return f"{type(task).__name__.lower()} {task.container.name}"


def _shutdown_delay(task: Task) -> float:
    """Seconds ``task`` waits before it stops a container (its shutdown delay), or 0."""
    if isinstance(task, Remove) and task.container.state == "running":
        return task.container.shutdown_delay
    return 0.0


def _auth(specs: Iterable[pb.ContainerSpec]) -> pb.RegistryAuth | None:
    """The credentials the control plane sent for these replicas' image (the same for
    every replica of one image's registry that may use them), or None."""
    for spec in specs:
        if spec.HasField("registry_auth"):
            return spec.registry_auth
    return None


class Executor:
    """Runs the tasks of the reconcile loop's plans on one host."""

    def __init__(
        self, config: AgentConfig, runtime: Runtime, state: HostState, failures: FailureLog
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.state = state
        self._failures = failures
        # Images whose last pull failed, and tasks whose last try failed: tried again
        # after a backoff, not on every round.
        self.pulls: FailureBook[str] = FailureBook(config.failure_backoff)
        self.task_failures: FailureBook[TaskKey] = FailureBook(config.failure_backoff)
        self._parallel = asyncio.Semaphore(config.parallel_tasks)
        self.previous_logs = PreviousLogs(config.previous_logs_dir)
        # image -> what its last pull was tried with (credentials, mirror): a failure
        # is forgotten when that changes, so a login is tried at once, not after a
        # backoff that grew while the pull had no credentials.
        self._pulled_with: dict[str, tuple[object, ...]] = {}

    # ------------------------------------------------------------------ what is due

    def keep_failures_of(self, tasks: Iterable[Task]) -> None:
        """Forget the failures of tasks no longer planned."""
        self.task_failures.forget_except(_task_key(t) for t in tasks)

    def due(self, task: Task, now: float) -> bool:
        """Whether ``task`` may run: it did not fail, or its backoff is over."""
        return self.task_failures.due(_task_key(task), now)

    def pull_failure(self, image: str) -> Failure | None:
        return self.pulls.get(image)

    def next_retry(self) -> float | None:
        """The earliest time a failed pull or task is due again."""
        retries = (self.pulls.next_retry(), self.task_failures.next_retry())
        return min((r for r in retries if r is not None), default=None)

    # ------------------------------------------------------------------ running a plan

    async def run(self, planned: Plan, current: Callable[[], bool]) -> None:
        """Run the phases in order, each one's tasks concurrently (in turn, for a runtime
        that does not block); once ``current()`` says the plan is stale (a new desired set
        arrived), the next phase is not run."""
        for phase in planned.phases:
            if not current():
                break
            if self.runtime.blocking:
                await asyncio.gather(*(self._bounded(t) for t in phase))
                continue
            # A runtime that does not block (the scale simulator's) does a task's calls
            # at once: an asyncio task for each was only overhead (6% of a process of
            # 250 hollow hosts starting their containers). Those that first wait out a
            # shutdown delay still wait together.
            delayed = [t for t in phase if _shutdown_delay(t)]
            for task in phase:
                if not _shutdown_delay(task):
                    await self._bounded(task)
            await asyncio.gather(*(self._bounded(t) for t in delayed))

    async def pull_images(self, creates: list[Create]) -> None:
        """Pull what new containers need: each image once, however many replicas want
        it; an image whose pull failed waits for its backoff."""
        by_image: dict[str, list[pb.ContainerSpec]] = {}
        for task in creates:
            spec = task.spec
            asked = Privileges.of_container(spec)
            if spec.image and not host_violations(asked, self.config.policy):
                by_image.setdefault(spec.image, []).append(spec)
        self.pulls.forget_except(by_image)  # an undo or a fixed image ends a failure
        for image, specs in by_image.items():
            auth = _auth(specs)
            tried = (auth.SerializeToString() if auth else b"", self.state.registry_mirror)
            if self._pulled_with.get(image, tried) != tried:
                self.pulls.forget(image)
            self._pulled_with[image] = tried
        for gone in self._pulled_with.keys() - by_image.keys():
            del self._pulled_with[gone]
        now = time.time()
        await asyncio.gather(
            *(self._pull(i, specs) for i, specs in by_image.items() if self.pulls.due(i, now))
        )

    async def _pull(self, image: str, specs: list[pb.ContainerSpec]) -> None:
        async with self._parallel:
            try:
                pulled = await call(
                    self.runtime,
                    self.runtime.ensure_image,
                    image,
                    _auth(specs),
                    self.state.registry_mirror,
                )
            except PullFailed as error:
                self._pull_failed(image, specs, error)
                return
            except Exception as error:  # dockerd itself away: the round tries again
                self._failures.failed(f"pulling {image} failed: {error}", error)
                return
        if self.pulls.succeeded(image):
            log.info("pulled %s after failures", image)
        if pulled:
            for app in sorted({s.app for s in specs}):
                self.state.events.put(own("image-pulled", image, app=app))

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
            self.state.events.put(
                own(error.reason, f"{error} ({replicas})", app=app, slot=slots[0])
            )

    async def _bounded(self, task: Task) -> None:
        delay = _shutdown_delay(task)
        if delay:
            assert isinstance(task, Remove)
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
            self.state.held.create_failed(replica_key(task.spec), message)
        if not news:
            return
        self._failures.failed(message, error)
        if isinstance(task, Create):
            app, slot = task.spec.app, task.spec.slot
        else:
            app, slot = task.container.app, task.container.slot
        self.state.events.put(own("task-failed", message[:1000], app=app, slot=slot))

    async def _run_task(self, task: Task) -> None:
        runtime = self.runtime
        if isinstance(task, Remove):
            log.info("removing %s: %s", task.container.name, task.reason)
            container = task.container
            try:
                # Stopped first, its log read whole (its last words too), then removed.
                await call(runtime, runtime.stop, container.container_id, container.stop_grace)
            except NotFound:
                return  # already gone: what we wanted
            await self._keep_log(container)
            await call(runtime, runtime.stop_and_remove, container.container_id, 0)
        elif isinstance(task, Create):
            await self._create(task.spec)
        elif isinstance(task, Stop):
            log.info("stopping %s: %s", task.container.name, task.reason)
            await call(
                runtime, runtime.stop, task.container.container_id, task.container.stop_grace
            )
        elif isinstance(task, Start):
            await self._start(task)

    async def _keep_log(self, container: ObservedContainer) -> None:
        """Keep the end of a container's log before it is removed, for ``fleet logs
        --previous`` (``fleet.agent.previouslogs``); a log that cannot be read is no
        reason not to remove the container."""
        if self.previous_logs.directory is None:
            return
        runtime = self.runtime

        def read() -> bytes:
            stream = runtime.logs(
                container.container_id, follow=False, tail=MAX_LINES, timestamps=True
            )
            try:
                return b"".join(stream)
            finally:
                stream.close()

        try:
            data = await call(runtime, read)
        except (FleetError, OSError) as error:
            log.debug("the log of %s is not kept: %s", container.name, error)
            return
        await asyncio.to_thread(self.previous_logs.save, container.app, container.slot, data)

    async def _create(self, spec: pb.ContainerSpec) -> None:
        runtime = self.runtime
        key = replica_key(spec)
        privileges = Privileges.of_container(spec)
        refused = host_violations(privileges, self.config.policy)
        if refused:
            self.state.held.refuse(key, refused)
            return
        if await call(
            runtime, runtime.ensure_image, spec.image, _auth([spec]), self.state.registry_mirror
        ):
            self.state.events.put(own("image-pulled", spec.image, app=spec.app, slot=spec.slot))
        pool_id = self.state.pool_id or ""
        if pool_id:
            stamped = pb.ContainerSpec()
            stamped.CopyFrom(spec)
            stamped.pool_id = pool_id  # its fleet.pool label
            spec = stamped
        name = container_name(spec.app, spec.slot, spec.spec_hash)
        await call(runtime, runtime.remove_by_name, name, pool_id)
        container_id = await call(runtime, runtime.create, spec)
        if privileges.bind_mounts:  # (stamping the pool id changed none of them)
            # Again on what Docker recorded, right before the start mounts it.
            sources = await call(runtime, runtime.bind_sources, container_id)
            if await self._refused_mounts(container_id, key, sources):
                return
        self.state.held.release(key)
        await call(runtime, runtime.start, container_id)
        log.info("started %s.%d (%s)", spec.app, spec.slot, container_id[:12])

    async def _start(self, task: Start) -> None:
        container = task.container
        key = (container.app, container.slot, container.revision)
        if await self._refused_mounts(container.container_id, key, container.bind_sources):
            return
        log.info("starting %s: %s", container.name, task.reason)
        # Until the round lists containers again, `observed` still shows this one
        # exited: it must not look failed in a heartbeat meanwhile.
        self.state.starting.add(container.container_id)
        if container.state != "created":
            self.state.restarts.record(container, self.config.backoff)
            restarts_file = self.config.restarts_file
            if restarts_file is not None:  # before the start: a crash keeps it
                await asyncio.to_thread(self.state.restarts.save, restarts_file)
        await call(self.runtime, self.runtime.start, container.container_id)

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
        await call(self.runtime, self.runtime.stop_and_remove, container_id, 0)
        self.state.held.refuse(key, refused)
        return True
