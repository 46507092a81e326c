"""A running fleet for integration tests: a real ``fleet server`` and ``fleet agent``
(processes) against the session's real etcd and the single namespaced docker host.

Every test gets its own etcd prefix, so tests share one etcd without seeing each other.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker.errors import NotFound

from fleet.client import FleetClient
from fleet.testing import DockerHost, EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.procs import without_fleet_env
from tests.conftest import ensure_image


@dataclass
class Fleet:
    etcd: EtcdServer
    prefix: str
    server: FleetServerProcess
    agent: FleetAgentProcess
    pki: TestPKI
    host: DockerHost
    client: FleetClient
    docker: Any
    image: str

    def wait_connected(self, timeout: float = 20.0) -> None:
        def connected() -> bool:
            return any(h.connected for h in self.client.hosts() if h.host_id == self.host.name)

        self.agent.process.wait_ready(connected, timeout, what="the agent to connect")


def _prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"/t-{name}/"


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest,
    etcd_server: EtcdServer,
    clean_host: DockerHost,
    pki: TestPKI,
    tmp_path: Path,
) -> Iterator[Fleet]:
    image = ensure_image(clean_host)
    prefix = _prefix(request)
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    agent = FleetAgentProcess(
        [server.address], clean_host.name, clean_host.docker_url, tmp_path, pki
    )
    agent.start()
    client = server.client()
    running = Fleet(
        etcd_server, prefix, server, agent, pki, clean_host, client, clean_host.client(), image
    )
    try:
        running.wait_connected()
        yield running
    finally:
        client.close()
        running.agent.stop()  # a test may have replaced the agent with another process
        server.stop()
        # pytest shows captured output only for a failed test: the daemons' last words.
        print(server.process.log_tail(80))
        print(running.agent.process.log_tail(80))


def wait_containers(fleet: Fleet, app: str, count: int, timeout: float = 60.0) -> list[Any]:
    """Wait until the host has exactly ``count`` containers of ``app``, all running (read
    through the Docker SDK, not through fleet); returns them."""
    found: list[Any] = []

    def settled() -> bool:
        nonlocal found
        found = fleet.docker.containers.list(filters={"label": f"fleet.app={app}"}, all=True)
        return len(found) == count and all(c.status == "running" for c in found)

    # A container removed between the list and its inspect is "not settled yet".
    wait_until(settled, timeout, what=f"{count} running containers of {app}", ignore=(NotFound,))
    return found


def fleet_cli(
    *args: str, server: str, pki: TestPKI, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with the admin certificate found through FLEET_PKI_DIR
    (and ``stdin`` as its input, if given)."""
    pki.client()  # make sure client-admin.crt exists in the PKI dir
    env = without_fleet_env()
    env["FLEET_PKI_DIR"] = str(pki.dir)
    command = [sys.executable, "-m", "fleet", *args, "--server", server]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, input=stdin)


__all__ = ["Fleet", "fleet_cli", "wait_containers", "wait_until"]
