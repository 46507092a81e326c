"""Draining hosts end to end on three docker hosts: replicas move make-before-break
while a prober polls every endpoint, every replica of the host at once; a drain without
room stops nothing."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from tests.conftest import PoolFactory
from tests.helpers import EndpointProber, fleet_containers, http_get

IMAGE = "fleet-test/drain:v1"


@dataclass
class Pool3:
    pool: HostPool
    server: FleetServerProcess
    client: FleetClient
    agents: dict[str, FleetAgentProcess]

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.server.cli(*args, timeout=timeout)

    def running(self, host: str) -> list[str]:
        """Ids of the fleet containers Docker runs on ``host``."""
        docker_client = self.pool.host(host).client()
        return sorted(c.id for c in fleet_containers(docker_client) if c.status == "running")


@pytest.fixture
def three(
    request: pytest.FixtureRequest,
    docker_hosts: PoolFactory,
    etcd_server: EtcdServer,
    pki: TestPKI,
    tmp_path: Path,
) -> Iterator[Pool3]:
    pool = docker_hosts(3)
    for host in pool.hosts:
        host.remove_all_containers(label="fleet.app")
        ensure_image(host.client(), "fleet-test/drain", "v1", "drain v1\n")
    prefix = f"/e2e-{request.node.name[:40].replace('_', '-')}/"
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    memory = getattr(request, "param", "4Gi")
    agents = {
        h.name: FleetAgentProcess(
            [server.address],
            h.name,
            h.docker_url,
            tmp_path,
            pki,
            extra_args=["--advertise-address", h.address, "--memory", memory, "--cpus", "2"],
        ).start()
        for h in pool.hosts
    }
    client = server.client()
    try:
        server.process.wait_ready(
            lambda: len([h for h in client.hosts() if h.connected]) == 3, 30, what="3 agents"
        )
        yield Pool3(pool, server, client, agents)
    finally:
        client.close()
        for agent in agents.values():
            agent.stop()
        server.stop()
        print(server.process.log_tail(80))
        for agent in agents.values():
            print(agent.process.log_tail(30))
        for host in pool.hosts:
            host.remove_all_containers(label="fleet.app")


def test_drain_moves_every_replica_without_dropping_below_min_available(three: Pool3) -> None:
    client = three.client
    spec = f"""
name: web
image: {IMAGE}
replicas: 6
placement: spread
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
min_available: 5
shutdown_delay: 1s
health: {{http: "http://:8080/index.html", interval: 500ms, retries: 2}}
update: {{min_ready: 1s}}
"""
    client.apply(load_documents(spec, "web.yaml"))
    wait_until(lambda: len(client.endpoints("web")) == 6, 120, what="6 available replicas")
    assert {h: len(three.running(h)) for h in ("h1", "h2", "h3")} == {"h1": 2, "h2": 2, "h3": 2}

    with EndpointProber(client) as prober:
        drained = three.cli("drain", "h1", "--wait", "--timeout", "3m")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert len(prober.samples) > 10
    low = [(t, n) for t, n, _ in prober.samples if n < 5]
    assert not low, f"fewer than 5 healthy endpoints at {low[:5]}"
    failed = [f for _, _, fs in prober.samples for f in fs]
    assert not failed, f"listed endpoints that did not answer: {failed[:5]}"

    # What Docker runs: nothing of fleet's on h1, the six on h2 and h3.
    assert three.running("h1") == []
    assert len(three.running("h2")) + len(three.running("h3")) == 6
    [h1] = client.hosts("h1")
    assert (h1.state, h1.maintenance, h1.remaining) == ("drained", "fleet drain", 0)
    assert len(client.endpoints("web")) == 6

    # Uncordoned, h1 takes new replicas again (and gives its maintenance slot back).
    uncordoned = three.cli("uncordon", "h1")
    assert uncordoned.returncode == 0, uncordoned.stderr
    [h1] = client.hosts("h1")
    assert (h1.state, h1.maintenance) == ("ready", "")
    client.scale("web", 7)
    wait_until(lambda: len(three.running("h1")) == 1, 60, what="the 7th replica on h1")


class DockerWatch:
    """Reads Docker on every host every ~100 ms, in a thread: how many of the app's
    containers run, and how many of them answer HTTP on their published port (each
    probed directly at its host's address, not through fleet's endpoint list)."""

    def __init__(self, pool: HostPool, app: str = "web") -> None:
        self._clients = [(h.address, h.client()) for h in pool.hosts]
        self._app = app
        self._stop = threading.Event()
        self.samples: list[tuple[float, int, int]] = []  # time, running, answering
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DockerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        label = f"fleet.app={self._app}"
        while not self._stop.is_set():
            running = answering = 0
            for address, docker_client in self._clients:
                for summary in docker_client.api.containers(filters={"label": label}):
                    running += 1
                    ports = [p["PublicPort"] for p in summary["Ports"] if p.get("PublicPort")]
                    try:
                        http_get(address, ports[0], 1.0)
                        answering += 1
                    except (urllib.error.URLError, OSError, IndexError):
                        pass
            self.samples.append((time.time(), running, answering))
            self._stop.wait(0.1)


def started_at(container: Any) -> float:
    """When Docker started ``container`` (epoch seconds)."""
    text = container.attrs["State"]["StartedAt"]  # RFC 3339 with nanoseconds
    whole, _, fraction = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return stamp + float(f"0.{fraction or 0}")


def test_a_drain_starts_every_replacement_of_the_host_together(three: Pool3) -> None:
    """Nine replicas, three on h1, min_available 9: the disruption budget allows no
    replica to stop at all, which once meant one move at a time (max(1, 9 - 9)), each
    replacement started only once the one before was available (healthy for min_ready,
    3 s). A make-before-break move costs no availability, so h1's three replacements
    start together: Docker started all three before any could be available, and ran them
    beside the three old ones; every replica (read from Docker, probed directly)
    answered throughout."""
    client = three.client
    spec = f"""
