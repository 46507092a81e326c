"""A rollout that was rolled back, through the real CLI against a real control plane
and agent (#23): ``rollout status`` ends with the cause and exit code 2, ``rollout
history`` says which revision was rolled back and why, and ``describe`` says it too,
as one object with ``-o json``."""

from __future__ import annotations

import json
import subprocess

from fleet.spec import load_documents
from tests.integration.conftest import Fleet, fleet_cli, wait_until


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet_cli(*args, server=fleet.server.address, pki=fleet.pki)


def test_a_rolled_back_rollout_ends_with_its_cause(fleet: Fleet) -> None:
    # min_ready 1s: a container that exits at once is never available, even briefly.
    good = f"name: rb\nimage: {fleet.image}\nreplicas: 1\nupdate: {{min_ready: 1}}\n"
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

    # describe says it too, as one object with the rollout and the recent events.
    described = _cli(fleet, "describe", "app", "rb", "-o", "json")
    assert described.returncode == 0, described.stdout + described.stderr
    document = json.loads(described.stdout)
    assert set(document) == {"app", "rollout", "containers", "events"}, document
    assert document["app"]["name"] == "rb"
    assert document["rollout"]["rollback_of"] == 2, document["rollout"]
    assert "crash-looping" in document["rollout"]["failure"], document["rollout"]
    assert document["events"] and all(e["app"] == "rb" for e in document["events"])
    text = _cli(fleet, "describe", "app", "rb")
    assert "rolled back: revision 2 failed: replica 0 is crash-looping" in text.stdout, text.stdout
    assert "events" in text.stdout and "TIME" in text.stdout, text.stdout
    as_json = _cli(fleet, "describe", "host", fleet.host.name, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    host_doc = json.loads(as_json.stdout)
    assert set(host_doc) == {"host", "containers", "events"}
    assert host_doc["host"]["host_id"] == fleet.host.name
    assert "blocked" in host_doc["host"]

    # A later rollout (revision 3) leaves revision 2's outcome in its record.
    fleet.client.apply(load_documents(good + "env: {V: '3'}\n"))
    wait_until(
        lambda: (s := fleet.client.rollout_status("rb")).revision == 3 and s.state == "complete",
        30,
        what="revision 3 rolled out",
    )
    later = json.loads(_cli(fleet, "rollout", "history", "rb", "-o", "json").stdout)
    outcomes = {r["revision"]: (r["outcome"], r["outcome_reason"]) for r in later}
    assert outcomes[2][0] == "rolled back" and "crash-looping" in outcomes[2][1], later
    assert outcomes[3] == ("complete", "") and outcomes[1][0] == "complete", later
