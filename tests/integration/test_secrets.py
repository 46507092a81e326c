"""Secrets: encrypted in etcd, delivered into the container's env, printed nowhere, and
only to the apps each secret's scope names."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet.errors import FailedPrecondition, NotFound, PermissionDenied
from fleet.pki.subjects import Role
from fleet.spec import load_documents
from fleet.testing import wait_until
from fleet.testing.procs import without_fleet_env
from tests.helpers import b64, etcd_post, etcd_prefix
from tests.integration.conftest import Fleet, fleet_cli, wait_containers


def _app(image: str, secret: str = "db") -> str:
    return f"""
name: billing
image: {image}
replicas: 2
env:
  DB_USER: billing
  DB_PASSWORD: {{secret: {secret}}}
"""


def test_a_secret_reaches_the_container_and_nothing_else(fleet: Fleet) -> None:
    value = f"s3cr3t-{secrets.token_hex(8)}"
    info = fleet.client.set_secret("db", value.encode(), apps=["billing"])
    assert (info.name, info.version, list(info.scope.apps)) == ("db", 1, ["billing"])

    fleet.client.apply(load_documents(_app(fleet.image), "billing.yaml"))
    for container in wait_containers(fleet, "billing", 2):
        assert f"DB_PASSWORD={value}" in container.attrs["Config"]["Env"]
        assert "DB_USER=billing" in container.attrs["Config"]["Env"]

    # At rest: etcd holds only ciphertext.
    stored = etcd_prefix(fleet.etcd, fleet.prefix)
    assert f"{fleet.prefix}secrets/db" in stored
    assert not [key for key, raw in stored.items() if value.encode() in raw]

    # Out: no fleet command prints it, and neither daemon logged it.
    env = without_fleet_env()
    env["FLEET_PKI_DIR"] = str(fleet.pki.dir)
    for args in (
        ["get", "apps", "-o", "json"],
        ["describe", "app", "billing"],
        ["ps", "-o", "yaml"],
        ["secrets", "list", "-o", "json"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "fleet", *args, "--server", fleet.server.address],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert value not in result.stdout + result.stderr
    assert "billing" in result.stdout  # secrets list names its users
    assert value not in fleet.server.process.log_tail(10_000)
    assert value not in fleet.agent.process.log_tail(10_000)


def test_apply_refuses_a_missing_secret_and_stores_nothing(fleet: Fleet) -> None:
    with pytest.raises(NotFound, match="fleet secrets set nope"):
        fleet.client.apply(load_documents(_app(fleet.image, "nope"), "billing.yaml"))
    assert etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/") == {}


def test_only_admins_set_secrets_and_used_ones_cannot_be_deleted(fleet: Fleet) -> None:
    with fleet.server.client("dan", Role.deployer) as deployer:
        with pytest.raises(PermissionDenied, match="may not change secrets"):
            deployer.set_secret("db", b"x", all_apps=True)
        fleet.client.set_secret("db", b"first", all_apps=True)
        fleet.client.set_secret("db", b"second")  # a new value keeps the scope
        [listed] = deployer.secrets()
        assert (listed.name, listed.version, listed.scope.all_apps) == ("db", 2, True)

    fleet.client.apply(load_documents(_app(fleet.image), "billing.yaml"))
    with pytest.raises(FailedPrecondition, match="used by app billing"):
        fleet.client.delete_secret("db")
    fleet.client.delete_app("billing")
    fleet.client.delete_secret("db")
    assert fleet.client.secrets() == []


# ---------------------------------------------------------------------- scopes


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet_cli(*args, server=fleet.server.address, pki=fleet.pki)


def _scoped_app(path: Path, name: str, image: str, replicas: int = 1) -> Path:
    path.write_text(
        f"name: {name}\nimage: {image}\nreplicas: {replicas}\nenv:\n"
        "  DB_USER: billing\n  DB_PASSWORD: {secret: db}\n"
    )
    return path


def _env(container: Any) -> list[str]:
    env: list[str] = container.attrs["Config"]["Env"]
    return env


def test_a_secret_scoped_to_one_app_reaches_it_and_another_is_refused_at_apply(
    fleet: Fleet, tmp_path: Path
) -> None:
    value = f"s3cr3t-{secrets.token_hex(8)}"
    value_file = tmp_path / "value"
    value_file.write_text(value)

    # A new secret says which apps may use it.
    unscoped = _cli(fleet, "secrets", "set", "db", "--from-file", str(value_file))
    assert unscoped.returncode == 1, unscoped.stderr
    assert "secret 'db' is new: say which apps may use it" in unscoped.stderr
    assert "--apps APP[,APP...]` (or --all-apps)" in unscoped.stderr
    assert fleet.client.secrets() == []
    made = _cli(fleet, "secrets", "set", "db", "--from-file", str(value_file), "--apps", "a")
    assert made.returncode == 0, made.stderr
    assert "secret/db set (version 1), for a" in made.stdout

    applied = _cli(fleet, "apply", "-f", str(_scoped_app(tmp_path / "a.yaml", "a", fleet.image)))
    assert applied.returncode == 0, applied.stderr
    [running] = wait_containers(fleet, "a", 1)
    assert f"DB_PASSWORD={value}" in _env(running)

    # App b may not use it: refused at its line, with the fix; nothing of b is stored.
    b_file = _scoped_app(tmp_path / "b.yaml", "b", fleet.image)
    refused = _cli(fleet, "apply", "-f", str(b_file))
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(
        f"error: {b_file}:6 (document 1): env.DB_PASSWORD: app 'b': secret 'db' is not for "
        "this app (its scope: app a)"
    ), line
    assert line.endswith("`fleet secrets scope db --apps a,b`"), line
    assert f"{fleet.prefix}apps/b" not in etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/")
    assert [c.app for c in fleet.client.containers()] == ["a"]

    listed = _cli(fleet, "secrets", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\n")[0].split() == [
        "NAME",
        "VERSION",
        "UPDATED",
        "SCOPE",
        "USED",
        "BY",
    ]
    assert listed.stdout.split("\n")[1].split()[3:] == ["a", "a"]
    assert listed.stderr == ""
    assert value not in listed.stdout + made.stdout + refused.stderr


def test_a_narrowed_scope_holds_new_replicas_and_leaves_running_ones(
    fleet: Fleet, tmp_path: Path
) -> None:
    value = f"s3cr3t-{secrets.token_hex(8)}"
    fleet.client.set_secret("db", value.encode(), apps=["a"])
    fleet.client.apply(
        load_documents(_scoped_app(tmp_path / "a.yaml", "a", fleet.image).read_text())
    )
    [running] = wait_containers(fleet, "a", 1)

    narrowed = _cli(fleet, "secrets", "scope", "db", "--apps", "other")
    assert narrowed.returncode == 0, narrowed.stderr
    assert "secret/db is for other" in narrowed.stdout
    assert "app a uses secret db but is not in its scope" in narrowed.stderr

    # A new replica of a is held, with the reason, and never made; the running one stays.
    fleet.client.scale("a", 2)

    def held() -> Any:
        found = {c.slot: c for c in fleet.client.containers("a")}
        return found.get(1) if 1 in found and found[1].status.state == "held" else None

    replica = wait_until(held, 30, what="a.1 to be held")
    assert replica.status.message.startswith("secret db is not for app 'a' (its scope: app other)")
    assert "`fleet secrets scope db --apps a,other`" in replica.status.message
    ps = _cli(fleet, "ps", "a")
    assert "a.1" in ps.stdout and "held" in ps.stdout, ps.stdout
    [still] = wait_containers(fleet, "a", 1)
    assert still.id == running.id and f"DB_PASSWORD={value}" in _env(still)
    assert "held" in {e.kind for e in fleet.client.events(app="a")}
    listed = _cli(fleet, "secrets", "list")
    assert "app a uses secret db but is not in its scope" in listed.stderr

    # Let a use it again: the held replica is made, with the value.
    assert _cli(fleet, "secrets", "scope", "db", "--apps", "a,other").returncode == 0
    for container in wait_containers(fleet, "a", 2):
        assert f"DB_PASSWORD={value}" in _env(container)
    assert value not in fleet.server.process.log_tail(10_000)
    assert value not in fleet.agent.process.log_tail(10_000)


def test_only_admins_change_a_scope(fleet: Fleet) -> None:
    fleet.client.set_secret("db", b"x", apps=["a"])
    with fleet.server.client("dan", Role.deployer) as deployer:
        with pytest.raises(PermissionDenied, match="may not change secrets"):
            deployer.set_secret_scope("db", apps=["a", "mine"])
        with pytest.raises(PermissionDenied, match="may not change secrets"):
            deployer.set_secret("db", b"y", apps=["mine"])
    [listed] = fleet.client.secrets()
    assert (list(listed.scope.apps), listed.version) == (["a"], 1)
    with pytest.raises(NotFound, match="secret 'nope' not found"):
        fleet.client.set_secret_scope("nope", all_apps=True)


def test_a_secret_stored_before_scopes_keeps_working_and_is_listed_with_a_warning(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.client.set_secret("db", b"old", all_apps=True)
    # Written as a control plane before scopes wrote it: no scope in the record.
    key = f"{fleet.prefix}secrets/db"
    record = json.loads(etcd_prefix(fleet.etcd, key)[key])
    del record["scope"]
    etcd_post(
        fleet.etcd,
        "/v3/kv/put",
        {"key": b64(key.encode()), "value": b64(json.dumps(record).encode())},
    )

    def unscoped() -> bool:
        return bool(fleet.client.secrets()[0].unscoped)

    wait_until(unscoped, 10, what="the old record to be read")
    listed = _cli(fleet, "secrets", "list")
    assert listed.returncode == 0, listed.stderr
    assert "all apps (unscoped)" in listed.stdout
    assert "secret db was stored before secrets had scopes, so every app may use it" in (
        listed.stderr.replace("\n", " ")
    )
    applied = _cli(fleet, "apply", "-f", str(_scoped_app(tmp_path / "b.yaml", "b", fleet.image)))
    assert applied.returncode == 0, applied.stderr
    [container] = wait_containers(fleet, "b", 1)
    assert "DB_PASSWORD=old" in _env(container)
