"""``fleet pause``, ``unpause`` and ``kill`` on an app's replicas, through the real CLI,
control plane and agent, read back from dockerd: a SIGHUP reaches every replica's
process, a pause holds one replica paused (the agent leaves it so) until unpause, a
KILL ends a replica that its restart policy then starts again; viewers may not."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.errors import PermissionDenied
from fleet.pki.subjects import Role
from fleet.spec import load_documents
from fleet.testing import wait_until
from tests.integration.conftest import Fleet, fleet_cli, wait_containers

# Its process says so when it gets a SIGHUP (a trap runs between two short sleeps).
HUPPY = "trap 'echo got-hup' HUP; while true; do sleep 0.1; done"


def _containers(fleet: Fleet) -> dict[int, Any]:
    found = fleet.docker.containers.list(filters={"label": "fleet.app=sig"}, all=True)
    return {int(c.labels["fleet.slot"]): c for c in found}


def _cli(fleet: Fleet, *args: str) -> tuple[int, str]:
    result = fleet_cli(*args, server=fleet.server.address, pki=fleet.pki)
    return result.returncode, result.stdout + result.stderr


def test_pause_unpause_and_kill_reach_the_replicas(fleet: Fleet) -> None:
    spec = f'name: sig\nimage: {fleet.image}\nreplicas: 2\ncommand: [sh, -c, "{HUPPY}"]\n'
    fleet.client.apply(load_documents(spec, "sig.yaml"))
    wait_containers(fleet, "sig", 2)

    code, out = _cli(fleet, "kill", "sig", "--signal", "hup")
    assert code == 0, out
    assert f"sig.0 on {fleet.host.name}: sent SIGHUP" in out and "sig.1 on" in out

    def both_hung_up() -> bool:
        return all(b"got-hup" in c.logs() for c in _containers(fleet).values())

    wait_until(both_hung_up, 15, what="both replicas to log their SIGHUP")

    code, out = _cli(fleet, "pause", "sig/0")
    assert code == 0 and "sig.0" in out and "sig.1" not in out, out
    states = {slot: c.attrs["State"] for slot, c in _containers(fleet).items()}
    assert states[0]["Paused"] and not states[1]["Paused"]

    # The agent reports it paused, and leaves it so (a reconcile round has seen it).
    def reported_paused() -> bool:
        return {c.slot: c.status.state for c in fleet.client.containers("sig")}[0] == "paused"

    wait_until(reported_paused, 15, what="the agent to report sig.0 paused")
    assert _containers(fleet)[0].attrs["State"]["Paused"]

    code, out = _cli(fleet, "unpause", "sig/0")
    assert code == 0, out
    assert not _containers(fleet)[0].attrs["State"]["Paused"]

    # KILL ends replica 1's container; its restart policy starts it again.
    started = _containers(fleet)[1].attrs["State"]["StartedAt"]
    code, out = _cli(fleet, "kill", "sig/1")
    assert code == 0 and "sent SIGKILL" in out, out

    def restarted() -> bool:
        state = _containers(fleet)[1].attrs["State"]
        return bool(state["Running"] and state["StartedAt"] != started)

    wait_until(restarted, 20, what="sig.1 to be restarted after its KILL")


def test_signals_are_refused_to_viewers_and_bad_signals_say_why(fleet: Fleet) -> None:
    spec = f"name: sig\nimage: {fleet.image}\ncommand: [sleep, '3600']\n"
    fleet.client.apply(load_documents(spec, "sig.yaml"))
    wait_containers(fleet, "sig", 1)
    viewer = fleet.server.client("vera", Role.viewer)
    with viewer, pytest.raises(PermissionDenied, match="change apps"):
        viewer.signal_replicas("sig", "pause")
    code, out = _cli(fleet, "kill", "sig", "--signal", "NOPE")
    assert code == 1 and "not a signal name" in out
    assert not _containers(fleet)[0].attrs["State"]["Paused"]
