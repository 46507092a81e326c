"""Failure reasons where operators look (#23), through the real CLI against a real
control plane and agent: ``fleet ps`` names what each replica is doing and why (an
unplaced one included), and ``get apps`` never calls an app with nothing up complete.
(A rolled-back rollout's cause: test_cli_rollback_reasons.)"""

from __future__ import annotations

import json
import re
import subprocess

from fleet.spec import load_documents
from tests.integration.conftest import Fleet, fleet_cli, wait_containers, wait_until


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet_cli(*args, server=fleet.server.address, pki=fleet.pki)


def _rows(fleet: Fleet, app: str) -> list[list[str]]:
    """``fleet ps APP``'s rows, split on runs of two spaces or more (cells have one)."""
    done = _cli(fleet, "ps", app)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip())[:4] == ["REPLICA", "HOST", "STATUS", "RESTARTS"]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def test_a_crash_looping_app_in_ps_and_get_apps(fleet: Fleet) -> None:
    fleet.client.apply(
        load_documents(
            f"name: cl\nimage: {fleet.image}\nreplicas: 2\ncommand: [sh, -c, 'exit 1']\n"
            "restart: always\n"
        )
    )

    def looping() -> list[list[str]] | None:
        rows = _rows(fleet, "cl")
        found = [r for r in rows if r[2].startswith("crash-looping (")]
        # (Docker clears the exit code while a restarted one runs: wait for one exited.)
        exited = any(r[2].startswith("crash-looping (exit 1, ") for r in found)
        return found if len(found) == 2 and exited else None

    rows = wait_until(looping, 30, what="fleet ps to say crash-looping for both")
    assert [r[0] for r in rows] == ["cl.0", "cl.1"] and {r[1] for r in rows} == {fleet.host.name}
    for row in rows:
        restarts = int(row[3])
        assert restarts >= 3 and f"{restarts} restarts)" in row[2], row

    # get apps never calls an app with nothing up complete, and says why (wide too).
    done = _cli(fleet, "get", "apps", "-o", "wide")
    [row] = [line.split() for line in done.stdout.splitlines()[1:] if line.startswith("cl ")]
    assert row[2] == "0" and "complete" not in row and "crash-looping" in row, done.stdout


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
