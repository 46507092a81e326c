"""Daily habits of kubectl and docker users, through the real CLI against a real
control plane and agent: `scale --wait`, and `delete` of several names that goes on
past a missing one (or ignores it when asked)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from fleet.spec import load_documents
from fleet.store.keys import KeyLayout
from tests.helpers import etcd_json
from tests.integration.conftest import Fleet, fleet_cli, wait_containers, wait_until


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet_cli(*args, server=fleet.server.address, pki=fleet.pki)


def _apply(fleet: Fleet, *names: str) -> None:
    text = "\n---\n".join(f"name: {n}\nimage: {fleet.image}\nreplicas: 1\n" for n in names)
    fleet.client.apply(load_documents(text))


def test_scale_wait_returns_once_the_replicas_are_available(fleet: Fleet) -> None:
    _apply(fleet, "sw")
    wait_containers(fleet, "sw", 1)
    up = fleet_cli(
        "scale", "sw", "3", "--wait", "--timeout", "60s", server=fleet.server.address, pki=fleet.pki
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "app/sw: 3 replica(s) available" in up.stdout
    # Returned only once Docker runs them (read back through the SDK, not fleet).
    # (The low-level list: no inspect of a container being removed meanwhile.)
    running = fleet.docker.api.containers(filters={"label": "fleet.app=sw"})
    assert len(running) == 3
    [info] = fleet.client.apps("sw")
    assert (info.running, info.available) == (3, 3)
    down = _cli(fleet, "scale", "sw", "0", "--wait")
    assert down.returncode == 0, down.stdout + down.stderr
    assert fleet.docker.api.containers(filters={"label": "fleet.app=sw"}) == []


def test_delete_takes_several_names_and_goes_on_past_a_missing_one(fleet: Fleet) -> None:
    _apply(fleet, "da", "db", "dc")
    for name in ("da", "db", "dc"):
        wait_containers(fleet, name, 1)
    gone = fleet_cli(
        "delete", "app", "da", "nope", "db", server=fleet.server.address, pki=fleet.pki
    )
    assert gone.returncode == 1
    assert "app/da deleted" in gone.stdout and "app/db deleted" in gone.stdout
    assert "nope" in gone.stderr
    assert [a.name for a in fleet.client.apps()] == ["dc"]
    ignored = fleet_cli(
        "delete",
        "app",
        "nope",
        "dc",
        "--ignore-not-found",
        server=fleet.server.address,
        pki=fleet.pki,
    )
    assert ignored.returncode == 0, ignored.stdout + ignored.stderr
    assert "app/nope not found (ignored)" in ignored.stdout
    assert fleet.client.apps() == []
    for name in ("da", "db", "dc"):
        wait_containers(fleet, name, 0)


def test_logs_of_one_replica_by_app_slot(fleet: Fleet) -> None:
    command = '["sh", "-c", "echo hello; sleep 3600"]'
    fleet.client.apply(
        load_documents(f"name: la\nimage: {fleet.image}\nreplicas: 2\ncommand: {command}\n")
    )
    wait_containers(fleet, "la", 2)

    def said_hello(*target: str) -> list[str] | None:
        done = _cli(fleet, "logs", *target)
        lines = [line for line in done.stdout.splitlines() if "hello" in line]
        return lines if done.returncode == 0 and lines else None

    both = wait_until(lambda: said_hello("la"), 30, what="both replicas' hello")
    wait_until(
        lambda: {line.split()[0] for line in said_hello("la") or []} == {"la.0", "la.1"},
        30,
        what="a hello from each replica",
    )
    assert both
    one = said_hello("la/1")
    assert one and all(line.startswith("la.1 ") for line in one), one
    bad = _cli(fleet, "logs", "la/x")
    assert bad.returncode != 0 and "expected APP or APP/SLOT" in bad.stderr


# The JSON of `get app NAME` and `get host NAME`: an interface, so these are written
# out (a renamed key fails here); numbers are numbers, 64-bit ones too.
APP_KEYS = {
    "name", "spec", "generation", "revision", "desired", "placed", "running", "pending",
    "created_at", "updated_at", "available", "updated", "rollout", "mode", "job", "reason",
    "message",
}  # fmt: skip
HOST_KEYS = {
    "host_id", "state", "connected", "capacity", "reserved", "usage", "labels", "facts",
    "containers", "registered_at", "last_heartbeat_at", "address", "maintenance",
    "remaining", "blocked", "drain_deadline", "drain_force", "agent_labels",
    "reported_capacity", "cert_serial", "ingress", "cert_expires", "past_serials",
}  # fmt: skip


def test_get_one_app_or_host_as_json_is_an_object_with_numbers(fleet: Fleet) -> None:
    _apply(fleet, "js")
    wait_containers(fleet, "js", 1)
    app = json.loads(_cli(fleet, "get", "app", "js", "-o", "json").stdout)
    assert set(app) == APP_KEYS
    assert (app["name"], app["generation"], app["revision"], app["desired"]) == ("js", 1, 1, 1)
    assert app["spec"]["image"] == fleet.image
    host = json.loads(_cli(fleet, "get", "host", fleet.host.name, "-o", "json").stdout)
    assert set(host) == HOST_KEYS
    assert isinstance(host["capacity"]["memory_bytes"], int) and host["connected"] is True
    listed = json.loads(_cli(fleet, "get", "apps", "-o", "json").stdout)
    assert [set(a) for a in listed] == [APP_KEYS]  # a list, with the same keys
    shown = wait_until(
        lambda: (out := _cli(fleet, "events", "--app", "js").stdout).count("\n") >= 2 and out,
        30,
        what="events of js",
    )
    assert shown.split()[:5] == ["TIME", "HOST", "REPLICA", "KIND", "MESSAGE"], shown
    missing = _cli(fleet, "get", "app", "nope", "-o", "json")
    assert missing.returncode == 1 and "nope" in missing.stderr


def _etcd(fleet: Fleet, key: bytes) -> dict[str, Any] | None:
    return etcd_json(fleet.etcd, key.decode())


def test_upgrade_hosts_cancel_ends_the_walk_and_gives_back_what_it_holds(fleet: Fleet) -> None:
    """A walk without a command drains the one host and leaves it out for ops
    ("upgrading"); `--cancel` ends the walk, gives the maintenance slot back and leaves
    the host cordoned (its upgrade may be under way), as etcd shows; a new walk may
    start."""
    keys = KeyLayout(fleet.prefix)
    host = fleet.host.name
    started = _cli(fleet, "upgrade-hosts", "--no-wait")
    assert started.returncode == 0, started.stdout + started.stderr

    def out_for_its_upgrade() -> bool:
        walk = _etcd(fleet, keys.upgrade())
        return walk is not None and walk["hosts"][host]["phase"] == "upgrading"

    wait_until(out_for_its_upgrade, 30, what="the host drained and out for its upgrade")
    assert _etcd(fleet, keys.maintenance())["holders"] == {host: "upgrade-hosts"}  # type: ignore[index]
    cancelled = _cli(fleet, "upgrade-hosts", "--cancel", "-o", "json")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    shown = json.loads(cancelled.stdout)
    assert shown["state"] == "cancelled"
    assert [(h["host_id"], h["phase"]) for h in shown["hosts"]] == [(host, "cancelled")]
    # What etcd holds, not what the CLI said.
    walk = _etcd(fleet, keys.upgrade())
    assert walk is not None and walk["state"] == "cancelled"
    assert _etcd(fleet, keys.maintenance())["holders"] == {}  # type: ignore[index]
    record = _etcd(fleet, keys.host(host))
    assert record is not None and record["state"] == "cordoned" and record.get("drain") is None
    again = _cli(fleet, "upgrade-hosts", "--cancel")
    assert again.returncode != 0 and "no upgrade walk to cancel" in again.stderr
    status = _cli(fleet, "upgrade-hosts", "--status")
    assert "cancelled" in status.stdout and f"fleet uncordon {host}" in status.stdout
    assert _cli(fleet, "uncordon", host).returncode == 0
    restarted = _cli(fleet, "upgrade-hosts", "--no-wait")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert _cli(fleet, "upgrade-hosts", "--clear").returncode == 0
