"""``fleet agent``: keeps one Docker host in line with the desired set it is sent.

``Agent`` puts the parts together and runs them on one event loop, sharing one
``HostState`` (``fleet.agent.state``):

- the session (``fleet.agent.session``) keeps a stream to a control plane: it
  registers, stores every desired set pushed to it, answers requests and runs host
  commands, and sends heartbeats and events;
- the reconcile loop (``fleet.agent.reconciler``) compares desired with observed and
  has the executor (``fleet.agent.executor``) run the plan, on every push, every
  runtime event and a timer;
- the host watch (``fleet.agent.hostwatch``) follows the runtime's events, which wake
  the reconcile loop, and samples live usage for the heartbeats;
- host commands an earlier agent started are followed until their exit is reported
  (``fleet.agent.hostcommands``; they run where the ``CommandRunner`` puts them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fleet.agent.config import AgentConfig
from fleet.agent.events import EventQueue
from fleet.agent.health import Prober
from fleet.agent.held import HeldReplicas
from fleet.agent.hostcommands import CommandRunner
from fleet.agent.hostprocess import ProcessRunner
from fleet.agent.hostwatch import HostWatch
from fleet.agent.logonce import FailureLog
from fleet.agent.reconciler import Reconciler
from fleet.agent.restarts import RestartBook
from fleet.agent.runtime import Runtime
from fleet.agent.session import Session
from fleet.agent.state import HostState
from fleet.policy import prefix_warnings
from fleet.proto import fleet_pb2 as pb

__all__ = ["Agent"]

log = logging.getLogger(__name__)


class Agent:
    """One host's agent over ``runtime`` (dockerd, or a simulated one); its host
    commands run as processes unless ``runner`` puts them elsewhere."""

    def __init__(
        self,
        config: AgentConfig,
        runtime: Runtime,
        runner: CommandRunner | None = None,
        on_edge: Callable[[pb.EdgeConfig], None] | None = None,
    ) -> None:
        """``on_edge`` takes each routing table pushed to an edge host (``--ingress``)."""
        self.config = config
        self.runtime = runtime
        events = EventQueue()
        restarts_file = config.restarts_file
        self.state = HostState(
            events=events,
            held=HeldReplicas(events),
            restarts=RestartBook.load(restarts_file) if restarts_file else RestartBook(),
        )
        # Set while a control plane has the agent registered.
        self.connected = asyncio.Event()
        failures = FailureLog(log)
        prober = Prober(self.state.report_now.set)
        self.reconciler = Reconciler(config, runtime, self.state, prober, failures)
        self.session = Session(
            config,
            runtime,
            self.state,
            prober,
            failures,
            self.connected,
            runner or ProcessRunner(config.host_id),
            on_edge,
        )
        self._watch = HostWatch(runtime, self.state)

    async def run(self) -> None:
        """Run until cancelled."""
        for warning in prefix_warnings(self.config.policy):
            log.warning("%s", warning)
        self._watch.start(asyncio.get_running_loop())
        try:
            await asyncio.gather(
                self.session.run(),
                self.reconciler.run(),
                self.reconciler.watch_rounds(),
                self._watch.sample_usage_forever(self.config.stats_seconds),
                self.session.commands.resume(),
            )
        finally:
            self._watch.stop()

    async def run_until(
        self,
        stop: asyncio.Event,
        started: Callable[[bool], None] | None = None,
        leave_grace: float = 5.0,
    ) -> None:
        """Run until ``stop`` is set, then leave the control plane cleanly (its host is
        disconnected at once; the containers keep running) and stop. ``started`` is
        called once the first try to register is over: True if it registered; False
        if not, and the agent carries on alone, trying again."""
        running = asyncio.create_task(self.run(), name="agent")
        tried = asyncio.create_task(self.session.tried.wait())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({running, tried}, return_when=asyncio.FIRST_COMPLETED)
            if tried.done() and started is not None:
                started(self.connected.is_set())
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                running.result()  # the agent stopped itself (refused): its error
                return
            await self.session.leave(leave_grace)
            log.info("stopping (the containers keep running)")
        finally:
            for task in (tried, stopping):
                task.cancel()
            if not running.done():
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running

    def __repr__(self) -> str:
        return f"Agent({self.config.host_id!r})"
