"""Host commands: run once per id (the id written down first), refused unless the agent
allows them, and forgotten by the agent once they exited."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path

from fleet.agent.config import AgentConfig
from fleet.agent.events import EventQueue
from fleet.agent.hostcommands import HostCommands
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


async def test_a_command_runs_once_and_is_forgotten_when_it_exits(tmp_path: Path) -> None:
    events = EventQueue()
    commands = HostCommands(_config(tmp_path, allow=True), events)
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
    again = HostCommands(_config(tmp_path, allow=True), events)  # after an agent restart
    await again.run(command)
    assert not again.running and events.take() == []


async def test_many_commands_leave_nothing_behind(tmp_path: Path) -> None:
    commands = HostCommands(_config(tmp_path, allow=True), EventQueue())
    for n in range(20):
        await commands.run(pb.HostCommand(id=f"c{n}", command="true"))
    await eventually(lambda: not commands.running, 10, "every command's exit")
    await asyncio.sleep(0)
    assert commands.running == set()


async def test_a_command_is_refused_once_unless_the_agent_allows_it(tmp_path: Path) -> None:
    events = EventQueue()
    commands = HostCommands(_config(tmp_path, allow=False), events)
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
        commands = HostCommands(_config(tmp_path, allow=True), EventQueue())
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
