"""Host commands as processes: ``sh -c COMMAND`` in a session of its own, for an agent
installed on the host (``--host-commands-in process``).

Its own session keeps it alive when the agent stops (the systemd unit's ``KillMode``
leaves it be); its output goes to the state dir. Only the agent that started it sees
its exit: an agent restarted meanwhile has no child to wait for, so ``left_running``
has nothing to offer.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fleet.agent.hostcommands import StartedCommand, output_file
from fleet.proto import fleet_pb2 as pb

__all__ = ["ProcessRunner"]


@dataclass(frozen=True)
class _Process:
    id: str
    command: str
    process: asyncio.subprocess.Process

    async def wait(self) -> int | None:
        return await self.process.wait()

    async def close(self) -> None:
        """Nothing to free: the output is already in the state dir."""


class ProcessRunner:
    """Runs host commands as detached processes of the agent's host."""

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id

    async def start(self, command: pb.HostCommand, outputs: Path) -> StartedCommand:
        # (HostCommands made the directory when it wrote the command's id down.)
        with output_file(outputs, command.id).open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                "sh",
                "-c",
                command.command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # it outlives the agent if it restarts it
                env={**os.environ, "FLEET_HOST_ID": self.host_id},
            )
        return _Process(command.id, command.command, process)

    async def left_running(self, outputs: Path) -> list[StartedCommand]:
        return []
