"""Host commands in a sibling container, for an agent that runs in a container
(``--host-commands-in container``, the image's default).

A child process of a containerised agent would run in the agent's container, not on
the host, and die when the agent's container stops (an upgrade may well restart it).
So the agent asks its dockerd for a sibling container instead: privileged, in the
host's PID and network namespaces, whose ``nsenter`` enters the mount, UTS, IPC,
network and PID namespaces of the host's PID 1 (``--host-command-pid``) and runs
``sh -c COMMAND`` there, on the host proper. Its image is the agent's own (it has
nsenter), found by asking dockerd about the agent's container, unless
``--host-command-image`` names one. A dockerd that cannot grant every capability (one
in a sandboxed VM) starts it with the agent's own capabilities instead, which enter
the host as well.

The container is labelled with the command's id and the host, so an agent restarted
while it runs (or after it exited) finds it, reports its exit and removes it; its
output (``docker logs``) is kept in the state dir first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from fleet.agent.dockererrors import DOCKER_ERRORS, translate
from fleet.agent.hostcommands import StartedCommand, output_file
from fleet.agent.incontainer import capabilities, read_own_container_id
from fleet.errors import FleetError, InvalidArgument
from fleet.proto import fleet_pb2 as pb

__all__ = [
    "LABEL_HOST_COMMAND",
    "LABEL_HOST_ID",
    "ContainerRunner",
]

log = logging.getLogger(__name__)

LABEL_HOST_COMMAND = "fleet.host-command"  # the command's id
LABEL_HOST_ID = "fleet.host-id"  # the host whose agent started it

# dockerd away or refusing (the client is made on first use: FleetError).
_FAILED: tuple[type[BaseException], ...] = (FleetError, *DOCKER_ERRORS)
# Keeping a command's output: dockerd's errors, or the state dir's (a full disk).
_OUTPUT_LOST: tuple[type[BaseException], ...] = (*_FAILED, OSError)


class _PrivilegeRefused(Exception):
    """dockerd could not give a container every capability."""


def _container_name(command_id: str) -> str:
    return "fleet-host-command-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", command_id)


@dataclass(frozen=True)
class _Container:
    runner: ContainerRunner
    container_id: str
    id: str
    command: str
    output: Path

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.runner.client().api.inspect_container(self.container_id)[
            "State"
        ]
        return state

    async def wait(self) -> int | None:
        while True:
            try:
                state = await asyncio.to_thread(self._state)
            except docker.errors.NotFound:
                return None  # removed by someone else
            except _FAILED as error:  # dockerd away: ask again
                log.debug("host command %s: %s", self.id, error)
                state = {}
            status = state.get("Status")
            if status in ("exited", "dead"):
                return int(state.get("ExitCode") or 0)
            if status == "created":
                return None  # an agent stopped between creating and starting it
            await asyncio.sleep(self.runner.poll_seconds)

    def _close(self) -> None:
        try:
            api = self.runner.client().api
            logs = api.logs(self.container_id, stdout=True, stderr=True)
            self.output.parent.mkdir(parents=True, exist_ok=True)
            with self.output.open("ab") as kept:
                kept.write(logs)
        except _OUTPUT_LOST as error:  # a log driver that cannot be read, a full disk
            log.warning("host command %s: its output is lost: %s", self.id, error)
        try:
            self.runner.client().api.remove_container(self.container_id, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except _FAILED as error:
            # Left for the next agent, which reports it again: better than never.
            log.warning("host command %s: its container stays: %s", self.id, error)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)


class ContainerRunner:
    """Runs host commands in sibling containers on the host's dockerd."""

    def __init__(
        self,
        client: Callable[[], docker.DockerClient],
        host_id: str,
        image: str = "",
        *,
        target_pid: int = 1,
        poll_seconds: float = 1.0,
        proc: Path = Path("/proc"),
    ) -> None:
        self.client = client
        self.host_id = host_id
        self.image = image
        # The commands enter every namespace of this process (the host's init) but its
        # user namespace (the container's is already the host's) and its cgroup
        # namespace (the command stays in its container's cgroup).
        self.target_pid = target_pid
        self.poll_seconds = poll_seconds
        self._proc = proc

    def _own_image(self) -> str:
        """The image of the agent's own container (by id, so a retagged one is no
        surprise)."""
        container_id = read_own_container_id(self._proc)
        if container_id is None:
            raise InvalidArgument(
                "the agent does not run in a Docker container, so it has no image to run "
                "host commands in: give --host-command-image, or --host-commands-in process"
            )
        try:
            attrs = self.client().api.inspect_container(container_id)
        except docker.errors.NotFound:
            raise InvalidArgument(
                f"the agent's container {container_id[:12]} is not on the Docker daemon it "
                "manages: give --host-command-image"
            ) from None
        except DOCKER_ERRORS as error:
            raise translate("inspect the agent's own container", error) from error
        return str(attrs["Image"])

    def _start(self, command: pb.HostCommand, outputs: Path) -> StartedCommand:
        image = self.image or self._own_image()
        try:
            container_id = self._create_and_start(image, command, privileged=True)
        except _PrivilegeRefused as refused:
            log.warning(
                "host command %s: dockerd cannot start a privileged container (%s); it "
                "runs with the agent's own capabilities instead",
                command.id,
                refused,
            )
            container_id = self._create_and_start(image, command, privileged=False)
        return _Container(
            self, container_id, command.id, command.command, output_file(outputs, command.id)
        )

    def _create_and_start(self, image: str, command: pb.HostCommand, privileged: bool) -> str:
        api = self.client().api
        if privileged:  # root on the host: every capability and device, no seccomp/AppArmor
            powers: dict[str, Any] = {"privileged": True}
        else:
            # A dockerd that lacks some capability itself (a sandboxed VM's) cannot grant
            # them all; the agent's own are enough to enter the host.
            status = (self._proc / "self/status").read_text()
            powers = {
                "cap_add": capabilities(status),
                "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
            }
        enter = ("nsenter", "-t", str(self.target_pid), "-m", "-u", "-i", "-n", "-p", "--")
        try:
            created = api.create_container(
                image,
                ["sh", "-c", command.command],
                entrypoint=list(enter),
                name=_container_name(command.id),
                labels={LABEL_HOST_COMMAND: command.id, LABEL_HOST_ID: self.host_id},
                environment={"FLEET_HOST_ID": self.host_id},
                user="0",  # the image's default user has no capabilities to enter with
                host_config=api.create_host_config(
                    pid_mode="host",  # the target is a host process
                    network_mode="host",
                    userns_mode="host",  # root on the host even under userns-remap
                    **powers,
                ),
            )
        except DOCKER_ERRORS as error:
            raise translate("create the host command's container", error) from error
        try:
            api.start(created["Id"])
        except DOCKER_ERRORS as error:
            # Else the next agent finds it "created" and reports it lost.
            with contextlib.suppress(*DOCKER_ERRORS):
                api.remove_container(created["Id"], force=True)
            if privileged and "apply caps" in str(error):
                raise _PrivilegeRefused(str(error)) from error
            raise translate("start the host command's container", error) from error
        return str(created["Id"])

    async def start(self, command: pb.HostCommand, outputs: Path) -> StartedCommand:
        return await asyncio.to_thread(self._start, command, outputs)

    def _left_running(self, outputs: Path) -> list[StartedCommand]:
        api = self.client().api
        try:
            found = api.containers(
                all=True, filters={"label": [LABEL_HOST_COMMAND, f"{LABEL_HOST_ID}={self.host_id}"]}
            )
        except DOCKER_ERRORS as error:
            raise translate("list host commands' containers", error) from error
        left: list[StartedCommand] = []
        for summary in found:
            command_id = summary["Labels"][LABEL_HOST_COMMAND]
            try:
                cmd = api.inspect_container(summary["Id"])["Config"]["Cmd"] or [""]
            except docker.errors.NotFound:
                continue
            except DOCKER_ERRORS as error:
                raise translate("inspect a host command's container", error) from error
            output = output_file(outputs, command_id)
            left.append(_Container(self, summary["Id"], command_id, cmd[-1], output))
        return left

    async def left_running(self, outputs: Path) -> list[StartedCommand]:
        return await asyncio.to_thread(self._left_running, outputs)
