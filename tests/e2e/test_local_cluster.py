"""`deploy/local-cluster` as a user runs it: `up 2` starts two namespaced docker hosts with
a fleet on them (etcd, server, an agent per host, the demo image), the CLI applies
examples/hello.yaml at 4 replicas, every replica answers at its host's address, and `down`
leaves no namespace or process behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet.testing import free_port, wait_until
from fleet.testing.procs import pid_alive, tail
from tests.helpers import wait_http

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "local-cluster"


def _run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"{proc.args} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    )
    return proc.stdout


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _pids(state: dict[str, Any]) -> dict[str, int]:
    """Every process `up` started, by role: itself, dockerds, etcd, server, agents."""
    fleet = state["fleet"]
    pids = {"cluster": state["pid"], "etcd": fleet["etcd"]["pid"]}
    pids["server"] = fleet["server"]["pid"]
    pids |= {f"dockerd {h['name']}": h["daemon_pid"] for h in state["hosts"]}
    pids |= {f"agent {a['host_id']}": a["pid"] for a in fleet["agents"]}
    return pids


def test_local_cluster_up_apply_hello_and_down(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("deploy/local-cluster needs root")
    state_dir = tmp_path / "cluster"
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, FLEET_CLUSTER_STATE_DIR=str(state_dir), PYTHON=sys.executable)
    env.pop("FLEET_SERVER", None)
    env["FLEET_PKI_DIR"] = str(state_dir / "pki")  # the cluster's CA and admin certificate
    fleet = [sys.executable, "-m", "fleet"]
    app_file = tmp_path / "hello.yaml"
    text, n = re.subn(
        r"^replicas: \d+$", "replicas: 4", (REPO / "examples/hello.yaml").read_text(), flags=re.M
    )
    assert n == 1
    app_file.write_text(text)
    try:
        out = _ok(_run([str(SCRIPT), "up", "2", "--listen", address], env, timeout=120))
        assert f"export FLEET_SERVER={address}" in out
        state = json.loads(_ok(_run([str(SCRIPT), "status", "--json"], env)))
        hosts = {h["name"]: h for h in state["hosts"]}
        assert sorted(hosts) == ["h1", "h2"]
        assert state["fleet"]["server"]["address"] == address
        for name, h in hosts.items():
            assert f"{name:<4} {h['address']:<15} {h['docker_url']}" in out
        pids = _pids(state)
        assert all(pid_alive(pid) for pid in pids.values()), pids

        _ok(_run([*fleet, "apply", "-f", str(app_file), "--server", address], env))

        def running() -> list[dict[str, Any]]:
            ps = _ok(_run([*fleet, "ps", "hello", "-o", "json", "--server", address], env))
            rows = [r for r in json.loads(ps) if (r.get("status") or {}).get("state") == "running"]
            placed = {r["host"] for r in rows}
            return rows if len(rows) == 4 and placed == {"h1", "h2"} else []

        rows = wait_until(running, 40, interval=0.2, what="4 replicas running on h1 and h2")
        for row in rows:
            host = row["host"]
            port = int(row["status"]["ports"][0]["host_port"])
            body = wait_http(hosts[host]["address"], port, f"Hello from fleet on {host}!")
            assert body == f"Hello from fleet on {host}!\n"

        _ok(_run([str(SCRIPT), "down"], env, timeout=120))

        netns = {h["netns"] for h in hosts.values()}
        assert not netns & _netns()
        assert not Path("/sys/class/net", state["bridge"]).exists()
        assert not [role for role, pid in pids.items() if pid_alive(pid)]
        ours = [address, str(state_dir), f"/run/fleet-test/{state['prefix']}/"]
        leftovers = _ok(_run(["ps", "-eo", "pid=,args="], env)).splitlines()
        assert not [p for p in leftovers if any(mark in p for mark in ours)]
        assert not (state_dir / "cluster.json").exists()
        assert not (state_dir / "etcd" / "data").exists()
    finally:
        down = _run([str(SCRIPT), "down"], env, timeout=120)
        print(down.stdout, down.stderr)
        print(tail(state_dir / "cluster.log", 60))  # shown only when the test failed
        for log in sorted(state_dir.glob("*.log")):
            print(f"--- {log.name}\n{tail(log, 20)}")
