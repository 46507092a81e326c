"""The reconcile loop: desired vs observed, on every push, every runtime event and a
timer (level-triggered: a missed wake-up costs nothing).

Each round lists the containers, plans (``fleet.agent.reconcile``, pure), raises the
restart events, holds what cannot run (``fleet.agent.held``), has the executor pull the
new images and then run the plan's phases (``fleet.agent.executor``), and reports at
once when a status changed. It acts on this pool's containers only
(``fleet.agent.ownership``): another pool's are reported once and left alone. Until the
first desired set arrives (after a restart, or while the control plane is away) it
takes this pool's containers it finds as desired: it adopts them, never duplicates or
removes them, and keeps their restart policies. Now and then it removes images no
container used for a while (``--image-gc-after``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import cast

from fleet._stacks import where_it_waits
from fleet.agent.config import AgentConfig
from fleet.agent.events import own, restart_events
from fleet.agent.executor import Executor
from fleet.agent.failures import FailureBook
from fleet.agent.health import Prober
from fleet.agent.held import replica_key
from fleet.agent.images import ImageKeeper, stale_images
from fleet.agent.logonce import FailureLog
from fleet.agent.ownership import Claims, sort_out, stranger_message
from fleet.agent.reconcile import Create, Plan, Remove, Task, plan
from fleet.agent.runtime import ObservedContainer, Runtime, call
from fleet.agent.state import HostState
from fleet.errors import FleetError
from fleet.proto import fleet_pb2 as pb

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)

# A round running this long is said in the log and the host's events, with where it
# waits (``watch_rounds``), and again every as long: pulls of large images and stops
# with long graces can take minutes, so it is not called stuck, but a round waiting on
# something that never comes leaves the host's containers unmanaged while its agent
# still heartbeats (the chaos soak twice ended with a host that never started its
# replacement replica, with nothing in its log to say why).
SLOW_ROUND = 120.0


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


class Reconciler:
    """Keeps one host's containers in line with its desired set."""

    def __init__(
        self,
        config: AgentConfig,
        runtime: Runtime,
        state: HostState,
        prober: Prober,
        failures: FailureLog,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.state = state
        self.executor = Executor(config, runtime, state, failures)
        self._prober = prober
        self._failures = failures
        self._round_failures: FailureBook[str] = FailureBook(config.failure_backoff)
        self._raised: set[tuple[str, int, str]] = set()  # restart events already raised
        self._images = ImageKeeper(config.images_file)
        self._images_due = 0.0  # monotonic time of the next image collection
        self._claims = Claims(config.pool_file)
        if state.pool_id is None:
            state.pool_id = self._claims.pool_id  # until the control plane says
        self._found: set[str] | None = None  # ids of the first listing: adopted if ours
        self._strangers: set[str] = set()  # ids of other pools' containers already reported
        self._round_began: float | None = None  # monotonic, while a round runs
        self._round_task: asyncio.Task[None] | None = None
        self._slow_said = -math.inf  # monotonic: when a slow round was last said

    async def run(self) -> None:
        """Reconcile until cancelled: after every wake-up, a backoff that ends, or
        ``resync_seconds``."""
        wake = self.state.wake
        self._round_task = cast("asyncio.Task[None]", asyncio.current_task())
        while True:
            look_again: float | None = None
            self._round_began = time.monotonic()
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
                    self._failures.failed(f"reconcile failed: {text}", error)
                    self.state.events.put(own("reconcile-failed", text[:500]))
                look_again = self._round_failures.next_retry()
            self._round_began = None
            timeout = self.config.resync_seconds
            if look_again is not None:
                timeout = max(0.05, min(timeout, look_again - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # (wait_for may swallow a cancel)
                    await wake.wait()
            wake.clear()

    async def watch_rounds(self, every: float = 30.0) -> None:
        """Look at the running round every ``every`` seconds (``check_round``)."""
        while True:
            await asyncio.sleep(every)
            self.check_round(time.monotonic())

    def check_round(self, now: float) -> None:
        """Say where the round waits once it has run ``SLOW_ROUND`` seconds, and every
        ``SLOW_ROUND`` after that."""
        began, task = self._round_began, self._round_task
        if began is None or task is None or now - began < SLOW_ROUND:
            return
        if now - self._slow_said < SLOW_ROUND:
            return
        self._slow_said = now
        running = now - began
        log.warning(
            "a reconcile round has run for %.0f s; it waits at (innermost last):\n%s",
            running,
            where_it_waits(task),
        )
        message = f"a reconcile round has run for {running:.0f}s; the agent's log says where"
        self.state.events.put(own("reconcile-slow", message))

    async def _observe(self) -> list[ObservedContainer]:
        """List the host's fleet containers; this pool's are the round's (and the
        heartbeats'), the others' are reported once."""
        state = self.state
        listing = await call(self.runtime, self.runtime.list_containers)
        found = sort_out(listing, state.pool_id, state.desired, self._claims.ids)
        present = [c.container_id for c in listing]
        if self._claims.update(state.pool_id, found.claimed, present):
            await asyncio.to_thread(self._claims.save)
        if self._found is None:
            self._found = set(present)
        for container in found.ours:
            if container.container_id in self._found:
                self._found.discard(container.container_id)
                state.events.put(own("adopted", f"found running as {container.name}", container))
        for container, why in found.strangers:
            if container.container_id not in self._strangers:
                message = stranger_message(container, why)
                log.warning("%s", message)
                state.events.put(own("foreign-container", message[:1000], container))
        self._strangers = {c.container_id for c, _ in found.strangers}
        observed = found.ours
        state.observed = observed
        if not found.undecided:
            # (A heartbeat waits for this, a while: one sent while this pool's
            # containers are not yet told apart would say the host runs none of them.)
            state.listed.set()
        self._prober.sync(observed)
        return observed

    async def reconcile_once(self) -> float | None:
        """One round: observe, plan, act. Returns when a backoff wants a look again."""
        state, executor = self.state, self.executor
        version = state.desired_version
        observed_before, held_before = state.observed, dict(state.held.replicas)
        observed = await self._observe()
        desired = state.desired if state.desired is not None else _adopted(observed)
        now = time.time()
        planned = plan(desired, observed, state.restarts, now, self.config.backoff)
        look_again = planned.look_again
        for key, event in restart_events(observed, state.restarts, self.config.backoff, now):
            if key not in self._raised:
                self._raised.add(key)
                state.events.put(event)
        present = {(c.app, c.slot, c.revision) for c in observed}
        state.held.keep_only({replica_key(c) for c in desired}, present)
        state.held.hold_as_the_control_plane_says(desired, present)
        executor.keep_failures_of(planned.tasks)
        # New images are pulled before anything stops: a replica replaced in place must
        # not be down for the length of a pull (or for good, if the pull fails).
        await executor.pull_images([t for t in planned.tasks if isinstance(t, Create)])
        ready = self._ready(planned, desired, time.time())
        retry = executor.next_retry()
        if retry is not None:
            look_again = retry if look_again is None else min(look_again, retry)
        # A new desired set arriving meanwhile ends the round early.
        await executor.run(ready, lambda: state.desired_version == version)
        if ready.tasks:
            await self._observe()
        state.starting.clear()
        if (
            _statuses(state.observed) != _statuses(observed_before)
            or state.held.replicas != held_before
        ):
            state.report_now.set()  # tell the control plane now, not at the next beat
        state.restarts.forget_except(c.container_id for c in state.observed)
        live_ids = {c.container_id for c in state.observed}
        self._raised = {k for k in self._raised if k[0] in live_ids}
        restarts_file = self.config.restarts_file
        if restarts_file is not None and ready.tasks:
            await asyncio.to_thread(state.restarts.save, restarts_file)
        if state.desired is not None and state.desired_version == version:
            state.applied_version = version
        await self._images_now_and_then(desired)
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
            failure = self.executor.pull_failure(spec.image)
            if failure is not None:
                unpulled.add((spec.app, spec.slot))
                self.state.held.pull_failed(replica_key(spec), failure.reason, failure.message)
            else:
                self.state.held.pull_retried(replica_key(spec))

        def ready(task: Task) -> bool:
            if isinstance(task, Create) and (task.spec.app, task.spec.slot) in unpulled:
                return False
            if (
                isinstance(task, Remove)
                and (task.container.app, task.container.slot) in unpulled
                and task.container.key not in wanted
            ):
                return False
            return self.executor.due(task, now)

        return planned.only(ready)

    async def _images_now_and_then(self, desired: list[pb.ContainerSpec]) -> None:
        if self.config.image_gc_after is None:
            return
        # Every image desired now counts as used now, even between two collections.
        self._images.saw([c.image for c in desired if c.image], time.time())
        if time.monotonic() < self._images_due:
            return
        self._images_due = time.monotonic() + min(30.0, self.config.image_gc_after)
        try:
            await self._collect_images(self.config.image_gc_after)
        except Exception as error:  # the containers come first: collect next time
            self._failures.failed(f"image collection failed: {error!r}", error)

    async def _collect_images(self, after: float) -> None:
        """Forget-and-remove images no container has used for ``after`` seconds."""
        runtime = self.runtime
        now = time.time()
        in_use = await call(runtime, runtime.images_in_use)
        self._images.saw(in_use & set(self._images.last_used), now)
        for image in stale_images(self._images.last_used, in_use, now, after):
            if await call(runtime, runtime.remove_image, image):
                log.info("removed image %s: unused for %gs", image, after)
                self.state.events.put(own("image-removed", image))
                self._images.forget(image)
        await asyncio.to_thread(self._images.save)
