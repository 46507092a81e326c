"""An image that cannot be pulled is an ordinary state, not a crash (issue #16).

Two namespaced docker hosts run an app from a real registry. It is then set, with the
real CLI, to images that cannot be pulled in each of the ways Docker tells apart: a tag
that does not exist, a repository that does not exist, a registry that does not answer,
and a registry that wants credentials. Throughout, a prober polls every endpoint fleet
lists and a watcher polls `fleet get hosts`: every agent stays connected, the old
revision keeps serving, the rollout fails within seconds (not at its 5 minute deadline)
naming the cause, is rolled back, and the cause is in the events. With the rollback
turned off the failed replica stays, and `fleet ps`, `get apps` and `describe` say why;
an undo, and then a corrected image, bring the app back.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import pytest

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, Registry, free_port, push_image, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from tests.helpers import EndpointProber

REPLICAS = 4


@dataclass
class Pulls:
    server: FleetServerProcess
    client: FleetClient
    agents: list[FleetAgentProcess]
    v1: str
    v2: str
    registry: Registry
    locked: Registry  # wants credentials the hosts do not have


class HostWatcher:
    """Polls `fleet get hosts` every 200 ms: any sample with a host not connected."""

    def __init__(self, client: FleetClient, hosts: int) -> None:
        self._client, self._hosts = client, hosts
        self._stop = threading.Event()
        self.samples = 0
        self.lost: list[tuple[float, list[str]]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HostWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            connected = [h.host_id for h in self._client.hosts() if h.connected]
            self.samples += 1
            if len(connected) != self._hosts:
                self.lost.append((time.time(), connected))


@pytest.fixture
def pulls(
    etcd_server: EtcdServer,
    clean_pool: HostPool,
    registry: Registry,
    pki: TestPKI,
    tmp_path: Path,
) -> Iterator[Pulls]:
    h1 = clean_pool.hosts[0]
    images = {}
    for tag in ("v1", "v2"):
        ensure_image(h1.client(), "fleet-test/pull", tag, f"api {tag}\n")
        images[tag] = push_image(
            h1.client(), f"fleet-test/pull:{tag}", registry.address, "fleet-test/pull", tag
        )
    for host in clean_pool.hosts:  # every host must pull from the registry
        for ref in images.values():
            with contextlib.suppress(docker.errors.ImageNotFound):
                host.client().images.remove(ref, force=True)
    locked = Registry(clean_pool.gateway, require_auth=True).start()
    server = FleetServerProcess(etcd_server.endpoint, "/e2e-pulls/", tmp_path, pki).start()
    agents = [
        FleetAgentProcess(
            [server.address],
            h.name,
            h.docker_url,
            tmp_path,
            pki,
            extra_args=["--advertise-address", h.address],
        ).start()
        for h in clean_pool.hosts
    ]
    client = server.client()
    try:
        server.process.wait_ready(
            lambda: len([h for h in client.hosts() if h.connected]) == 2, 30, what="both agents"
        )
        yield Pulls(server, client, agents, images["v1"], images["v2"], registry, locked)
    finally:
        client.close()
        for agent in agents:
            agent.stop()
        server.stop()
        locked.stop()
        print(server.process.log_tail(60))
        for agent in agents:
            print(agent.process.log_tail(40))


def api_spec(image: str, auto_rollback: bool = True) -> str:
    return f"""
name: api
image: {image}
replicas: {REPLICAS}
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
shutdown_delay: 1s
health: {{http: "http://:8080/index.html", interval: 500ms, timeout: 1s, retries: 2}}
update:
  max_surge: 1
  max_unavailable: 0
  min_ready: 1s
  progress_deadline: 5m
  auto_rollback: {str(auto_rollback).lower()}
"""


def test_images_that_cannot_be_pulled_fail_the_rollout_fast_and_take_nothing_down(
    pulls: Pulls, clean_pool: HostPool
) -> None:
    client, registry = pulls.client, pulls.registry
    client.apply(load_documents(api_spec(pulls.v1), "api.yaml"))
    wait_until(lambda: len(client.endpoints("api")) == REPLICAS, 120, what="4 replicas of v1")
    wait_until(lambda: client.rollout_status("api").state == "complete", 60, what="v1 complete")

    closed = f"{clean_pool.gateway}:{free_port(clean_pool.gateway)}"  # nothing listens there
    cases = [
        (f"{registry.address}/fleet-test/pull:v9-nope", "image-not-found", "not found in the"),
        (f"{registry.address}/nothere/pull:v1", "image-not-found", "not found in the registry"),
        (f"{closed}/fleet-test/pull:v1", "registry-unreachable", "did not answer"),
        (f"{pulls.locked.address}/fleet-test/pull:v1", "unauthorized", "refused to let this"),
    ]
    with EndpointProber(client, "api") as prober, HostWatcher(client, 2) as watcher:
        for image, reason, words in cases:
            began = time.monotonic()
            done = pulls.server.cli("set", "image", "api", image, "--wait", "--timeout", "2m")
            took = time.monotonic() - began
            assert done.returncode == 2, done.stdout + done.stderr  # rolled back
            last = done.stderr.strip().splitlines()[-1]
            assert words in last and image in last and "rolled back to revision" in last, last
            assert took < 30, f"{image}: the rollout took {took:.1f}s to fail"
            wait_until(
                lambda: client.rollout_status("api").state == "complete",
                60,
                what=f"the rollback from {image}",
            )
            found = [e for e in client.events(app="api") if e.kind == reason and image in e.message]
            assert found, f"no {reason} event for {image}"
            # One event per app and reason, not one per retry (each host says it once).
            assert len(found) <= 2, [e.message for e in found]
            assert all(a.process.running for a in pulls.agents)
    prober.check(at_least=REPLICAS)
    assert prober.bodies == {"api v1"}
    assert watcher.samples > 10 and not watcher.lost, watcher.lost[:5]

    # Without a rollback the replica that cannot pull stays, and says why everywhere.
    bad = cases[0][0]
    client.apply(load_documents(api_spec(bad, auto_rollback=False), "api.yaml"))
    wait_until(
        lambda: client.rollout_status("api").state == "failed", 30, what="the rollout to fail"
    )
    ps = pulls.server.cli("ps", "api", "-o", "json")
    held = [c for c in json.loads(ps.stdout) if c["status"].get("state") == "pull-failed"]
    assert held and held[0]["status"]["reason"] == "image-not-found", ps.stdout
    table = pulls.server.cli("ps", "api")
    assert "image-not-found" in table.stdout and "not found in the registry" in table.stdout
    apps = pulls.server.cli("get", "apps", "-o", "wide")
    assert "image-not-found" in apps.stdout and bad in apps.stdout, apps.stdout
    described = pulls.server.cli("describe", "app", "api")
    assert f"image-not-found: image {bad} not found in the registry" in described.stdout
    assert len(client.endpoints("api")) == REPLICAS  # v1 serves on

    # An undo brings it back; so does a corrected image.
    undo = pulls.server.cli("rollout", "undo", "api")
    assert undo.returncode == 0, undo.stderr
    wait_until(
        lambda: client.rollout_status("api").state == "complete", 60, what="the undo to finish"
    )
    wait_until(
        lambda: not [c for c in client.containers("api") if c.status.state == "pull-failed"],
        10,
        what="the failed replica to be gone",
    )
    fixed = pulls.server.cli("set", "image", "api", pulls.v2, "--wait", "--timeout", "2m")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert {e.revision for e in client.endpoints("api")} == {client.apps("api")[0].revision}
