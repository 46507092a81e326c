"""End to end on two docker hosts (network namespaces, each with its own dockerd and
agent): replicas spread over both, each host pulls the image from a real registry, and
every replica answers HTTP at its own host's address."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, Registry, push_image, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from tests.conftest import ensure_image
from tests.helpers import fleet_containers, wait_http


@pytest.fixture
def pool_fleet(
    request: pytest.FixtureRequest,
    etcd_server: EtcdServer,
    clean_pool: HostPool,
    pki: TestPKI,
    tmp_path: Path,
) -> Iterator[tuple[FleetClient, list[FleetAgentProcess]]]:
    prefix = f"/e2e-{request.node.name[:40].replace('_', '-')}/"  # each test its own state
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    agents = [
        FleetAgentProcess([server.address], h.name, h.docker_url, tmp_path, pki).start()
        for h in clean_pool.hosts
    ]
    client = server.client()
    try:

        def all_connected() -> bool:
            return sorted(h.host_id for h in client.hosts() if h.connected) == ["h1", "h2"]

        server.process.wait_ready(all_connected, 30, what="both agents to connect")
        yield client, agents
    finally:
        client.close()
        for agent in agents:
            agent.stop()
        server.stop()
        print(server.process.log_tail(60))  # shown only when the test failed
        for agent in agents:
            print(agent.process.log_tail(30))


def test_four_replicas_spread_over_two_hosts_pulling_from_the_registry(
    pool_fleet: tuple[FleetClient, list[FleetAgentProcess]],
    clean_pool: HostPool,
    registry: Registry,
) -> None:
    client, _agents = pool_fleet
    h1, h2 = clean_pool.hosts
    # Publish the image in the registry only: neither daemon has it, both must pull.
    ensure_image(h1, "fleet-test/web", "e2e", "hello from the pool\n")
    image = push_image(h1.client(), "fleet-test/web:e2e", registry.address, "fleet-test/web", "e2e")
    for host in (h1, h2):
        for ref in (image, "fleet-test/web:e2e"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                host.client().images.remove(ref, force=True)

    spec = load_documents(
        f"""
name: web
image: {image}
replicas: 4
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
""",
        "web.yaml",
    )[0]
    client.apply([spec])

    def placed() -> dict[str, list[object]] | None:
        found = {h.name: fleet_containers(h.client(), "web") for h in (h1, h2)}
        running = {name: [c for c in cs if c.status == "running"] for name, cs in found.items()}
        return running if sum(len(cs) for cs in running.values()) == 4 else None

    running = wait_until(
        placed, 90, what="4 running replicas across h1 and h2", ignore=(docker.errors.NotFound,)
    )
    assert Counter({name: len(cs) for name, cs in running.items()}) == Counter(h1=2, h2=2)

    for host in (h1, h2):
        for container in fleet_containers(host.client(), "web"):
            container.reload()
            port = int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
            wait_http(host.address, port, "hello from the pool")
        # The image came from the registry, pulled by that host's daemon.
        assert host.client().images.get(image).attrs["RepoDigests"]

    # What fleet reports agrees with what Docker runs.
    def reported() -> bool:
        containers = client.containers(app="web")
        return sorted((c.host, c.status.state) for c in containers) == [
            ("h1", "running"),
            ("h1", "running"),
            ("h2", "running"),
            ("h2", "running"),
        ]

    wait_until(reported, 30, what="fleet to report the 4 replicas running")


def test_a_cordoned_host_takes_no_new_replicas_until_uncordoned(
    pool_fleet: tuple[FleetClient, list[FleetAgentProcess]], clean_pool: HostPool, pki: TestPKI
) -> None:
    client, _agents = pool_fleet
    h1, h2 = clean_pool.hosts
    for host in (h1, h2):
        ensure_image(host)
    assert client.set_host_state("h1", "cordoned").state == "cordoned"
    spec = load_documents("name: web\nimage: fleet-test/web:v1\nreplicas: 2\n", "web.yaml")[0]
    [change] = client.apply([spec], dry_run=True)
    assert [p.host for p in change.placements] == ["h2", "h2"]
    client.apply([spec])

    def running(host: Any) -> int:
        return sum(1 for c in fleet_containers(host.client(), "web") if c.status == "running")

    wait_until(lambda: running(h2) == 2, 60, what="both replicas on h2")
    assert running(h1) == 0

    client.set_host_state("h1", "ready")
    client.scale("web", 3)
    wait_until(lambda: running(h1) == 1, 60, what="the new replica on the uncordoned h1")
    assert running(h2) == 2  # placements that still fit are never moved
