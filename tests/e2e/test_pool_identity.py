"""Hosts that still hold an earlier pool's stopped containers join a fresh pool (an etcd
restored from a backup, or hosts moved between pools): the same app at the same
revision gives those containers the very names the new pool's would have. The agents
must not adopt them (they are reported, and left alone), and a drain must move
replicas make-before-break as on clean hosts, never re-creating every replica."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from tests.conftest import PoolFactory
from tests.helpers import EndpointProber, fleet_containers

APP = "acc-web"
SPEC = f"""
name: {APP}
image: fleet-test/drain:v1
replicas: 6
placement: spread
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
min_available: 5
shutdown_delay: 1s
health: {{http: "http://:8080/index.html", interval: 500ms, retries: 2}}
update: {{min_ready: 1s}}
"""
HOSTS = ("h1", "h2", "h3")


def _fleet(
    etcd: EtcdServer, prefix: str, pool_dir: Path, pki: TestPKI, docker: PoolFactory
) -> tuple[FleetServerProcess, dict[str, FleetAgentProcess], FleetClient]:
    pool = docker(3)
    pool_dir.mkdir()
    server = FleetServerProcess(etcd.endpoint, prefix, pool_dir, pki).start()
    agents = {
        h.name: FleetAgentProcess(
            [server.address],
            h.name,
            h.docker_url,
            pool_dir,
            pki,
            extra_args=["--advertise-address", h.address, "--memory", "4Gi", "--cpus", "2"],
        ).start()
        for h in pool.hosts
    }
    client = server.client()
    server.process.wait_ready(
        lambda: len([h for h in client.hosts() if h.connected]) == 3, 30, what="3 agents"
    )
    return server, agents, client


def _stop(server: FleetServerProcess, agents: dict[str, FleetAgentProcess], c: FleetClient) -> None:
    c.close()
    for agent in agents.values():
        agent.stop()
    server.stop()
    print(server.process.log_tail(60))
    for agent in agents.values():
        print(agent.process.log_tail(40))


def test_a_fresh_pool_on_hosts_with_an_earlier_pools_containers(
    docker_hosts: PoolFactory, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    pool = docker_hosts(3)
    for host in pool.hosts:
        host.remove_all_containers(label="fleet.app")
        ensure_image(host.client(), "fleet-test/drain", "v1", "drain v1\n")

    def containers(host: str, *, all: bool = False) -> list[object]:
        return fleet_containers(pool.host(host).client(), APP, all=all)

    # The earlier pool: the app runs, then everything stops but the hosts' dockerds,
    # which keep its containers, stopped.
    old = _fleet(etcd_server, "/e2e-pool-old/", tmp_path / "old", pki, docker_hosts)
    try:
        old[2].apply(load_documents(SPEC, "web.yaml"))
        wait_until(lambda: len(old[2].endpoints(APP)) == 6, 90, what="6 replicas (old pool)")
        old_pool = old[2].pool()
    finally:
        _stop(*old)
    leftovers: dict[str, set[str]] = {}
    for host in pool.hosts:
        for container in containers(host.name):
            container.stop(timeout=1)  # type: ignore[attr-defined]
        leftovers[host.name] = {c.id for c in containers(host.name, all=True)}  # type: ignore[attr-defined]
    assert sum(len(ids) for ids in leftovers.values()) == 6

    # A fresh etcd state and control plane; the same agents' hosts join it.
    server, agents, client = _fleet(etcd_server, "/e2e-pool-new/", tmp_path / "new", pki, docker_hosts)
    try:
        assert client.pool() != old_pool
        client.apply(load_documents(SPEC, "web.yaml"))
        wait_until(lambda: len(client.endpoints(APP)) == 6, 90, what="6 replicas (new pool)")

        def running() -> dict[str, list[str]]:
            return {
                h: sorted(c.name for c in containers(h) if c.status == "running")  # type: ignore[attr-defined]
                for h in HOSTS
            }

        def slots_once() -> None:
            now = running()
            slots = Counter(name.split(".")[1] for names in now.values() for name in names)
            assert all(n == 1 for n in slots.values()), f"a slot runs on two hosts: {now}"

        slots_once()
        # Not one of the earlier pool's containers runs, nor counts as a replica.
        for host in HOSTS:
            for container in containers(host, all=True):
                if container.id in leftovers[host]:  # type: ignore[attr-defined]
                    assert container.status == "exited", (host, container.name)  # type: ignore[attr-defined]
        # ... and each host with some says so.
        for host in HOSTS:
            if leftovers[host]:
                found = client.events(host=host)
                assert any(e.reason == "foreign-container" for e in found), found

        with EndpointProber(client, APP) as prober:
            drained = server.cli("drain", "h1", "--wait", "--timeout", "2m")
        assert drained.returncode == 0, drained.stdout + drained.stderr
        prober.check(5)
        slots_once()
        assert running()["h1"] == []
    finally:
        _stop(server, agents, client)
        for host in pool.hosts:
            host.remove_all_containers(label="fleet.app")
