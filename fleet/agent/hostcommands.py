"""Host commands: what the control plane's upgrade walk has a host run (an OS upgrade),
once per id, and only on an agent started with ``--allow-host-commands``.

The id is written down before the command starts, so an agent that the command itself
restarts never runs it again; the command runs detached (its own session) with its
output in the state dir, and its exit is reported as an event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess

from fleet.agent.config import AgentConfig
from fleet.agent.events import EventQueue, own
from fleet.proto import fleet_pb2 as pb

__all__ = ["HostCommands"]

log = logging.getLogger(__name__)


class HostCommands:
    """Runs the host commands pushed with desired sets."""

    def __init__(self, config: AgentConfig, events: EventQueue) -> None:
        self.config = config
        self._events = events
        # The commands started and not yet exited: a finished one leaves the set.
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
            done.add(command.id)
        else:
            log.info("running host command %s: %s", command.id, command.command)
            self._events.put(own("host-command", f"running: {command.command}"))
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
            waiter = asyncio.create_task(self._report_exit(command, process))
            self.running.add(waiter)
            waiter.add_done_callback(self.running.discard)

    async def _report_exit(
        self, command: pb.HostCommand, process: asyncio.subprocess.Process
    ) -> None:
        code = await process.wait()
        log.info("host command %s exited with %d", command.id, code)
        self._events.put(own("host-command-exited", f"exit code {code}: {command.command}"))
