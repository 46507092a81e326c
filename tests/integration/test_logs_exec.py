"""Logs, exec and top through the control plane, relayed over the agents' own streams."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleet.errors import PermissionDenied
from fleet.pki.subjects import Role
from fleet.spec import load_documents
from fleet.testing import wait_until
from fleet.testing.procs import without_fleet_env
from tests.integration.conftest import Fleet, wait_containers

TICKER = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"


def _cli(fleet: Fleet, *args: str) -> tuple[list[str], dict[str, str]]:
    """The CLI command line and environment, with the admin certificate."""
    env = without_fleet_env()
    env["FLEET_PKI_DIR"] = str(fleet.pki.dir)
    fleet.pki.client()
    # Options go before a `--` that starts the command to run.
    cut = args.index("--") if "--" in args else len(args)
    command = [*args[:cut], "--server", fleet.server.address, *args[cut:]]
    return [sys.executable, "-m", "fleet", *command], env


def test_logs_follow_shows_lines_written_after_it_started(fleet: Fleet, tmp_path: Path) -> None:
    spec = f"name: ticker\nimage: {fleet.image}\nreplicas: 2\ncommand: [sh, -c, '{TICKER}']\n"
    fleet.client.apply(load_documents(spec, "ticker.yaml"))
    wait_containers(fleet, "ticker", 2)

    command, env = _cli(fleet, "logs", "ticker", "--follow", "--tail", "0")
    out = (tmp_path / "logs.txt").open("w")
    follower = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        # --tail 0: nothing old; every line seen was written after `logs` started.
        def both_replicas_ticking() -> bool:
            lines = (tmp_path / "logs.txt").read_text().splitlines()
            who = {line.split("|")[0].strip() for line in lines if "| tick " in line}
            return who == {"ticker.0", "ticker.1"}

        wait_until(both_replicas_ticking, 30, what="lines from both replicas")
    finally:
        follower.terminate()
        follower.wait(10)
        out.close()
    first = (tmp_path / "logs.txt").read_text().splitlines()[0]
    assert int(first.rsplit(" ", 1)[1]) > 0  # not the container's first line: a new one

    chunks = list(fleet.client.logs("ticker", slot=1, tail=3))
    assert {(c.app, c.slot, c.host) for c in chunks} == {("ticker", 1, fleet.host.name)}
    assert b"".join(c.data for c in chunks).decode().count("tick") == 3


def test_exec_returns_output_and_exit_code_and_top_lists_processes(fleet: Fleet) -> None:
    spec = f"name: box\nimage: {fleet.image}\ncommand: [sh, -c, 'sleep 3600']\n"
    fleet.client.apply(load_documents(spec, "box.yaml"))
    wait_containers(fleet, "box", 1)

    result = fleet.client.exec("box", ["sh", "-c", "echo hello from $HOSTNAME; exit 7"], slot=0)
    assert result.exit_code == 7 and result.output.startswith(b"hello from ")

    command, env = _cli(fleet, "exec", "box/0", "--", "sh", "-c", "exit 3")
    assert subprocess.run(command, env=env, timeout=60).returncode == 3

    [entry] = fleet.client.top(app="box")
    assert "CMD" in entry.titles
    assert any("sleep 3600" in " ".join(p.fields) for p in entry.processes)
    [entry] = fleet.client.top(host=fleet.host.name)
    assert (entry.app, entry.host) == ("box", fleet.host.name)


def test_logs_and_exec_are_guarded_by_roles(fleet: Fleet) -> None:
    says = "trap 'exit 0' TERM; echo said by quiet; sleep 3600 & wait"
    spec = f'name: quiet\nimage: {fleet.image}\ncommand: [sh, -c, "{says}"]\n'
    fleet.client.apply(load_documents(spec, "q.yaml"))
    wait_containers(fleet, "quiet", 1)
    viewer = fleet.server.client("vera", Role.viewer)
    with viewer, pytest.raises(PermissionDenied, match="read container logs"):
        list(viewer.logs("quiet"))
    with fleet.server.client("dan", Role.deployer) as deployer:
        chunks = wait_until(lambda: list(deployer.logs("quiet")), 10, what="quiet's line")
        assert {(c.app, c.slot) for c in chunks} == {("quiet", 0)}
        assert b"".join(c.data for c in chunks) == b"said by quiet\n"
        with pytest.raises(PermissionDenied, match="run commands in containers"):
            deployer.exec("quiet", ["true"])


def test_stats_shows_live_memory_of_each_replica(fleet: Fleet) -> None:
    spec = (
        f"name: hog\nimage: {fleet.image}\nresources: {{memory: 128Mi}}\n"
        "command: [sh, -c, 'x=$(head -c 50000000 /dev/zero | tr \"\\\\0\" a); sleep 3600 & wait']\n"
    )
    fleet.client.apply(load_documents(spec, "hog.yaml"))
    wait_containers(fleet, "hog", 1)

    def sampled() -> bool:
        [replica] = fleet.client.containers("hog")
        return replica.status.memory_bytes > 40 << 20

    wait_until(sampled, 30, what="the agent to report the replica's memory")
    [replica] = fleet.client.containers("hog")
    assert replica.status.memory_limit == 128 << 20

    command, env = _cli(fleet, "stats", "hog", "--no-stream")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("hog.0")]
    assert "/ 128Mi" in row and fleet.host.name in row
