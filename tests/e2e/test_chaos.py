"""Faults on the full HA shape: 3 docker hosts, a 3-member etcd, 2 control planes.

Every test waits on conditions with deadlines and asserts on what Docker runs, read
through the SDK."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker.errors
import pytest

from fleet.client import FleetClient
from fleet.errors import Conflict, FleetError
from fleet.spec import load_documents
from fleet.testing import EtcdCluster, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from tests.conftest import PoolFactory
from tests.helpers import etcd_json, fleet_containers

DOWN_AFTER, RESCHEDULE_AFTER = 3, 3
PREFIX = "/chaos/"


@dataclass
class Chaos:
    pool: HostPool
    etcd: EtcdCluster
    servers: dict[str, FleetServerProcess]
    agents: dict[str, FleetAgentProcess]
    client: FleetClient
    tmp_path: Path
    pki: TestPKI

    def agent(self, name: str) -> FleetAgentProcess:
        host = self.pool.host(name)
        return FleetAgentProcess(
            [s.address for s in self.servers.values()],
            name,
            host.docker_url,
            self.tmp_path,
            self.pki,
            None,
            ["--advertise-address", host.address],
        )

    def leader(self) -> str:
        """The leading control plane's id, read from a healthy etcd member."""
        member = next(m for m in self.etcd.members if m.healthy())
        found = etcd_json(member, f"{PREFIX}leader")
        return str(found["candidate"]) if found else ""

    def running(self, app: str) -> dict[str, list[str]]:
        """Each host's running containers of ``app`` by image, read through Docker."""
        found: dict[str, list[str]] = {}
        for host in self.pool.hosts:
            if not host.ping():
                found[host.name] = []
                continue
            found[host.name] = [
                c.labels.get("fleet.revision", "?")
                for c in fleet_containers(host.client(), app)
                if c.status == "running"
            ]
        return found

    def total(self, app: str) -> int:
        return sum(len(v) for v in self.running(app).values())


@pytest.fixture
def chaos(docker_hosts: PoolFactory, pki: TestPKI, tmp_path: Path) -> Iterator[Chaos]:
    pool = docker_hosts(3)
    for host in pool.hosts:
        host.remove_all_containers(label="fleet.app")
        for tag in ("v1", "v2"):
            ensure_image(host.client(), "fleet-test/chaos", tag, f"chaos {tag}\n")
    etcd = EtcdCluster(3).start()
    endpoints = ",".join(etcd.endpoints)
    timing = ["--host-down-after", f"{DOWN_AFTER}s", "--reschedule-after", f"{RESCHEDULE_AFTER}s"]
    servers = {
        name: FleetServerProcess(
            endpoints, PREFIX, tmp_path, pki, extra_args=["--server-id", name, *timing]
        ).start()
        for name in ("cp1", "cp2")
    }
    client = FleetClient([s.address for s in servers.values()], servers["cp1"].transport())
    state = Chaos(pool, etcd, servers, {}, client, tmp_path, pki)
    try:
        for host in pool.hosts:
            state.agents[host.name] = state.agent(host.name).start()
        wait_until(
            lambda: len([h for h in client.hosts() if h.connected]) == 3, 30, what="3 agents"
        )
        yield state
    finally:
        client.close()
        for agent in state.agents.values():
            agent.stop()
        for server in servers.values():
            server.stop()
            print(server.process.log_tail(60))
        etcd.close()
        for host in pool.hosts:
            if host.daemon_pid is None:
                host.start_daemon()
            host.remove_all_containers(label="fleet.app")


def web(image: str, replicas: int = 3, min_ready: str = "0s") -> str:
    return f"""
name: web
image: fleet-test/chaos:{image}
replicas: {replicas}
placement: spread
resources: {{cpu: 0.1, memory: 32Mi}}
update: {{max_surge: 1, max_unavailable: 0, min_ready: {min_ready}}}
"""


