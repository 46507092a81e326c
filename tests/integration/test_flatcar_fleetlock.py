"""Flatcar's reboot through fleet's FleetLock: the `fleet-lock` script deploy/flatcar's
agent.bu installs (taken from the rendered Ignition config, as a host would get it),
run against a real control plane and agent, with update_engine_client and systemctl
stood in for (they are Flatcar's). With no update staged it does nothing; with one, it
asks for the lock until fleet has drained the host, then reboots; back from the
"reboot" (the agent restarted on a new OS version), steady-state gives the slot back and
fleet uncordons the host."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from fleet.errors import NotFound
from fleet.install.butane import render_file
from fleet.testing import DockerHost, EtcdServer, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.ignition import decode_contents

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "flatcar-default-token-0123"


def _script(pki: TestPKI, tmp: Path) -> Path:
    files = tmp / "node1-files" / "pki"
    files.mkdir(parents=True)
    agent = pki.agent("node1")
    shutil.copy(pki.ca, files / "ca.crt")
    shutil.copy(agent.cert, files / "agent.crt")
    shutil.copy(agent.key, files / "agent.key")
    config = render_file(ROOT / "deploy/flatcar/agent.bu", files_dir=tmp / "node1-files")
    [node] = [f for f in config["storage"]["files"] if f["path"] == "/opt/bin/fleet-lock"]
    script = tmp / "fleet-lock"
    script.write_bytes(decode_contents(node["contents"]))
    script.chmod(0o755)
    return script


def _stubs(tmp: Path, status: str) -> Path:
    """update_engine_client saying ``status``; systemctl writing what it was asked."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    engine = bin_dir / "update_engine_client"
    engine.write_text(f"#!/bin/sh\necho CURRENT_OP={status}\n")
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {tmp / "systemctl.calls"}\n')
    for stub in (engine, systemctl):
        stub.chmod(0o755)
    return bin_dir


def test_flatcar_hosts_reboot_through_fleet_lock(
    clean_host: DockerHost, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    script = _script(pki, tmp_path)
    (tmp_path / "tokens").write_text(f"default {TOKEN}\n")
    port = free_port()
    args = [
        "--fleetlock-listen",
        f"127.0.0.1:{port}",
        "--fleetlock-tokens",
        str(tmp_path / "tokens"),
    ]
    server = FleetServerProcess(
        etcd_server.endpoint, "/flatcar-lock/", tmp_path, pki, extra_args=args
    ).start()
    os_release = tmp_path / "os-release"
    os_release.write_text('NAME="Flatcar"\nVERSION_ID=1\n')

    def agent() -> FleetAgentProcess:
        extra = ["--os-release", str(os_release), "--advertise-address", clean_host.address]
        return FleetAgentProcess(
            [server.address], clean_host.name, clean_host.docker_url, tmp_path, pki, None, extra
        ).start()

    running = agent()
    client = server.client()
    env = {
        **os.environ,
        "FLEETLOCK_URL": f"https://default:{TOKEN}@127.0.0.1:{port}",
        "FLEETLOCK_ID": clean_host.name,
        "FLEETLOCK_CACERT": str(pki.ca),
        "FLEETLOCK_RETRY_SECONDS": "0.3",
    }

    def run(action: str, status: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        path = f"{_stubs(tmp_path, status)}:{env['PATH']}"
        return subprocess.run(
            [str(script), action], env={**env, "PATH": path}, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def host() -> tuple[str, str, bool]:
        [h] = client.hosts(clean_host.name)
        return h.state, h.maintenance, h.connected

    calls = tmp_path / "systemctl.calls"
    try:
        wait_until(lambda: host()[2], 30, what="the agent to connect", ignore=(NotFound,))
        # After a boot with nothing held: steady-state is a no-op, 200.
        assert run("steady-state", "UPDATE_STATUS_IDLE").returncode == 0
        # No update staged: nothing asked, nothing rebooted.
        idle = run("reboot-if-needed", "UPDATE_STATUS_IDLE")
        assert idle.returncode == 0 and not calls.exists(), idle.stderr
        assert host() == ("ready", "", True)

        # An update staged: the lock once fleet drained the host, then the reboot.
        staged = run("reboot-if-needed", "UPDATE_STATUS_UPDATED_NEED_REBOOT")
        assert staged.returncode == 0, staged.stderr
        assert calls.read_text() == "reboot\n"
        state, holder, _ = host()
        assert state in ("draining", "drained", "maintenance", "cordoned"), state
        assert holder, "the host holds no maintenance slot while it reboots"

        # "Rebooted" into the new version: steady-state gives the slot back.
        running.stop()
        os_release.write_text('NAME="Flatcar"\nVERSION_ID=2\n')
        running = agent()
        back = run("steady-state", "UPDATE_STATUS_IDLE")
        assert back.returncode == 0, back.stderr
        wait_until(lambda: host() == ("ready", "", True), 30, what="the host uncordoned")
        assert calls.read_text() == "reboot\n"  # once
    finally:
        client.close()
        running.stop()
        server.stop()
        print(server.process.log_tail(40))
