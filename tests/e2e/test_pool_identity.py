"""Hosts that still hold an earlier pool's stopped containers join a fresh pool (an etcd
restored from a backup, or hosts moved between pools): the same app at the same
revision gives those containers the very names the new pool's have. The agents take
none that is not theirs (another pool's are reported and left alone; a pool-less one,
from before pools had an id, only where the new pool places that very replica), and a
drain then moves replicas make-before-break as on clean hosts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from fleet.agent.runtime import LABEL_POOL
from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from tests.conftest import PoolFactory
from tests.helpers import EndpointProber, etcd_json, fleet_containers

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

Fleet = tuple[FleetServerProcess, dict[str, FleetAgentProcess], FleetClient]


def _start(etcd: EtcdServer, prefix: str, pool: HostPool, pki: TestPKI, log_dir: Path) -> Fleet:
    log_dir.mkdir()
    server = FleetServerProcess(etcd.endpoint, prefix, log_dir, pki).start()
    agents = {
        h.name: FleetAgentProcess(
            [server.address],
            h.name,
            h.docker_url,
            log_dir,
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


def _stop(fleet: Fleet) -> None:
    server, agents, client = fleet
    client.close()
    for agent in agents.values():
        agent.stop()
    server.stop()
    print(server.process.log_tail(60))
    for agent in agents.values():
        print(agent.process.log_tail(40))


def _without_pool_label(docker_client: Any, container: Any) -> str:
    """Make ``container`` again as fleet made it before pools had an id: the same name,
    image, labels (but fleet.pool) and published port; stopped. Returns its new id."""
    attrs = container.attrs
    labels = {k: v for k, v in attrs["Config"]["Labels"].items() if k != LABEL_POOL}
    name, image = container.name, attrs["Config"]["Image"]
    container.remove(force=True)
    api = docker_client.api
    made = api.create_container(
        image,
        name=name,
        labels=labels,
        ports=[8080],
        host_config=api.create_host_config(port_bindings={8080: None}),
    )
    api.start(made["Id"])
    api.stop(made["Id"], timeout=1)
    return str(made["Id"])


def test_a_fresh_pool_on_hosts_with_an_earlier_pools_containers(
    docker_hosts: PoolFactory, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    pool = docker_hosts(3)
    for host in pool.hosts:
        host.remove_all_containers(label="fleet.app")
        ensure_image(host.client(), "fleet-test/drain", "v1", "drain v1\n")

    def containers(host: str, *, all: bool = False) -> list[Any]:
        return fleet_containers(pool.host(host).client(), APP, all=all)

    # The earlier pool: the app runs, h2 is drained (so its replicas are elsewhere than
    # a fresh pool puts them: h1 runs three); then all stops but the hosts' dockerds.
    old = _start(etcd_server, "/e2e-pool-old/", pool, pki, tmp_path / "old")
    try:
        old[2].apply(load_documents(SPEC, "web.yaml"))
        wait_until(lambda: len(old[2].endpoints(APP)) == 6, 90, what="6 replicas (old pool)")
        drained = old[0].cli("drain", "h2", "--wait", "--timeout", "1m")
        assert drained.returncode == 0, drained.stdout + drained.stderr
    finally:
        _stop(old)
    old_pool = etcd_json(etcd_server, "/e2e-pool-old/pool")
    assert old_pool is not None
    leftovers: dict[str, dict[str, str]] = {h: {} for h in HOSTS}  # host -> id -> name
    for host in HOSTS:
        for container in containers(host):
            assert container.labels[LABEL_POOL] == old_pool["pool_id"]
            container.stop(timeout=1)
            container.reload()
            if host == "h1":  # h1's as an fleet before pool ids would have left them
                leftovers[host][_without_pool_label(pool.host(host).client(), container)] = (
                    container.name
                )
            else:
                leftovers[host][container.id] = container.name
    assert [len(leftovers[h]) for h in HOSTS] == [3, 0, 3], leftovers

    # A fresh etcd state and control plane; the same hosts join it.
    new = _start(etcd_server, "/e2e-pool-new/", pool, pki, tmp_path / "new")
    server, _agents, client = new
    try:
        new_pool = etcd_json(etcd_server, "/e2e-pool-new/pool")
        assert new_pool is not None and new_pool["pool_id"] != old_pool["pool_id"]
        client.apply(load_documents(SPEC, "web.yaml"))
        wait_until(lambda: len(client.endpoints(APP)) == 6, 90, what="6 replicas (new pool)")
        placed = {(e.slot, e.host) for e in client.endpoints(APP)}

        def running() -> dict[str, list[Any]]:
            return {h: [c for c in containers(h) if c.status == "running"] for h in HOSTS}

        def slot_of(container: Any) -> int:
            return int(container.labels["fleet.slot"])

        def one_container_per_slot() -> None:
            now = running()
            slots = Counter(slot_of(c) for found in now.values() for c in found)
            names = {h: sorted(c.name for c in found) for h, found in now.items()}
            assert all(n == 1 for n in slots.values()), f"a slot runs twice: {names}"

        one_container_per_slot()
        assert sum(len(found) for found in running().values()) == 6
        for host, found in running().items():
            for container in found:
                assert (slot_of(container), host) in placed, (host, container.name, placed)
                if container.id not in leftovers[host]:
                    assert container.labels[LABEL_POOL] == new_pool["pool_id"], container.name
        # Another pool's leftovers (h3) stay as they were, and so do h1's pool-less ones
        # but those the new pool placed there (taken as its own, and started).
        for host in HOSTS:
            states = {c.id: c.status for c in containers(host, all=True)}
            for container_id, name in leftovers[host].items():
                mine = host == "h1" and (int(name.split(".")[1]), host) in placed
                assert states.get(container_id) == ("running" if mine else "exited"), (host, name)

        def reported(host: str) -> set[str]:
            return {
                e.container_id
                for e in client.events(host=host)
                if e.kind == "foreign-container" and "docker rm -f" in e.message
            }

        for host in HOSTS:
            strangers = {
                i
                for i, name in leftovers[host].items()
                if not (host == "h1" and (int(name.split(".")[1]), host) in placed)
            }
            wait_until(
                lambda host=host, strangers=strangers: reported(host) >= strangers or None,  # type: ignore[misc]
                20,
                what=f"{host}'s leftovers reported",
            )

        with EndpointProber(client, APP) as prober:
            drained = server.cli("drain", "h1", "--wait", "--timeout", "1m")
        assert drained.returncode == 0, drained.stdout + drained.stderr
        prober.check(5)
        one_container_per_slot()
        assert running()["h1"] == []
        # The strangers are still there, untouched.
        for host in ("h1", "h3"):
            ids = {c.id for c in containers(host, all=True)}
            assert {
                i
                for i, name in leftovers[host].items()
                if not (host == "h1" and (int(name.split(".")[1]), host) in placed)
            } <= ids
    finally:
        _stop(new)
        for host in pool.hosts:
            host.remove_all_containers(label="fleet.app")
