"""The sibling container a host command runs in: its shape, and the fallback to the
agent's own capabilities where dockerd cannot grant them all (a real dockerd runs it in
tests/integration/test_host_command_containers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker.errors
import pytest

from fleet.agent.hostcontainer import LABEL_HOST_COMMAND, LABEL_HOST_ID, ContainerRunner
from fleet.errors import FleetError
from fleet.proto import fleet_pb2 as pb

REFUSED = (
    "failed to create shim task: OCI runtime create failed: runc create failed: unable to "
    "start container process: unable to apply caps: operation not permitted: unknown"
)


class _Api:
    """What the runner asks of docker-py's low-level client."""

    def __init__(self, refuse_privileged: bool, fail_start: str = "") -> None:
        self.refuse_privileged = refuse_privileged
        self.fail_start = fail_start
        self.created: list[dict[str, Any]] = []
        self.removed: list[str] = []

    def create_host_config(self, **options: Any) -> dict[str, Any]:
        return options

    def create_container(self, image: str, command: list[str], **options: Any) -> dict[str, str]:
        self.created.append({"image": image, "command": command, **options})
        return {"Id": f"c{len(self.created)}"}

    def start(self, container_id: str) -> None:
        privileged = self.created[-1]["host_config"].get("privileged")
        if self.fail_start or (privileged and self.refuse_privileged):
            raise docker.errors.APIError("500 Server Error", explanation=self.fail_start or REFUSED)

    def remove_container(self, container_id: str, force: bool = False) -> None:
        self.removed.append(container_id)


class _Client:
    def __init__(self, api: _Api) -> None:
        self.api = api


def _proc(tmp_path: Path) -> Path:
    (tmp_path / "self").mkdir()
    (tmp_path / "self/status").write_text("CapEff:\t00000000a82c25fb\n")
    return tmp_path


async def test_a_command_runs_privileged_in_the_hosts_namespaces(tmp_path: Path) -> None:
    api = _Api(refuse_privileged=False)
    runner = ContainerRunner(lambda: _Client(api), "h1", "fleet:1", target_pid=1)
    command = pb.HostCommand(id="u1/h1", command="rpm-ostree upgrade --reboot")
    started = await runner.start(command, tmp_path)
    [created] = api.created
    assert (started.id, started.command) == ("u1/h1", "rpm-ostree upgrade --reboot")
    assert created["image"] == "fleet:1"
    assert created["entrypoint"] == ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--"]
    assert created["command"] == ["sh", "-c", "rpm-ostree upgrade --reboot"]
    assert created["name"] == "fleet-host-command-u1-h1"
    assert created["labels"] == {LABEL_HOST_COMMAND: "u1/h1", LABEL_HOST_ID: "h1"}
    assert created["environment"] == {"FLEET_HOST_ID": "h1"}
    assert created["user"] == "0"
    assert created["host_config"] == {
        "pid_mode": "host",
        "network_mode": "host",
        "userns_mode": "host",
        "privileged": True,
    }


async def test_where_dockerd_cannot_grant_every_capability_the_agents_own_are_used(
    tmp_path: Path,
) -> None:
    api = _Api(refuse_privileged=True)
    runner = ContainerRunner(lambda: _Client(api), "h1", "fleet:1", proc=_proc(tmp_path))
    await runner.start(pb.HostCommand(id="u1-h1", command="true"), tmp_path)
    privileged, capable = api.created
    assert api.removed == ["c1"]  # the refused one, so its name is free again
    assert "cap_add" not in privileged["host_config"]
    assert capable["host_config"]["cap_add"][-4:] == [
        "SYS_ADMIN",
        "MKNOD",
        "AUDIT_WRITE",
        "SETFCAP",
    ]
    assert capable["host_config"]["security_opt"] == ["seccomp=unconfined", "apparmor=unconfined"]
    assert "privileged" not in capable["host_config"]


async def test_a_container_that_cannot_start_is_removed_and_said(tmp_path: Path) -> None:
    api = _Api(refuse_privileged=False, fail_start="exec: nsenter: not found")
    runner = ContainerRunner(lambda: _Client(api), "h1", "busybox:1")
    with pytest.raises(FleetError, match="nsenter: not found"):
        await runner.start(pb.HostCommand(id="u1-h1", command="true"), tmp_path)
    assert api.removed == ["c1"]
