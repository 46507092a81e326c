"""``fleet version`` and ``fleet --version`` through the CLI, against a real control
plane on a real etcd (no docker host needed: the version is the server's own)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet import __version__
from fleet.testing import EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.testing.procs import free_port
from tests.integration.conftest import fleet_cli

SERVER_ID = "cp-version"


@pytest.fixture
def server(etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path) -> Iterator[FleetServerProcess]:
    process = FleetServerProcess(
        etcd_server.endpoint, "/t-version/", tmp_path, pki, extra_args=["--server-id", SERVER_ID]
    ).start()
    try:
        yield process
    finally:
        process.stop()


def test_version_shows_the_client_and_the_leading_server(
    server: FleetServerProcess, pki: TestPKI
) -> None:
    with server.client() as client:
        wait_until(lambda: client.server_info().leader, 20, what="the server to lead")

    shown = fleet_cli("version", server=server.address, pki=pki)
    assert shown.returncode == 0, shown.stderr
    client_line, server_line = shown.stdout.splitlines()
    assert client_line.startswith(f"client: {__version__} (python ")
    assert server_line == f"server: {__version__} ({SERVER_ID}, leader)"

    as_json = fleet_cli("version", "-o", "json", server=server.address, pki=pki)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["client"]["version"] == __version__
    assert data["server"] == {"version": __version__, "server_id": SERVER_ID, "leader": True}

    # Every role may ask, as a viewer's certificate shows.
    viewer = server.cli("version", name="watcher", role="viewer")
    assert viewer.returncode == 0, viewer.stderr
    assert f"server: {__version__} ({SERVER_ID}, leader)" in viewer.stdout


def test_version_reports_an_unreachable_server_and_still_succeeds(pki: TestPKI) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    shown = fleet_cli("version", server=nobody, pki=pki)
    assert shown.returncode == 0, shown.stderr
    client_line, server_line = shown.stdout.splitlines()
    assert client_line.startswith(f"client: {__version__}")
    assert server_line.startswith("server: unreachable (cannot reach the fleet control plane")
    assert nobody in server_line

    as_json = json.loads(fleet_cli("version", "-o", "json", server=nobody, pki=pki).stdout)
    assert as_json["server"] is None
    assert as_json["server_error"].startswith("unreachable (")


def test_dash_dash_version_prints_the_client_version_without_connecting() -> None:
    began = time.monotonic()
    # No --server, no certificates: nothing is connected to, so nothing can fail.
    shown = subprocess.run(
        [sys.executable, "-m", "fleet", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"fleet {__version__}\n"
    assert time.monotonic() - began < 10