name: web
image: {IMAGE}
replicas: 9
placement: spread
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
min_available: 9
shutdown_delay: 1s
health: {{http: "http://:8080/index.html", interval: 500ms, retries: 2}}
update: {{min_ready: 3s}}
"""
    client.apply(load_documents(spec, "web.yaml"))
    wait_until(lambda: len(client.endpoints("web")) == 9, 120, what="9 available replicas")
    assert {h: len(three.running(h)) for h in ("h1", "h2", "h3")} == {"h1": 3, "h2": 3, "h3": 3}

    before = {c.id for h in ("h2", "h3") for c in fleet_containers(three.pool.host(h).client())}
    began = time.time()
    with EndpointProber(client) as prober, DockerWatch(three.pool) as docker:
        drained = three.cli("drain", "h1", "--wait", "--timeout", "2m")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    print(f"drain of 3 replicas took {time.time() - began:.1f}s; {len(docker.samples)} samples")

    # The replacements, as Docker started them: all three within less than min_ready,
    # so each started before any of them could take its slot over (serial moves would
    # start them at least 3 s apart); and Docker ran them beside the three old ones.
    new = [
        c
        for h in ("h2", "h3")
        for c in fleet_containers(three.pool.host(h).client())
        if c.id not in before
    ]
    starts = sorted(started_at(c) for c in new)
    print(f"replacements started at +{[round(t - began, 2) for t in starts]} s")
    assert len(starts) == 3 and all(t >= began - 1 for t in starts)
    assert starts[-1] - starts[0] < 3.0, f"replacements started {starts[-1] - starts[0]:.1f}s apart"
    assert max(running for _, running, _ in docker.samples) == 12
    # Every replica answered throughout, read from Docker and from fleet's endpoints.
    assert len(docker.samples) > 5
    low = [(t, n) for t, _, n in docker.samples if n < 9]
    assert not low, f"fewer than 9 containers answered at {low[:5]}"
    prober.check(at_least=9)

    assert three.running("h1") == []
    assert len(three.running("h2")) + len(three.running("h3")) == 9
    [h1] = client.hosts("h1")
    assert (h1.state, h1.remaining) == ("drained", 0)


@pytest.mark.parametrize("three", ["1Gi"], indirect=True)
def test_a_drain_without_room_reports_the_blocked_replicas_and_stops_nothing(
    three: Pool3,
) -> None:
    client = three.client
    spec = f"""
