"""Secrets: encrypted in etcd, delivered into the container's env, printed nowhere."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from fleet.errors import FailedPrecondition, NotFound, PermissionDenied
from fleet.pki import Role
from fleet.spec import load_documents
from tests.helpers import etcd_prefix
from tests.integration.conftest import Fleet, wait_containers


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
    info = fleet.client.set_secret("db", value.encode())
    assert (info.name, info.version) == ("db", 1)

    fleet.client.apply(load_documents(_app(fleet.image), "billing.yaml"))
    for container in wait_containers(fleet, "billing", 2):
        assert f"DB_PASSWORD={value}" in container.attrs["Config"]["Env"]
        assert "DB_USER=billing" in container.attrs["Config"]["Env"]

    # At rest: etcd holds only ciphertext.
    stored = etcd_prefix(fleet.etcd, fleet.prefix)
    assert f"{fleet.prefix}secrets/db" in stored
    assert not [key for key, raw in stored.items() if value.encode() in raw]

    # Out: no fleet command prints it, and neither daemon logged it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
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
            deployer.set_secret("db", b"x")
        fleet.client.set_secret("db", b"first")
        fleet.client.set_secret("db", b"second")
        assert [(s.name, s.version) for s in deployer.secrets()] == [("db", 2)]

    fleet.client.apply(load_documents(_app(fleet.image), "billing.yaml"))
    with pytest.raises(FailedPrecondition, match="used by app billing"):
        fleet.client.delete_secret("db")
    fleet.client.delete_app("billing")
    fleet.client.delete_secret("db")
    assert fleet.client.secrets() == []
