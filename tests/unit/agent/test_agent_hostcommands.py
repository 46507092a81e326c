"""Host commands: run once per id (the id written down first), refused unless the agent
allows them, their exit reported once, also when an earlier agent started them."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from fleet.agent.config import AgentConfig
from fleet.agent.events import EventQueue
from fleet.agent.hostcommands import HostCommands, StartedCommand
from fleet.agent.hostprocess import ProcessRunner
from fleet.errors import Unavailable
from fleet.proto import fleet_pb2 as pb
from fleet.testing.procs import pid_alive
from fleet.transport import Transport
from tests.helpers import eventually


def _config(tmp_path: Path, allow: bool) -> AgentConfig:
    return AgentConfig(
        servers=["127.0.0.1:1"],
        host_id="h1",
        transport=Transport(None),
        state_dir=tmp_path,
        allow_host_commands=allow,
    )


def _commands(tmp_path: Path, events: EventQueue, allow: bool = True) -> HostCommands:
    return HostCommands(_config(tmp_path, allow), events, ProcessRunner("h1"))


async def test_a_command_runs_once_and_is_forgotten_when_it_exits(tmp_path: Path) -> None:
    events = EventQueue()
    commands = _commands(tmp_path, events)
    command = pb.HostCommand(id="up-1", command='echo "$FLEET_HOST_ID"; exit 3')
    await commands.run(command)
    await commands.run(command)  # pushed again with the next desired set
    assert len(commands.running) == 1
    await eventually(lambda: not commands.running, 10, "the command's exit to be seen")
    assert [(e.kind, e.message) for e in events.take()] == [
        ("host-command", 'running: echo "$FLEET_HOST_ID"; exit 3'),
        ("host-command-exited", 'exit code 3: echo "$FLEET_HOST_ID"; exit 3'),
    ]
    assert (tmp_path / "command-up-1.log").read_text() == "h1\n"
    again = _commands(tmp_path, events)  # after an agent restart
    await again.run(command)
    await again.resume()  # a process runner leaves nothing to follow
    assert not again.running and events.take() == []


async def test_many_commands_leave_nothing_behind(tmp_path: Path) -> None:
    commands = _commands(tmp_path, EventQueue())
    for n in range(20):
        await commands.run(pb.HostCommand(id=f"c{n}", command="true"))
    await eventually(lambda: not commands.running, 10, "every command's exit")
    await asyncio.sleep(0)
    assert commands.running == set()


async def test_a_command_is_refused_once_unless_the_agent_allows_it(tmp_path: Path) -> None:
    events = EventQueue()
    commands = _commands(tmp_path, events, allow=False)
    command = pb.HostCommand(id="up-1", command="touch ran")
    await commands.run(command)
    await commands.run(command)
    assert [e.kind for e in events.take()] == ["host-command-refused"]
    assert not commands.running and not (tmp_path / "ran").exists()


def test_a_command_outlives_the_agent_that_started_it(tmp_path: Path) -> None:
    """An agent that stops cleanly (its loop ends, its tasks cancelled) leaves a host
    command running: an OS upgrade restarts the agent and must not die with it."""
    pid_file = tmp_path / "pid"

    async def agent_runs_a_command() -> None:
        commands = _commands(tmp_path, EventQueue())
        command = f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file} && exec sleep 60"
        await commands.run(pb.HostCommand(id="upgrade", command=command))
        await eventually(pid_file.exists, 10, "the command to start")

    asyncio.run(agent_runs_a_command())  # as the agent's asyncio.run ends on SIGTERM
    gc.collect()  # asyncio kills a child whose transport is collected while it runs
    pid = int(pid_file.read_text())
    try:
        assert pid_alive(pid), "the host command died with the agent"
        assert os.getsid(pid) == pid  # in a session of its own
    finally:
        os.kill(pid, signal.SIGKILL)


@dataclass
class _Started:
    id: str
    command: str
    exit_code: int | None
    log: list[str]

    async def wait(self) -> int | None:
        return self.exit_code

    async def close(self) -> None:
        self.log.append(f"closed {self.id}")


@dataclass
class _FakeRunner:
    """What a container runner does, without containers: an earlier agent's commands
    are left over until closed; dockerd may be away for the first looks."""

    left: list[_Started] = field(default_factory=list)
    away: int = 0
    fail_start: bool = False
    log: list[str] = field(default_factory=list)

    async def start(self, command: pb.HostCommand, outputs: Path) -> StartedCommand:
        if self.fail_start:
            raise Unavailable("docker: create the host command's container: no such image")
        self.log.append(f"started {command.id}")
        return _Started(command.id, command.command, 0, self.log)

    async def left_running(self, outputs: Path) -> list[StartedCommand]:
        if self.away:
            self.away -= 1
            raise Unavailable("docker: connect: dockerd is away")
        return list(self.left)


async def test_commands_an_earlier_agent_started_are_reported_once_then_closed(
    tmp_path: Path,
) -> None:
    events = EventQueue()
    runner = _FakeRunner(away=2)
    runner.left = [_Started("u1-h1", "upgrade", 0, runner.log), _Started("u0-h1", "x", None, [])]
    commands = HostCommands(_config(tmp_path, True), events, runner)
    await commands.resume(retry_every=0.01)  # dockerd comes back on the third look
    await eventually(lambda: not commands.running, 5, "the leftovers to be reported")
    assert sorted((e.kind, e.message) for e in events.take()) == [
        ("host-command-exited", "exit code 0: upgrade"),
        ("host-command-lost", "exit code unknown: x"),
    ]
    assert runner.log == ["closed u1-h1"]


async def test_a_command_that_cannot_start_is_reported_and_not_tried_again(
    tmp_path: Path,
) -> None:
    events = EventQueue()
    runner = _FakeRunner(fail_start=True)
    commands = HostCommands(_config(tmp_path, True), events, runner)
    command = pb.HostCommand(id="u1-h1", command="upgrade")
    await commands.run(command)
    runner.fail_start = False
    await commands.run(command)
    assert [(e.kind, e.message) for e in events.take()] == [
        ("host-command", "running: upgrade"),
        (
            "host-command-failed",
            "could not start: docker: create the host command's container: no such image",
        ),
    ]
    assert runner.log == [] and not commands.running
