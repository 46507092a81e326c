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
import logging

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

__all__ = ["Agent"]

log = logging.getLogger(__name__)


class Agent:
    """One host's agent over ``runtime`` (dockerd, or a simulated one); its host
    commands run as processes unless ``runner`` puts them elsewhere."""

    def __init__(
        self, config: AgentConfig, runtime: Runtime, runner: CommandRunner | None = None
    ) -> None:
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
                self._watch.sample_usage_forever(self.config.stats_seconds),
                self.session.commands.resume(),
            )
        finally:
            self._watch.stop()

    def __repr__(self) -> str:
        return f"Agent({self.config.host_id!r})"
