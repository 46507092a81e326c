"""Host commands as processes: ``sh -c COMMAND`` in a session of its own, for an agent
installed on the host (``--host-commands-in process``).

Its own session, and never being killed by the agent, keep it alive when the agent
stops (the systemd unit's ``KillMode`` leaves it be); its output goes to the state dir.
Only the agent that started it sees its exit: an agent restarted meanwhile has no child
to wait for, so ``left_running`` has nothing to offer.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from fleet.agent.hostcommands import StartedCommand, output_file
from fleet.proto import fleet_pb2 as pb

__all__ = ["ProcessRunner", "spawn_detached"]

_EXIT_POLL = 0.5  # seconds between looks at whether a command exited


@dataclass(frozen=True)
class _Process:
    id: str
    command: str
    pid: int

    async def wait(self) -> int | None:
        while True:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)  # noqa: ASYNC222 (no wait)
            except ChildProcessError:  # reaped by someone else: its status is lost
                return None
            if done:
                return os.waitstatus_to_exitcode(status)
            await asyncio.sleep(_EXIT_POLL)

    async def close(self) -> None:
        """Nothing to free: the output is already in the state dir."""


def _spawn(command: str, output: Path, env: dict[str, str]) -> int:
    """Start ``sh -c command`` in a session of its own, its output appended to
    ``output``; its pid. Not with asyncio's subprocesses, nor a Popen: asyncio kills a
    child still running when its transport is closed (as when the agent stops cleanly),
    and the command must outlive the agent (an OS upgrade restarts it)."""
    return spawn_detached(["sh", "-c", command], output, env)


def spawn_detached(argv: list[str], output: Path, env: dict[str, str]) -> int:
    """Start ``argv`` (found on PATH) in a session of its own, stdin from /dev/null,
    its output appended to ``output``; its pid. It outlives the agent."""
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        return os.posix_spawnp(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(fd)


class ProcessRunner:
    """Runs host commands as detached processes of the agent's host."""

    def __init__(self, host_id: str) -> None:
        self.host_id = host_id

    async def start(self, command: pb.HostCommand, outputs: Path) -> StartedCommand:
        # (HostCommands made the directory when it wrote the command's id down.)
        env = {**os.environ, "FLEET_HOST_ID": self.host_id}
        pid = _spawn(command.command, output_file(outputs, command.id), env)
        return _Process(command.id, command.command, pid)

    async def left_running(self, outputs: Path) -> list[StartedCommand]:
        return []
