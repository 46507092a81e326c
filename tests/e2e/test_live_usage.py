"""Placement from live stats: memory that a container fleet did not create burns on h1
steers a new replica to h2, although h1 has nothing reserved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from tests.conftest import ensure_image
from tests.helpers import fleet_containers

OFFERED = "512Mi"  # each host offers fleet this much, so 300 MiB of use matters
# The shell holds 300 MB in a variable while it waits (not `exec sleep`: that frees it).
BURN = "x=$(head -c 300000000 /dev/zero | tr '\\0' a); sleep 3600 & wait"


@pytest.fixture
def small_hosts(
    etcd_server: EtcdServer, clean_pool: HostPool, pki: TestPKI, tmp_path: Path
) -> Iterator[FleetClient]:
    server = FleetServerProcess(etcd_server.endpoint, "/e2e-live-usage/", tmp_path, pki).start()
    agents = [
        FleetAgentProcess(
            [server.address], h.name, h.docker_url, tmp_path, pki, extra_args=["--memory", OFFERED]
        ).start()
        for h in clean_pool.hosts
    ]
    client = server.client()
    try:
        server.process.wait_ready(
            lambda: sorted(h.host_id for h in client.hosts() if h.connected) == ["h1", "h2"],
            30,
            what="both agents to connect",
        )
        yield client
    finally:
        client.close()
        for agent in agents:
            agent.stop()
        server.stop()
        print(server.process.log_tail(40))


def _memory_used(client: FleetClient, host: str) -> int:
    return next(h.usage.memory_bytes for h in client.hosts() if h.host_id == host)


def test_live_memory_use_on_h1_steers_a_replica_to_h2(
    small_hosts: FleetClient, clean_pool: HostPool
) -> None:
    client = small_hosts
    h1, h2 = clean_pool.hosts
    for host in (h1, h2):
        ensure_image(host)
    burner: Any = h1.client().containers.run(
        "fleet-test/web:v1", ["sh", "-c", BURN], detach=True, name="burner"
    )
    try:
        # The agent reports what h1 really uses, fleet's containers or not.
        wait_until(
            lambda: _memory_used(client, "h1") > 250 << 20, 60, what="h1 to report ~300 MiB used"
        )
        hosts = {h.host_id: h for h in client.hosts()}
        assert hosts["h1"].reserved.memory_bytes == 0 == hosts["h2"].reserved.memory_bytes

        spec = load_documents(
            "name: big\nimage: fleet-test/web:v1\nresources: {memory: 256Mi}\n", "big.yaml"
        )
        [change] = client.apply(spec, dry_run=True)
        assert [(p.slot, p.host) for p in change.placements] == [(0, "h2")]
        client.apply(spec)
        wait_until(
            lambda: [c.status for c in fleet_containers(h2.client(), "big")] == ["running"],
            60,
            what="the replica to run on h2",
        )
        assert fleet_containers(h1.client(), "big", all=True) == []
    finally:
        burner.remove(force=True)