name: big
image: {IMAGE}
replicas: 3
placement: spread
resources: {{memory: 600Mi}}
"""
    client.apply(load_documents(spec, "big.yaml"))
    wait_until(
        lambda: all(len(three.running(h)) == 1 for h in ("h1", "h2", "h3")),
        120,
        what="one replica per host",
    )
    before = three.running("h1")

    started = three.cli("drain", "h1")
    assert started.returncode == 0, started.stderr

    def blocked() -> list[str] | None:
        [info] = client.hosts("h1")
        return [f"{b.app}.{b.slot}: {b.reason}" for b in info.blocked] or None

    reasons = wait_until(blocked, 30, what="the drain to report what cannot move")
    assert len(reasons) == 1 and "insufficient memory" in reasons[0], reasons
    # Nothing was stopped: the same container still runs on h1, and all three run.
    wait = three.cli("drain", "h1", "--wait", "--timeout", "3s")
    assert wait.returncode == 1 and "cannot move" in wait.stderr, wait.stdout + wait.stderr
    assert three.running("h1") == before
    assert all(len(three.running(h)) == 1 for h in ("h2", "h3"))
    [info] = client.hosts("h1")
    assert (info.state, info.remaining) == ("draining", 1)


def test_upgrade_hosts_walks_the_pool_one_host_at_a_time_holding_the_budget(
    docker_hosts: PoolFactory,
    etcd_server: EtcdServer,
    pki: TestPKI,
    tmp_path: Path,
) -> None:
    """Each host's "upgrade" writes a new os-release for it and asks this test (standing
    in for the host's init system) to restart its dockerd and agent."""
    pool = docker_hosts(3)
    for host in pool.hosts:
        host.remove_all_containers(label="fleet.app")
        ensure_image(host.client(), "fleet-test/drain", "v1", "drain v1\n")
        (tmp_path / f"os-release-{host.name}").write_text('NAME="Fleet OS"\nVERSION_ID=1\n')
    server = FleetServerProcess(etcd_server.endpoint, "/e2e-upgrade-walk/", tmp_path, pki).start()

    def agent(name: str) -> FleetAgentProcess:
        host = pool.host(name)
        args = ["--advertise-address", host.address, "--memory", "4Gi", "--cpus", "2"]
        args += ["--os-release", str(tmp_path / f"os-release-{name}"), "--allow-host-commands"]
        return FleetAgentProcess([server.address], name, host.docker_url, tmp_path, pki, None, args)

    agents = {h.name: agent(h.name).start() for h in pool.hosts}
    restarts: list[str] = []
    stop = threading.Event()

    def init_system() -> None:
        """Restart a host's dockerd and agent when its upgrade command asks for it."""
        while not stop.is_set():
            for marker in sorted(tmp_path.glob("restart-h*")):
                name = marker.name.removeprefix("restart-")
                agents[name].stop()
                pool.host(name).stop_daemon()
                pool.host(name).start_daemon()
                agents[name] = agent(name).start()
                marker.unlink()
                restarts.append(name)
            stop.wait(0.2)

    restarter = threading.Thread(target=init_system, daemon=True)
    client = server.client()
    try:
        server.process.wait_ready(
            lambda: len([h for h in client.hosts() if h.connected]) == 3, 30, what="3 agents"
        )
        spec = f"""
name: web
image: {IMAGE}
replicas: 6
placement: spread
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
min_available: 5
shutdown_delay: 1s
health: {{http: "http://:8080/index.html", interval: 500ms, retries: 2}}
update: {{min_ready: 1s}}
"""
        client.apply(load_documents(spec, "web.yaml"))
        wait_until(lambda: len(client.endpoints("web")) == 6, 120, what="6 available replicas")
        restarter.start()
        command = (
            f"printf 'NAME=\"Fleet OS\"\\nVERSION_ID=2\\n' > {tmp_path}/os-release-$FLEET_HOST_ID"
            f" && touch {tmp_path}/restart-$FLEET_HOST_ID"
        )
        out_at_once: list[int] = []
        with EndpointProber(client) as prober:
            started = client.upgrade_hosts(
                "start", max_parallel=1, command=command, canary_app="web"
            )
            assert [h.host_id for h in started.hosts] == ["h1", "h2", "h3"]

            def walked() -> bool:
                hosts = client.hosts()
                out_at_once.append(
                    sum(
                        1
                        for h in hosts
                        if h.state in ("draining", "drained", "maintenance", "down")
                    )
                )
                return client.upgrade().state == "done"

            wait_until(walked, 400, what="the upgrade walk to finish")
        walk = client.upgrade()
        assert [(h.host_id, h.phase) for h in walk.hosts] == [
            ("h1", "done"),
            ("h2", "done"),
            ("h3", "done"),
        ], walk
        assert sorted(restarts) == ["h1", "h2", "h3"]
        # Each host ran a healthy canary replica of web before it was uncordoned.
        assert all("canary of web ran healthy" in h.message for h in walk.hosts), walk
        assert max(out_at_once) == 1, "more than one host out at once"
        low = [(t, n) for t, n, _ in prober.samples if n < 5]
        assert not low, f"fewer than 5 healthy endpoints at {low[:5]}"
        hosts = client.hosts()
        assert {h.host_id: (h.state, h.facts["os_version"], h.maintenance) for h in hosts} == {
            name: ("ready", "2", "") for name in ("h1", "h2", "h3")
        }
        wait_until(lambda: len(client.endpoints("web")) == 6, 60, what="6 available at the end")

        def running() -> int:
            return sum(
                1
                for h in pool.hosts
                for c in fleet_containers(h.client(), "web")
                if c.status == "running"
            )

        # The last canary leaves after its shutdown delay: then the six replicas remain.
        wait_until(lambda: running() == 6, 30, what="the six replicas and no canary")
    finally:
        stop.set()
        client.close()
        for process in agents.values():
            process.stop()
        server.stop()
        print(server.process.log_tail(80))
        for process in agents.values():
            print(process.process.log_tail(30))
        for host in pool.hosts:
            if not host.ping():
                host.start_daemon()
            host.remove_all_containers(label="fleet.app")