def test_a_dead_host_loses_its_replicas_and_runs_none_twice_when_back(chaos: Chaos) -> None:
    chaos.client.apply(load_documents(web("v1"), "web.yaml"))
    wait_until(
        lambda: sorted(len(v) for v in chaos.running("web").values()) == [1, 1, 1],
        60,
        what="one replica per host",
    )
    h1 = chaos.pool.host("h1")
    chaos.agents["h1"].kill()
    h1.power_off()
    died = time.monotonic()
    wait_until(
        lambda: sum(len(chaos.running("web")[h]) for h in ("h2", "h3")) == 3,
        DOWN_AFTER + RESCHEDULE_AFTER + 10 + 30,  # plus the scheduling and docker starts
        what="h1's replica running on h2 or h3",
        ignore=(docker.errors.NotFound,),
    )
    assert time.monotonic() - died < DOWN_AFTER + RESCHEDULE_AFTER + 10 + 10

    h1.start_daemon()
    chaos.agents["h1"] = chaos.agent("h1").start()
    wait_until(lambda: chaos.client.hosts("h1")[0].connected, 30, what="h1's agent to come back")
    # Fenced: h1 runs nothing of fleet's (its stale container is gone), 3 run in all.
    wait_until(
        lambda: not fleet_containers(h1.client(), "web", all=True), 30, what="h1's stale one gone"
    )
    assert chaos.total("web") == 3


def test_killing_the_leader_mid_rollout_and_losing_etcd_members(chaos: Chaos) -> None:
    client = chaos.client
    client.apply(load_documents(web("v1", 4, min_ready="2s"), "web.yaml"))
    wait_until(lambda: chaos.total("web") == 4, 60, what="4 replicas")
    wait_until(lambda: client.rollout_status("web").state == "complete", 60, what="v1 done")

    # The leader is SIGKILLed as soon as the v2 rollout has moved: the other finishes it.
    client.set_image("web", "fleet-test/chaos:v2")
    wait_until(lambda: client.rollout_status("web").updated >= 1, 30, what="a v2 replica")
    leader = chaos.leader()
    assert leader in chaos.servers
    chaos.servers[leader].kill()
    wait_until(lambda: chaos.leader() not in ("", leader), 10, interval=0.1, what="a new leader")
    wait_until(lambda: client.rollout_status("web").state == "complete", 90, what="the v2 rollout")
    # Complete means every slot runs v2; the last old container may still be stopping.
    wait_until(
        lambda: Counter(r for v in chaos.running("web").values() for r in v) == Counter({"2": 4}),
        30,
        what="only v2 containers",
    )

    # One etcd member of three stops during a rollout: it completes.
    first = chaos.etcd.members[0]
    client.set_image("web", "fleet-test/chaos:v1")
    first.stop()
    wait_until(
        lambda: (
            client.rollout_status("web").state == "complete"
            and client.rollout_status("web").revision == 3
        ),
        90,
        what="the rollout with one etcd member down",
    )
    wait_until(
        lambda: Counter(r for v in chaos.running("web").values() for r in v) == Counter({"3": 4}),
        30,
        what="only revision 3 containers",
    )

    # Two of three stop: writes fail with a clear message; the containers keep running.
    second = chaos.etcd.members[1]
    second.stop()
    with pytest.raises(FleetError) as refused:
        client.scale("web", 5)
    assert "etcd" in str(refused.value), refused.value
    assert chaos.total("web") == 4
    # Quorum returns: everything resumes with no manual step.
    first.start()
    second.start()
    wait_until(lambda: _scaled(client, 5), 60, what="a write to succeed again")
    wait_until(lambda: chaos.total("web") == 5, 90, what="the 5th replica")


def _scaled(client: FleetClient, replicas: int) -> bool:
    try:
        client.scale("web", replicas)
    except FleetError:
        return False
    return True


def test_two_racing_applies_one_wins_one_conflicts(chaos: Chaos) -> None:
    client = chaos.client
    client.apply(load_documents(web("v1"), "web.yaml"))
    [app] = client.apps("web")
    results: dict[str, str] = {}
    go = threading.Barrier(2)

    def apply(name: str, text: str) -> None:
        go.wait()
        try:
            client.apply(load_documents(text, "web.yaml"), base_generations={"web": app.generation})
            results[name] = "won"
        except Conflict as error:
            results[name] = f"conflict: {error}"

    # Two changes planned on the same generation, each different from the other.
    racers = [
        threading.Thread(target=apply, args=("image", web("v2"))),
        threading.Thread(target=apply, args=("replicas", web("v1", replicas=2))),
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    assert sorted(v.split(":")[0] for v in results.values()) == ["conflict", "won"], results
    winner = next(k for k, v in results.items() if v == "won")
    [stored] = client.apps("web")
    assert stored.generation == app.generation + 1
    assert ("fleet-test/chaos:v2" in stored.spec_json) == (winner == "image")
