"""``fleet agent`` from fleet's image, as a container in a test host's own dockerd, started
with the README's run line (``agent_container``), and what it needs around it: a
control-plane certificate that names the pool's gateway (``gateway_pki``) and the
files its run line mounts (``AgentFiles``).

Where the run line must differ for a test host (a network namespace with a dockerd of
its own, not a machine):

- the Docker socket is the test host's, mounted at /var/run/docker.sock as on a host;
- ``--network host`` and ``--pid host`` are the test host's dockerd's namespaces: its
  network namespace (so the advertised address is the test host's) and the machine's
  PID namespace;
- /etc/fleet, /var/lib/fleet and the os-release file are per-host directories of the
  test;
- host commands enter the namespaces of the test host's dockerd
  (``--host-command-pid``), not PID 1's: this machine's PID 1 (a microVM's init) refuses
  to be entered. The dockerd shares the machine's mount, UTS, IPC and PID namespaces,
  so a command writes the machine's files, and its network is the test host's;
- the control plane runs on the machine: the hosts reach it at the pool's gateway.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.pki.issuing import issue
from fleet.pki.subjects import Kind
from fleet.testing.certs import TestPKI
from fleet.testing.dockerhosts import DockerHost

__all__ = ["AGENT_NAME", "AgentFiles", "agent_container", "gateway_pki"]

AGENT_NAME = "fleet-agent"


def gateway_pki(directory: Path, gateway: str) -> TestPKI:
    """A fresh test PKI whose control-plane certificate names ``gateway`` too."""
    pki = TestPKI(directory)
    issue(pki.dir, Kind.server, "controlplane", sans=(gateway, "127.0.0.1", "localhost"))
    return pki


@dataclass(frozen=True)
class AgentFiles:
    """One host's /etc/fleet, /var/lib/fleet and os-release, as the run line mounts them."""

    etc: Path
    state: Path
    os_release: Path

    @classmethod
    def make(
        cls,
        directory: Path,
        host_id: str,
        pki: TestPKI,
        server: str,
        allow_host_commands: bool = False,
        version: str = "1",
    ) -> AgentFiles:
        """The host's files under ``directory``: an agent.toml like the shipped one (for
        ``server``), the agent certificate as /etc/fleet/pki names it, an empty state
        dir, an os-release of ``version``."""
        files = cls(
            directory / f"etc-{host_id}",
            directory / f"var-{host_id}",
            directory / f"os-release-{host_id}",
        )
        tls = pki.agent(host_id)
        (files.etc / "pki").mkdir(parents=True, exist_ok=True)
        for source, name in ((tls.ca, "ca.crt"), (tls.cert, "agent.crt"), (tls.key, "agent.key")):
            shutil.copy(source, files.etc / "pki" / name)
        (files.etc / "agent.toml").write_text(
            f'server = "{server}"\nhost-id = "{host_id}"\n'
            'tls-ca = "/etc/fleet/pki/ca.crt"\ntls-cert = "/etc/fleet/pki/agent.crt"\n'
            'tls-key = "/etc/fleet/pki/agent.key"\nstate-dir = "/var/lib/fleet/agent"\n'
            f"allow-host-commands = {str(allow_host_commands).lower()}\n"
        )
        files.state.mkdir(exist_ok=True)
        files.os_release.write_text(f'NAME="Fleet OS"\nVERSION_ID={version}\n')
        return files


def agent_container(
    host: DockerHost,
    image: str,
    files: AgentFiles,
    extra_args: tuple[str, ...] = (),
    name: str = AGENT_NAME,
) -> Any:
    """Start the agent of ``host`` from ``image`` (the README's run line, adapted as the
    module says); returns its container."""
    assert host.daemon_pid is not None, f"{host.name}'s dockerd is not running"
    args = [
        *("agent", "--config", "/etc/fleet/agent.toml", "--os-release", "/host/os-release"),
        *("--host-command-pid", str(host.daemon_pid), *extra_args),
    ]
    return host.client().containers.run(
        image,
        args,
        name=name,
        detach=True,
        restart_policy={"Name": "always"},
        user="0",
        network_mode="host",
        pid_mode="host",
        cgroupns="host",
        cap_add=["SYS_ADMIN", "SYS_PTRACE"],
        security_opt=["apparmor=unconfined", "label=disable"],
        volumes={
            str(host.socket_path): {"bind": "/var/run/docker.sock", "mode": "rw"},
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
            str(files.os_release): {"bind": "/host/os-release", "mode": "ro"},
            str(files.etc): {"bind": "/etc/fleet", "mode": "ro"},
            str(files.state): {"bind": "/var/lib/fleet", "mode": "rw"},
        },
    )
