"""Host commands: what the control plane's upgrade walk has a host run (an OS upgrade),
once per id, and only on an agent started with ``--allow-host-commands``.

The id is written down before the command starts, so an agent that the command itself
restarts never runs it again; the command runs detached (its own session, and never
killed by the agent: it outlives the agent's stop or restart) with its output in the
state dir, and its exit is reported as an event if the agent still runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from fleet.agent.config import AgentConfig
from fleet.agent.events import EventQueue, own
from fleet.proto import fleet_pb2 as pb

__all__ = ["HostCommands"]

log = logging.getLogger(__name__)

_EXIT_POLL = 0.5  # seconds between looks at whether a command exited


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
            env = {**os.environ, "FLEET_HOST_ID": self.config.host_id}
            pid = _spawn(command.command, output, env)
            waiter = asyncio.create_task(self._report_exit(command, pid))
            self.running.add(waiter)
            waiter.add_done_callback(self.running.discard)

    async def _report_exit(self, command: pb.HostCommand, pid: int) -> None:
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 (it does not wait)
            except ChildProcessError:  # reaped by someone else: its status is lost
                log.warning("host command %s exited; its exit code is unknown", command.id)
                return
            if done:
                break
            await asyncio.sleep(_EXIT_POLL)
        code = os.waitstatus_to_exitcode(status)
        log.info("host command %s exited with %d", command.id, code)
        self._events.put(own("host-command-exited", f"exit code {code}: {command.command}"))


def _spawn(command: str, output: Path, env: dict[str, str]) -> int:
    """Start ``sh -c command`` in a session of its own, its output appended to
    ``output``; its pid. Not with asyncio's subprocesses, nor a Popen: asyncio kills a
    child still running when its transport is closed (as when the agent stops cleanly),
    and the command must outlive the agent (an OS upgrade restarts it)."""
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        return os.posix_spawnp(
            "sh",
            ["sh", "-c", command],
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
