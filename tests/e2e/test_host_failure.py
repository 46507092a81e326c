"""A host that dies loses its replicas to the other hosts; when it comes back it is
fenced (its stale containers removed) and no replica runs twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from fleet.client import FleetClient
from fleet.controlplane.seats import AGENTS_BACK_WITHIN
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from tests.conftest import ensure_image
from tests.helpers import fleet_containers

DOWN_AFTER, RESCHEDULE_AFTER = 2, 2


@pytest.fixture
def pool(
    etcd_server: EtcdServer, clean_pool: HostPool, pki: TestPKI, tmp_path: Path
) -> Iterator[tuple[FleetServerProcess, dict[str, FleetAgentProcess]]]:
    server = FleetServerProcess(
        etcd_server.endpoint,
        "/e2e-host-failure/",
        tmp_path,
        pki,
        extra_args=[
            "--host-down-after",
            f"{DOWN_AFTER}s",
            "--reschedule-after",
            f"{RESCHEDULE_AFTER}s",
        ],
    ).start()
    agents = {
        h.name: FleetAgentProcess([server.address], h.name, h.docker_url, tmp_path, pki).start()
        for h in clean_pool.hosts
    }
    try:
        with server.client() as client:
            server.process.wait_ready(
                lambda: sorted(h.host_id for h in client.hosts() if h.connected) == ["h1", "h2"],
                30,
                what="both agents to connect",
            )
        yield server, agents
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()
        print(server.process.log_tail(60))
        if clean_pool.hosts[0].daemon_pid is None:
            clean_pool.hosts[0].start_daemon()


def _running_slots(client: Any) -> list[int]:
    return sorted(
        int(c.labels["fleet.slot"])
        for c in fleet_containers(client, "web")
        if c.status == "running"
    )


def test_replicas_of_a_dead_host_move_and_it_is_fenced_when_back(
    pool: tuple[FleetServerProcess, dict[str, FleetAgentProcess]], clean_pool: HostPool
) -> None:
    server, agents = pool
    h1, h2 = clean_pool.hosts
    for host in (h1, h2):
        ensure_image(host)
    client: FleetClient
    with server.client() as client:
        client.apply(load_documents("name: web\nimage: fleet-test/web:v1\nreplicas: 2\n", "w.yaml"))
        wait_until(
            lambda: len(_running_slots(h1.client())) == 1 == len(_running_slots(h2.client())),
            60,
            what="one replica on each host",
        )

        # h1 dies: its agent and its dockerd are killed.
        died = time.monotonic()
        agents["h1"].kill()
        h1.stop_daemon()
        # The server started seconds ago: a host found down within its leader's start
        # grace (hosts may still be reconnecting to a new leader) is timed from the
        # grace's end, so the move may come that much later (CI once saw it miss a
        # deadline without the grace by a few seconds).
        wait_until(
            lambda: _running_slots(h2.client()) == [0, 1],
            AGENTS_BACK_WITHIN + DOWN_AFTER + RESCHEDULE_AFTER + 10,
            what="both replicas running on h2",
            ignore=(docker.errors.NotFound,),
        )
        assert time.monotonic() - died >= RESCHEDULE_AFTER
        kinds = {(e.kind, e.host) for e in client.events()}
        assert ("host-down", "h1") in kinds

        # h1 comes back: its daemon still has the old container, which the agent removes
        # before anything else (its desired set is empty now).
        h1.start_daemon()
        h1.close_client()
        agents["h1"].start()
        wait_until(
            lambda: fleet_containers(h1.client(), "web", all=True) == [],
            30,
            what="h1's stale replica to be removed",
            ignore=(docker.errors.NotFound,),
        )
        assert _running_slots(h2.client()) == [0, 1]
        wait_until(
            lambda: ("host-up", "h1") in {(e.kind, e.host) for e in client.events()},
            10,
            what="the host-up event",
        )
