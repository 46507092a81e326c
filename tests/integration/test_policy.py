"""Safe containers by default: privileges need the cluster policy and the host's agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleet.errors import PermissionDenied
from fleet.pki import Role
from fleet.policy import Policy
from fleet.spec import AppSpec, load_documents
from fleet.testing import wait_until
from fleet.testing.fleetprocs import FleetAgentProcess
from tests.helpers import etcd_prefix, fleet_containers
from tests.integration.conftest import Fleet, wait_containers


def _privileged(image: str) -> list[AppSpec]:
    return load_documents(f"name: root\nimage: {image}\nprivileged: true\n", "root.yaml")


def _restart_agent(fleet: Fleet, tmp_path: Path, *allow: str) -> None:
    fleet.agent.stop()
    fleet.agent = FleetAgentProcess(
        [fleet.server.address],
        fleet.host.name,
        fleet.host.docker_url,
        tmp_path,
        fleet.pki,
        extra_args=[arg for word in allow for arg in ("--allow", word)],
    ).start()


def test_privileged_needs_the_policy_and_the_agent(fleet: Fleet, tmp_path: Path) -> None:
    # Default policy: refused at apply, with what to do about it, and nothing stored.
    with pytest.raises(PermissionDenied, match=r"asks for privileged.*fleet policy set"):
        fleet.client.apply(_privileged(fleet.image))
    assert etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/") == {}

    # Only an admin changes the policy.
    with fleet.server.client("dan", Role.deployer) as deployer, pytest.raises(PermissionDenied):
        deployer.set_policy(Policy(allow_privileged=True).to_proto())
    fleet.client.set_policy(Policy(allow_privileged=True).to_proto())
    assert fleet.client.policy().allow_privileged

    # The control plane now accepts it, but this host's agent does not allow it.
    fleet.client.apply(_privileged(fleet.image))

    def refused() -> bool:
        return [c.status.state for c in fleet.client.containers("root")] == ["refused"]

    wait_until(refused, 30, what="the agent to report the replica refused")
    message = fleet.client.containers("root")[0].status.message
    assert message == "refused by this host's policy: privileged"
    assert fleet_containers(fleet.docker, "root", all=True) == []

    # An agent started with --allow privileged creates it, privileged. (Whether it then
    # starts depends on the machine: in a sandbox without all capabilities runc cannot
    # grant them, so this checks the container Docker was asked to create.)
    _restart_agent(fleet, tmp_path, "privileged")

    def created() -> list[Any]:
        return fleet_containers(fleet.docker, "root", all=True)

    [container] = wait_until(created, 30, what="the privileged container to be created")
    assert container.attrs["HostConfig"]["Privileged"] is True


def test_host_network_runs_once_policy_and_agent_allow_it(fleet: Fleet, tmp_path: Path) -> None:
    spec = load_documents(f"name: edge\nimage: {fleet.image}\nhost_network: true\n", "e.yaml")
    fleet.client.set_policy(Policy(allow_host_network=True).to_proto())
    _restart_agent(fleet, tmp_path, "host-network")
    fleet.client.apply(spec)
    [container] = wait_containers(fleet, "edge", 1)
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"


def test_bind_mounts_and_capabilities_follow_the_policy(fleet: Fleet) -> None:
    spec = load_documents(
        f"name: logs\nimage: {fleet.image}\nvolumes: ['/var/log:/host-logs:ro']\n"
        "cap_add: [NET_ADMIN]\n",
        "logs.yaml",
    )
    with pytest.raises(PermissionDenied, match="capability NET_ADMIN, bind mount of /var/log"):
        fleet.client.apply(spec)
    fleet.client.set_policy(
        Policy(allow_capabilities=["NET_ADMIN"], allow_bind_mounts=["/var"]).to_proto()
    )
    [change] = fleet.client.apply(spec)
    assert change.action == "created"
