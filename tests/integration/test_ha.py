"""Several control-plane replicas against one etcd: one leads, a dead leader is replaced
within seconds, and a deposed leader's writes are fenced off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.client import FleetClient
from fleet.errors import Conflict
from fleet.policy import Policy
from fleet.spec import load_documents
from fleet.store import LeaseKeeper, Store
from fleet.store._etcd import Etcd
from fleet.store.election import Election
from fleet.store.keys import KeyLayout
from fleet.testing import DockerHost, EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from tests.conftest import ensure_image
from tests.helpers import etcd_json, etcd_prefix, fleet_containers


@pytest.fixture
def two_servers(
    request: pytest.FixtureRequest,
    etcd_server: EtcdServer,
    clean_host: DockerHost,
    pki: TestPKI,
    tmp_path: Path,
) -> Iterator[tuple[list[FleetServerProcess], FleetAgentProcess, str]]:
    prefix = f"/t-ha-{request.node.name[:30].replace('_', '-')}/"
    servers = [
        FleetServerProcess(
            etcd_server.endpoint, prefix, tmp_path, pki, extra_args=["--server-id", f"cp{i}"]
        ).start()
        for i in (1, 2)
    ]
    agent = FleetAgentProcess(
        [s.address for s in servers], clean_host.name, clean_host.docker_url, tmp_path, pki
    ).start()
    try:
        yield servers, agent, prefix
    finally:
        agent.stop()
        for server in servers:
            server.stop()
            print(server.process.log_tail(40))
        print(agent.process.log_tail(30))


def leader_of(etcd: EtcdServer, prefix: str) -> str | None:
    found = etcd_json(etcd, f"{prefix}leader")
    return str(found["candidate"]) if found else None


def test_a_killed_leader_is_replaced_within_seconds(
    two_servers: tuple[list[FleetServerProcess], FleetAgentProcess, str],
    etcd_server: EtcdServer,
    clean_host: DockerHost,
) -> None:
    servers, _agent, prefix = two_servers
    ensure_image(clean_host)
    leader = wait_until(lambda: leader_of(etcd_server, prefix), 10, what="a leader")
    by_id = {"cp1": servers[0], "cp2": servers[1]}
    survivor = by_id["cp2" if leader == "cp1" else "cp1"]
    # The CLI and agents take every endpoint and fail over between them.
    client = FleetClient([s.address for s in servers], servers[0].transport())
    try:
        wait_until(lambda: any(h.connected for h in client.hosts()), 20, what="the agent")
        client.apply(load_documents("name: web\nimage: fleet-test/web:v1\nreplicas: 1\n", "w"))
        wait_until(
            lambda: len(fleet_containers(clean_host.client(), "web")) == 1, 60, what="1 replica"
        )

        by_id[leader].kill()
        killed = time.monotonic()
        client.scale("web", 2)  # any replica takes writes; only the leader places them
        wait_until(
            lambda: f"{prefix}replicas/web/000001" in etcd_prefix(etcd_server, prefix),
            15,
            interval=0.05,
            what="the new leader to place the new replica",
        )
        took = time.monotonic() - killed
        print(f"the new leader placed the replica {took:.2f}s after the kill")
        assert took < 5.0, f"the new leader placed it {took:.1f}s after the kill"
        assert leader_of(etcd_server, prefix) == ("cp2" if leader == "cp1" else "cp1")
        wait_until(
            lambda: len(fleet_containers(clean_host.client(), "web")) == 2, 60, what="2 replicas"
        )
        # The agent moved to the survivor and is connected there.
        with survivor.client() as direct:
            assert [h.connected for h in direct.hosts()] == [True]
    finally:
        client.close()


def test_a_deposed_leader_cannot_write(etcd_server: EtcdServer) -> None:
    """Fencing: once A's lease is gone and B leads, A's controller writes all fail,
    even a write that would otherwise be valid."""

    async def scenario() -> None:
        layout = KeyLayout("/t-ha-fencing/")
        # The keeper is not started: nothing renews, and A resigns well within the TTL.
        keeper = LeaseKeeper([etcd_server.endpoint])
        async with Etcd([etcd_server.endpoint]) as etcd:
            a = Election(etcd, layout, "a", keeper, ttl=2, poll=0.05)
            b = Election(etcd, layout, "b", keeper, ttl=2, poll=0.05)
            fence_a = await a.campaign()
            store_a = Store(etcd, layout).fenced(fence_a)
            # While A leads, its guarded writes land.
            written = await store_a.write_policy(Policy(), expected_mod_revision=0)
            campaign_b = asyncio.create_task(b.campaign())
            await asyncio.sleep(0.3)
            assert not campaign_b.done()  # B waits while A's lease lives
            await a.resign()  # A's lease is gone (as if it expired during a pause)
            fence_b = await asyncio.wait_for(campaign_b, 5)
            assert fence_b.mod_revision > fence_a.mod_revision
            # The same write, on the revision A read, is refused: A no longer leads.
            with pytest.raises(Conflict):
                await store_a.write_policy(Policy(), expected_mod_revision=written)
            stored = await etcd.get(layout.policy())
            assert stored is not None and stored.mod_revision == written
            # B's fenced writes land.
            store_b = Store(etcd, layout).fenced(fence_b)
            await store_b.write_policy(Policy(), expected_mod_revision=written)
            await b.resign()
        keeper.close()

    asyncio.run(scenario())
