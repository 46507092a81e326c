"""Private registries and the registry mirror (issue #22 item 3), against real parts.

Two namespaced docker hosts (h1 labelled zone=a), a real control plane and agents, a
real `docker-registry` that speaks TLS only (its certificate trusted through Docker's
certs.d) and wants htpasswd credentials, and a
plain one as the pool's mirror. An app placed on h1 pulls from the locked registry:
refused (and said so) before `fleet registry login`, running after. etcd holds no
password in clear; h2, which runs no such app, is never sent the credentials (its
desired set, as the control plane builds it from etcd, has none; its agent never pulls
with them), and no log, event, `describe` or `registry list` shows the password. Then
a Docker Hub image that only the mirror holds (Docker Hub is unreachable here) runs
once `fleet registry mirror` is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import pytest

from fleet.client import FleetClient
from fleet.controlplane.desired import desired_containers
from fleet.secrets import load_key_file
from fleet.spec import load_documents
from fleet.store import Etcd, KeyLayout
from fleet.store._etcd import KeyValue
from fleet.store.state import decode_state
from fleet.testing import EtcdServer, HostPool, Registry, push_image, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from fleet.testing.registry import trusted_tls_registry

PREFIX = "/it-registries/"
USER, PASSWORD = "deployer", "pw-7f3a9c1e-not-in-clear"
MIRRORED = "fleet-test/mirrored:v1"  # a Docker Hub reference: docker.io/fleet-test/...


@dataclass
class Pool:
    server: FleetServerProcess
    client: FleetClient
    agents: dict[str, FleetAgentProcess]
    locked: Registry  # TLS, htpasswd
    private: str  # the image in it
    mirror: Registry
    log_dir: Path


def _drop(pool: HostPool, *refs: str) -> None:
    for host in pool.hosts:
        for ref in refs:
            with contextlib.suppress(docker.errors.ImageNotFound):
                host.client().images.remove(ref, force=True)


@pytest.fixture
def setup(
    etcd_server: EtcdServer,
    clean_pool: HostPool,
    registry: Registry,
    pki: TestPKI,
    tmp_path: Path,
) -> Iterator[Pool]:
    with trusted_tls_registry(clean_pool, {USER: PASSWORD}) as locked:
        yield from _pool(etcd_server, clean_pool, registry, pki, tmp_path, locked)


def _pool(
    etcd_server: EtcdServer,
    clean_pool: HostPool,
    registry: Registry,
    pki: TestPKI,
    tmp_path: Path,
    locked: Registry,
) -> Iterator[Pool]:
    h1 = clean_pool.hosts[0]
    ensure_image(h1.client(), "fleet-test/private", "v1", "private v1\n")
    private = push_image(
        h1.client(),
        "fleet-test/private:v1",
        locked.address,
        "fleet-test/private",
        "v1",
        auth={"username": USER, "password": PASSWORD},
    )
    ensure_image(h1.client(), "fleet-test/mirrored", "v1", "mirrored v1\n")
    push_image(h1.client(), MIRRORED, registry.address, "fleet-test/mirrored", "v1")
    # Every host must pull: nothing of either image is left on them.
    _drop(clean_pool, private, MIRRORED, f"{registry.address}/{MIRRORED}")
    server = FleetServerProcess(etcd_server.endpoint, PREFIX, tmp_path, pki).start()
    agents = {
        h.name: FleetAgentProcess(
            [server.address],
            h.name,
            h.docker_url,
            tmp_path,
            pki,
            labels={"zone": "a" if h is h1 else "b"},
            extra_args=["--advertise-address", h.address],
        ).start()
        for h in clean_pool.hosts
    }
    client = server.client()
    try:
        wait_until(lambda: sum(h.connected for h in client.hosts()) == 2, 30, what="2 agents")
        yield Pool(server, client, agents, locked, private, registry, tmp_path)
    finally:
        with contextlib.suppress(Exception):
            for app in ("private", "mirrored"):
                client.delete_app(app)
        client.close()
        for agent in agents.values():
            agent.stop()
        server.stop()
        _drop(clean_pool, private, MIRRORED)


def _app(name: str, image: str, zone: str) -> str:
    return (
        f"name: {name}\nimage: {image}\nreplicas: 1\ncommand: [sleep, '3600']\n"
        f"resources: {{cpu: 0.1, memory: 16Mi}}\nconstraints: [agent.zone={zone}]\n"
    )


def _running_on(client: FleetClient, app: str) -> str:
    """The host of ``app``'s running replica, or ""."""
    for container in client.containers(app):
        if container.status.state == "running":
            return container.host
    return ""


