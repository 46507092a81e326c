"""Failure reasons where operators look (#23), through the real CLI against a real
control plane and agent: ``fleet ps`` names what each replica is doing and why (an
unplaced one included), a rollout that was rolled back ends with the cause, and
``rollout history`` and ``describe`` say it too."""

from __future__ import annotations

import json
import subprocess

from fleet.spec import load_documents
from tests.integration.conftest import Fleet, fleet_cli, wait_containers, wait_until


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet_cli(*args, server=fleet.server.address, pki=fleet.pki)


def _rows(fleet: Fleet, app: str) -> list[list[str]]:
    """``fleet ps APP``'s rows, split on runs of two spaces or more (cells have one)."""
    import re

    done = _cli(fleet, "ps", app)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip())[:4] == ["REPLICA", "HOST", "STATUS", "RESTARTS"]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def test_ps_says_crash_looping_with_exit_code_and_restarts(fleet: Fleet) -> None:
    fleet.client.apply(
        load_documents(
            f"name: cl\nimage: {fleet.image}\ncommand: [sh, -c, 'exit 1']\nrestart: always\n"
        )
    )

    def looping() -> list[str] | None:
        rows = _rows(fleet, "cl")
        found = [r for r in rows if r[2].startswith("crash-looping (exit 1, ")]
        return found[0] if found else None

    row = wait_until(looping, 30, what="fleet ps to say crash-looping")
    assert row[0] == "cl.0" and row[1] == fleet.host.name
    restarts = int(row[3])
    assert restarts >= 3 and f"{restarts} restarts)" in row[2], row


def test_ps_lists_an_unplaced_replica_with_why(fleet: Fleet) -> None:
    fleet.client.apply(
        load_documents(
            f"name: fit\nimage: {fleet.image}\nreplicas: 2\nresources: {{memory: 1Gi}}\n"
            f"---\nname: huge\nimage: {fleet.image}\nresources: {{memory: 100000Gi}}\n"
        )
    )
    wait_containers(fleet, "fit", 2)
    rows = wait_until(lambda: _rows(fleet, "huge") or None, 20, what="a row for huge.0")
    [(replica, host, status, restarts, *_rest, reason)] = rows
    assert (replica, host, status, restarts) == ("huge.0", "-", "pending", "0"), rows
    assert "hosts fit" in reason or "memory" in reason, rows
    listed = json.loads(_cli(fleet, "ps", "-o", "json").stdout)
    [unplaced] = [r for r in listed if r["app"] == "huge"]
    assert unplaced["host"] == "" and unplaced["pending"], unplaced
    assert sorted(r["slot"] for r in listed if r["app"] == "fit") == [0, 1]


def test_get_apps_never_says_complete_with_nothing_up(fleet: Fleet) -> None:
    fleet.client.apply(
        load_documents(
            f"name: down\nimage: {fleet.image}\nreplicas: 2\ncommand: [sh, -c, 'exit 1']\n"
            "restart: always\n"
        )
    )

    def troubled() -> list[str] | None:
        done = _cli(fleet, "get", "apps", "-o", "wide")
        rows = [line.split() for line in done.stdout.splitlines()[1:] if line.startswith("down ")]
        return rows[0] if rows and "crash-looping" in rows[0] else None

    row = wait_until(troubled, 30, what="get apps to say crash-looping")
    assert row[1] == "0/2" or row[2] == "0", row
    assert "complete" not in row, row


def test_a_rolled_back_rollout_ends_with_its_cause(fleet: Fleet) -> None:
    good = f"name: rb\nimage: {fleet.image}\nreplicas: 1\nupdate: {{min_ready: 0}}\n"
    fleet.client.apply(load_documents(good))
    wait_until(lambda: fleet.client.rollout_status("rb").state == "complete", 30, what="v1 up")
    fleet.client.apply(load_documents(good + "command: [sh, -c, 'exit 1']\nrestart: always\n"))
    done = _cli(fleet, "rollout", "status", "rb", "--timeout", "50s")
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "crash-looping" in last and "rolled back to revision 1" in last, last
    assert "exit code 1" in last, last

    history = json.loads(_cli(fleet, "rollout", "history", "rb", "-o", "json").stdout)
    by_revision = {r["revision"]: r for r in history}
    assert by_revision[2]["outcome"] == "rolled back", history
    assert "crash-looping" in by_revision[2]["outcome_reason"], history
    table = _cli(fleet, "rollout", "history", "rb")
    assert "rolled back" in table.stdout and "crash-looping" in table.stdout, table.stdout
