"""Safe containers by default: privileges need the cluster policy and the host's agent."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fleet.errors import InvalidArgument, PermissionDenied, PolicyDenied
from fleet.pki.subjects import Role
from fleet.policy import Policy
from fleet.spec import AppSpec, load_documents
from fleet.testing import wait_until
from fleet.testing.fleetprocs import FleetAgentProcess
from fleet.testing.procs import without_fleet_env
from tests.helpers import etcd_prefix, fleet_containers
from tests.integration.conftest import Fleet, wait_containers


def _privileged(image: str) -> list[AppSpec]:
    return load_documents(f"name: root\nimage: {image}\nprivileged: true\n", "root.yaml")


def _restart_agent(fleet: Fleet, tmp_path: Path, *allow: str, binds: Sequence[str] = ()) -> None:
    fleet.agent.stop()
    fleet.agent = FleetAgentProcess(
        [fleet.server.address],
        fleet.host.name,
        fleet.host.docker_url,
        tmp_path,
        fleet.pki,
        extra_args=[arg for word in allow for arg in ("--allow", word)]
        + [arg for path in binds for arg in ("--allow-bind", path)],
    ).start()


def test_privileged_needs_the_policy_and_the_agent(fleet: Fleet, tmp_path: Path) -> None:
    # Default policy: refused at apply, with what to do about it, and nothing stored.
    with pytest.raises(
        PermissionDenied, match=r"privileged: app 'root': privileged is not allowed.*policy set"
    ):
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
    with pytest.raises(PolicyDenied) as refused:  # a PermissionDenied
        fleet.client.apply(spec)
    # Each refused field, named by the app's place in the request (the CLI finds its line).
    assert [str(p).split(" is not")[0] for p in refused.value.problems] == [
        "<request> (document 1): cap_add[0]: app 'logs': capability NET_ADMIN",
        "<request> (document 1): volumes[0]: app 'logs': bind mount of /var/log",
    ]
    fleet.client.set_policy(
        Policy(allow_capabilities=["NET_ADMIN"], allow_bind_mounts=["/var"]).to_proto()
    )
    [change] = fleet.client.apply(spec)
    assert change.action == "created"


def _mounting(name: str, image: str, script: str, *volumes: str) -> list[AppSpec]:
    """An app whose one replica runs ``script`` with ``volumes`` bind-mounted."""
    listed = "".join(f"\n  - {v}" for v in volumes)
    text = f"name: {name}\nimage: {image}\ncommand: [sh, -c, '{script}']\nvolumes:{listed}\n"
    return load_documents(text, f"{name}.yaml")


def _allow_binds_under(fleet: Fleet, tmp_path: Path) -> tuple[Path, Path]:
    """A folder both the cluster policy and the agent allow to bind, and one beside it
    that nothing allows (real paths: the checks compare real paths)."""
    root = Path(os.path.realpath(tmp_path))
    allowed, outside = root / "data", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    fleet.client.set_policy(Policy(allow_bind_mounts=[str(allowed)]).to_proto())
    _restart_agent(fleet, tmp_path, binds=[str(allowed)])
    return allowed, outside


def _wait_refused(fleet: Fleet, app: str) -> str:
    def refused() -> bool:
        return [c.status.state for c in fleet.client.containers(app)] == ["refused"]

    wait_until(refused, 60, what=f"the agent to report {app} refused")
    wait_until(
        lambda: "refused" in {e.kind for e in fleet.client.events(app=app)},
        20,
        what=f"a refused event for {app}",
    )
    return str(fleet.client.containers(app)[0].status.message)


def test_a_symlink_planted_in_an_allowed_folder_does_not_lead_out_of_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    allowed, outside = _allow_binds_under(fleet, tmp_path)
    # App 1 may write in the allowed folder: it plants a symlink to a folder outside it.
    planter = _mounting(
        "planter", fleet.image, f"ln -s {outside} /data/escape; exec sleep 3600", f"{allowed}:/data"
    )
    fleet.client.apply(planter)
    wait_until((allowed / "escape").is_symlink, 60, what="app 1 to plant the symlink")

    # App 2 mounts the symlink, which the words of the policy allow: the agent looks at
    # the host's filesystem, refuses, says why, and Docker is never asked.
    escaper = _mounting(
        "escaper", fleet.image, "touch /host/escaped; exec sleep 3600", f"{allowed}/escape:/host"
    )
    fleet.client.apply(escaper)
    assert _wait_refused(fleet, "escaper") == (
        f"refused by this host's policy: bind mount of {allowed}/escape (it is a symlink to "
        f"{outside}; bind its target explicitly if that is allowed)"
    )
    assert fleet_containers(fleet.docker, "escaper", all=True) == []
    assert not (outside / "escaped").exists()


def test_a_real_folder_under_the_prefix_mounts_until_it_is_swapped_for_a_symlink(
    fleet: Fleet, tmp_path: Path
) -> None:
    allowed, outside = _allow_binds_under(fleet, tmp_path)
    (allowed / "ok").mkdir()
    # A real folder, and one that does not exist yet (Docker makes it at start).
    keeper = _mounting(
        "keeper",
        fleet.image,
        "date >> /ok/starts; touch /new/made; exec sleep 3600",
        f"{allowed}/ok:/ok",
        f"{allowed}/new/sub:/new",
    )
    fleet.client.apply(keeper)
    [container] = wait_containers(fleet, "keeper", 1)
    wait_until((allowed / "new" / "sub" / "made").exists, 30, what="the replica to write")
    assert (allowed / "ok" / "starts").read_text().count("\n") == 1

    # Someone who can write in the allowed folder swaps the mounted folder for a symlink
    # while the replica runs; Docker would follow it on the next start of the container.
    (allowed / "ok").rename(allowed / "ok.old")
    (allowed / "ok").symlink_to(outside)
    container.kill()
    message = _wait_refused(fleet, "keeper")
    assert f"bind mount of {allowed}/ok (it is a symlink to {outside};" in message
    wait_until(
        lambda: fleet_containers(fleet.docker, "keeper", all=True) == [],
        30,
        what="the agent to remove the container it will not start again",
    )
    assert not (outside / "starts").exists()


def test_host_paths_that_are_not_normal_are_refused_at_apply(fleet: Fleet, tmp_path: Path) -> None:
    app_file = tmp_path / "sneaky.yaml"
    app_file.write_text(
        f"name: sneaky\nimage: {fleet.image}\nvolumes:\n"
        "  - /srv/data/../../etc:/x\n"
        "  - /srv/data//y:/y\n"
        "  - /srv/data/./z/:/z:ro\n"
    )
    fleet.client.set_policy(Policy(allow_bind_mounts=["/srv/data"]).to_proto())
    fleet.pki.client()  # the admin certificate, found through FLEET_PKI_DIR
    env = without_fleet_env()
    env["FLEET_PKI_DIR"] = str(fleet.pki.dir)
    command = [sys.executable, "-m", "fleet", "apply", "-f", str(app_file)]
    done = subprocess.run(
        [*command, "--server", fleet.server.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode != 0
    assert f"{app_file}:4 (document 1): volumes[0]: bind mount source /srv/data/../../etc " in (
        done.stderr
    )
    assert f"{app_file}:5 (document 1): volumes[1]: bind mount source /srv/data//y " in done.stderr
    assert "write /srv/data/y" in done.stderr
    assert f"{app_file}:6 (document 1): volumes[2]: " in done.stderr
    assert "write /srv/data/z" in done.stderr

    # A client that skips its own validation meets the control plane's.
    [spec] = load_documents(f"name: sneaky\nimage: {fleet.image}\n", "s.yaml")
    sneaky = spec.model_copy(update={"volumes": ["/srv/data/./etc:/x"]})
    with pytest.raises(InvalidArgument, match=r"bind mount source /srv/data/\./etc"):
        fleet.client.apply([sneaky])
    assert etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/") == {}