async def _etcd(endpoint: str) -> tuple[list[KeyValue], int]:
    async with Etcd([endpoint]) as etcd:
        return await etcd.get_prefix(PREFIX.encode())


def test_a_login_lets_only_the_hosts_that_need_it_pull_and_the_mirror_serves_hub_images(
    setup: Pool, clean_pool: HostPool, etcd_server: EtcdServer
) -> None:
    server, client = setup.server, setup.client
    registry = setup.locked.address

    # Without a login: refused, and said so where people look.
    client.apply(load_documents(_app("private", setup.private, "a"), "private.yaml"))
    wait_until(
        lambda: any(e.kind == "unauthorized" for e in client.events(app="private")),
        30,
        what="the unauthorized pull event",
    )
    apps = server.cli("get", "apps", "-o", "wide")
    assert "unauthorized" in apps.stdout and "fleet registry login" in apps.stdout, apps.stdout

    # The login: a sealed secret; the replica runs on h1.
    login = server.cli(
        "registry", "login", registry, "--username", USER, "--password-stdin",
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert login.returncode == 0, login.stdout + login.stderr
    wait_until(lambda: _running_on(client, "private") == "h1", 30, what="private running on h1")

    listed = server.cli("registry", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["registry"] == registry and entry["username"] == USER
    assert entry["used_by"] == ["private"]

    # etcd: no password in clear (nor in base64); the secret is ciphertext.
    kvs, revision = asyncio.run(_etcd(etcd_server.endpoint))
    encoded = base64.b64encode(PASSWORD.encode())
    assert not [kv.key for kv in kvs if PASSWORD.encode() in kv.value or encoded in kv.value]
    sealed = [json.loads(kv.value) for kv in kvs if b"/secrets/registry-" in kv.key]
    assert len(sealed) == 1 and sealed[0]["registry"] == registry and sealed[0]["ciphertext"]

    # What each host is sent, as the control plane builds it from etcd.
    state = decode_state(KeyLayout(PREFIX), kvs, revision)
    box = load_key_file(setup.log_dir / "secrets.key")
    [on_h1] = desired_containers(state, "h1", box)
    assert on_h1.registry_auth.username == USER and on_h1.registry_auth.password == PASSWORD
    assert not [c for c in desired_containers(state, "h2", box) if c.HasField("registry_auth")]
    h1_log = setup.agents["h1"].process.log_path.read_text()
    h2_log = setup.agents["h2"].process.log_path.read_text()
    assert f"as {USER}" in h1_log and f"as {USER}" not in h2_log and registry not in h2_log

    # Nowhere in words: describe, events, the server's and agents' logs.
    described = server.cli("describe", "app", "private")
    events = server.cli("events", "--app", "private")
    shown = described.stdout + events.stdout + listed.stdout + login.stdout + login.stderr
    logs = setup.server.process.log_path.read_text() + h1_log + h2_log
    assert PASSWORD not in shown and PASSWORD not in logs

    # The mirror: a Docker Hub image only the mirror holds (Docker Hub is unreachable).
    mirrored = server.cli("registry", "mirror", f"http://{setup.mirror.address}")
    assert mirrored.returncode == 0, mirrored.stdout + mirrored.stderr
    client.apply(load_documents(_app("mirrored", MIRRORED, "b"), "mirrored.yaml"))
    wait_until(lambda: _running_on(client, "mirrored") == "h2", 60, what="mirrored on h2")
    h2 = clean_pool.host("h2").client()
    tags = h2.images.get(MIRRORED).tags
    assert MIRRORED in tags and not [t for t in tags if setup.mirror.address in t], tags
    assert "through the mirror" in setup.agents["h2"].process.log_path.read_text()

    # Clearing and logging out.
    assert server.cli("registry", "mirror", "--clear").returncode == 0
    assert server.cli("registry", "logout", registry).returncode == 0
    after = server.cli("registry", "list")
    assert registry not in after.stdout and "mirror: -" in after.stdout, after.stdout
