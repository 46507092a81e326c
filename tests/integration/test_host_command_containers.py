"""Host commands in sibling containers (``--host-commands-in container``) on a real
dockerd: they run on the host, not in their container, outlive the agent that started
them, and the agent after it reports each exit once and removes the container.

The commands enter the namespaces of the test host's dockerd rather than PID 1's: this
machine's PID 1 (a microVM's init) refuses to be entered, and the dockerd runs in the
machine's mount, UTS, IPC and PID namespaces (its own network namespace is the test
host's). The busybox image stands in for the agent's (it has nsenter); its dockerd
cannot grant every capability here, so the runner's fallback (the agent's own
capabilities) is what starts them.
"""

from __future__ import annotations

from pathlib import Path

from fleet.agent.config import AgentConfig
from fleet.agent.events import EventQueue
from fleet.agent.hostcommands import HostCommands
from fleet.agent.hostcontainer import LABEL_HOST_COMMAND, ContainerRunner
from fleet.proto import fleet_pb2 as pb
from fleet.testing import DockerHost
from fleet.transport import Transport
from tests.conftest import ensure_image
from tests.helpers import eventually


def _commands(host: DockerHost, state: Path, events: EventQueue) -> HostCommands:
    assert host.daemon_pid is not None
    runner = ContainerRunner(
        host.client,
        "h1",
        ensure_image(host),
        target_pid=host.daemon_pid,
        poll_seconds=0.2,
    )
    config = AgentConfig(
        servers=["127.0.0.1:1"],
        host_id="h1",
        transport=Transport(None),
        state_dir=state,
        allow_host_commands=True,
    )
    return HostCommands(config, events, runner)


def _left(host: DockerHost) -> list[str]:
    containers = host.client().containers.list(all=True, filters={"label": LABEL_HOST_COMMAND})
    return [c.name for c in containers]


async def test_a_command_runs_on_the_host_and_its_exit_is_reported_by_the_next_agent(
    single_host: DockerHost, tmp_path: Path
) -> None:
    events = EventQueue()
    first = _commands(single_host, tmp_path / "state", events)
    # tmp_path exists on the host only: written from the container's own root, the
    # command would fail.
    command = pb.HostCommand(
        id="u1-h1",
        command=f'sleep 1; echo "ran on $FLEET_HOST_ID" > {tmp_path}/done; echo out; exit 7',
    )
    await first.run(command)
    assert _left(single_host) == ["fleet-host-command-u1-h1"]
    assert [e.kind for e in events.take()] == ["host-command"]
    for task in first.running:  # the agent stops before the command exits
        task.cancel()

    second = _commands(single_host, tmp_path / "state", events)
    await second.run(command)  # pushed again: it ran already
    await second.resume()
    assert len(second.running) == 1
    await eventually(lambda: not second.running, 30, "the command's exit to be reported")
    assert (tmp_path / "done").read_text() == "ran on h1\n"
    assert [(e.kind, e.message) for e in events.take()] == [
        ("host-command-exited", f"exit code 7: {command.command}")
    ]
    assert _left(single_host) == []
    assert (tmp_path / "state/command-u1-h1.log").read_text() == "out\n"

    third = _commands(single_host, tmp_path / "state", events)
    await third.resume()
    assert not third.running and events.take() == []


async def test_a_command_that_exited_while_no_agent_ran_is_reported_once(
    single_host: DockerHost, tmp_path: Path
) -> None:
    events = EventQueue()
    first = _commands(single_host, tmp_path, events)
    await first.run(pb.HostCommand(id="u2-h1", command="exit 0"))
    for task in first.running:
        task.cancel()
    container = single_host.client().containers.get("fleet-host-command-u2-h1")
    assert container.wait(timeout=30)["StatusCode"] == 0

    second = _commands(single_host, tmp_path, events)
    await second.resume()
    await eventually(lambda: not second.running, 30, "the exit to be reported")
    assert [(e.kind, e.message) for e in events.take()] == [
        ("host-command", "running: exit 0"),
        ("host-command-exited", "exit code 0: exit 0"),
    ]
    assert _left(single_host) == []
