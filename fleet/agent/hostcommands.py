"""Host commands: what the control plane's upgrade walk has a host run (an OS upgrade),
once per id, and only on an agent started with ``--allow-host-commands``.

The id is written down before the command starts, so an agent that the command itself
restarts never runs it again. Where it runs is a ``CommandRunner``'s business: a
detached process of the agent's host (``fleet.agent.hostprocess``, for an agent
installed on the host) or a sibling container that enters the host's namespaces
(``fleet.agent.hostcontainer``, for an agent that runs in a container and would take a
child process down with it). Either way the command outlives the agent, its exit is
reported as an event, and its output is kept in the state dir.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Protocol

from fleet.agent.config import AgentConfig
from fleet.agent.events import EventQueue, own
from fleet.agent.logonce import WarnOnce
from fleet.errors import FleetError
from fleet.proto import fleet_pb2 as pb

__all__ = ["CommandRunner", "HostCommands", "StartedCommand", "output_file"]

log = logging.getLogger(__name__)


def output_file(directory: Path, command_id: str) -> Path:
    """Where the output of command ``command_id`` is kept."""
    return directory / f"command-{command_id}.log"


class StartedCommand(Protocol):
    """A host command that was started, by this agent or an earlier one."""

    @property
    def id(self) -> str: ...

    @property
    def command(self) -> str: ...

    async def wait(self) -> int | None:
        """Its exit code once it exited; None when that can no longer be known (its
        container was removed, or never started)."""
        ...

    async def close(self) -> None:
        """After its exit was reported: keep its output in the state dir, free what it
        held (a container)."""
        ...


class CommandRunner(Protocol):
    """Where host commands run."""

    async def start(self, command: pb.HostCommand, outputs: Path) -> StartedCommand:
        """Start ``command`` (its id is already written down) with FLEET_HOST_ID in its
        environment; its output ends up in ``output_file(outputs, id)``. Raises
        ``FleetError`` or ``OSError`` when it cannot start."""
        ...

    async def left_running(self, outputs: Path) -> list[StartedCommand]:
        """The commands an earlier agent started whose exit was never reported."""
        ...


class HostCommands:
    """Runs the host commands pushed with desired sets."""

    def __init__(self, config: AgentConfig, events: EventQueue, runner: CommandRunner) -> None:
        self.config = config
        self.runner = runner
        self._events = events
        # The commands followed and not yet reported: a reported one leaves the set.
        self.running: set[asyncio.Task[None]] = set()

    async def run(self, command: pb.HostCommand) -> None:
        """Run ``command`` unless it ran before (or refuse it, once)."""
        done_file = self.config.commands_file
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
            self._events.put(
                own("host-command-refused", "the agent was not started with --allow-host-commands")
            )
        else:
            log.info("running host command %s: %s", command.id, command.command)
            self._events.put(own("host-command", f"running: {command.command}"))
        done.add(command.id)
        done_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = done_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(sorted(done)))
        temporary.replace(done_file)
        if not self.config.allow_host_commands:
            return
        try:
            started = await self.runner.start(command, done_file.parent)
        except (FleetError, OSError) as error:
            # Written down as run: it is not tried again, ops read why and act.
            log.error("host command %s could not start: %s", command.id, error)
            self._events.put(own("host-command-failed", f"could not start: {error}"))
            return
        self._follow(started)

    async def resume(self, retry_every: float = 2.0) -> None:
        """Follow the commands an earlier agent started (until their exit is reported),
        once the runner can tell which; tried again while it cannot (dockerd away)."""
        cannot = WarnOnce(log, "cannot look for host commands left running yet")
        while True:
            try:
                left = await self.runner.left_running(self.config.commands_file.parent)
                break
            except (FleetError, OSError) as error:
                cannot.failed(error)
                await asyncio.sleep(retry_every)
        for started in left:
            log.info("following host command %s, started before a restart", started.id)
            self._follow(started)

    def _follow(self, started: StartedCommand) -> None:
        waiter = asyncio.create_task(self._report_exit(started))
        self.running.add(waiter)
        waiter.add_done_callback(self.running.discard)

    async def _report_exit(self, started: StartedCommand) -> None:
        code = await started.wait()
        if code is None:
            log.warning("host command %s: its exit code is lost", started.id)
            self._events.put(own("host-command-lost", f"exit code unknown: {started.command}"))
        else:
            log.info("host command %s exited with %d", started.id, code)
            self._events.put(own("host-command-exited", f"exit code {code}: {started.command}"))
        # Reported first, then removed: an agent stopped in between reports it again
        # rather than never.
        await started.close()
