"""The ingress end to end on three docker hosts: h1's agent runs with ``--ingress`` (a
real HAProxy), and clients hammering it through one stable address see zero failed
requests while fleet rolls out a new image, rolls it back, drains a host, while the
edge's own agent is killed with SIGKILL and started again, and when a host is lost.

What this proves beyond the edge's integration test: the control plane lists a replica
only once it is available and drains it before its shutdown_delay starts, so no request
reaches a container that is going away (the proxy's retries on connection failure are a
second line, not the mechanism).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleet.client import FleetClient
from fleet.testing import EtcdServer, HostPool, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from tests.conftest import PoolFactory

IMAGE = "fleet-test/ingress"
HOST_NAME = "web.example"

APP = f"""\
name: web
image: {IMAGE}:v1
replicas: 3
health:
  http: http://:8080/
  interval: 1s
update:
  max_surge: 1
  max_unavailable: 0
  min_ready: 1s
shutdown_delay: 2s
ingress:
  port: 8080
  host: {HOST_NAME}
  timeout: 2s
"""


@dataclass
class Hammer:
    """Clients sending GETs to the edge without pause, in threads: half on one kept-alive
    connection each (reopened only after an answer says close), half on a new connection
    per request. Every request that did not get a 200 is a failure, with why."""

    address: tuple[str, int]
    host_name: str
    threads: int = 4
    timeout: float = 10.0  # well above the route's 2 s: a retried request is slow, not lost
    answers: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Hammer:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.answers.values()) + len(self.failures)

    def bodies_since(self, mark: Counter[str]) -> set[str]:
        with self._lock:
            return {body for body, n in self.answers.items() if n > mark.get(body, 0)}

    def mark(self) -> Counter[str]:
        with self._lock:
            return Counter(self.answers)

    def _run(self, keep_alive: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(*self.address, timeout=self.timeout)
            began = time.monotonic()
            try:
                connection.request("GET", "/", headers={"Host": self.host_name})
                response = connection.getresponse()
                body = response.read().decode(errors="replace").strip()
                closing = response.will_close or not keep_alive
                with self._lock:
                    self.slowest = max(self.slowest, time.monotonic() - began)
                    if response.status == 200:
                        self.answers[body] += 1
                    else:
                        self.failures.append(f"{time.time():.3f} HTTP {response.status}: {body}")
            except (OSError, http.client.HTTPException) as error:
                closing = True
                with self._lock:
                    self.failures.append(f"{time.time():.3f} {type(error).__name__}: {error}")
            if closing:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()


@dataclass
class EdgePool:
    pool: HostPool
    server: FleetServerProcess
    client: FleetClient
    agents: dict[str, FleetAgentProcess]
    ingress: tuple[str, int]

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.server.cli(*args, timeout=timeout)


def _agent(
    server: FleetServerProcess, host: object, tmp_path: Path, pki: TestPKI, extra: list[str]
) -> FleetAgentProcess:
    return FleetAgentProcess(
        [server.address],
        host.name,  # type: ignore[attr-defined]
        host.docker_url,  # type: ignore[attr-defined]
        tmp_path,
        pki,
        extra_args=["--advertise-address", host.address, *extra],  # type: ignore[attr-defined]
    )


@pytest.fixture
def edge_pool(
    docker_hosts: PoolFactory, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> Iterator[EdgePool]:
    pool = docker_hosts(3)
    for host in pool.hosts:
        host.remove_all_containers(label="fleet.app")
        for tag in ("v1", "v2"):
            ensure_image(host.client(), IMAGE, tag, f"{tag}\n")
    server = FleetServerProcess(etcd_server.endpoint, "/e2e-ingress/", tmp_path, pki).start()
    ingress = ("127.0.0.1", free_port())
    agents = {
        host.name: _agent(
            server,
            host,
            tmp_path,
            pki,
            ["--ingress", f"{ingress[0]}:{ingress[1]}"] if host.name == "h1" else [],
        ).start()
        for host in pool.hosts
    }
    client = server.client()
    try:
        server.process.wait_ready(
            lambda: len([h for h in client.hosts() if h.connected]) == 3, 30, what="3 agents"
        )
        yield EdgePool(pool, server, client, agents, ingress)
    finally:
        client.close()
        for agent in agents.values():
            agent.stop()
        # A stopped agent leaves its HAProxy serving (the next one adopts it): end it.
        pidfile = tmp_path / "agent-h1-state" / "edge" / "haproxy.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        server.stop()
        print(server.process.log_tail(60))
        for name, agent in agents.items():
            print(f"--- agent {name}")
            print(agent.process.log_tail(40))


def test_zero_failed_requests_through_rollout_rollback_drain_edge_restart_and_host_loss(
    edge_pool: EdgePool, tmp_path: Path
) -> None:
    app_file = tmp_path / "web.yaml"
    app_file.write_text(APP)
    assert edge_pool.cli("apply", "-f", str(app_file)).returncode == 0
    assert edge_pool.cli("rollout", "status", "web", "--timeout", "90s").returncode == 0

    with Hammer(edge_pool.ingress, HOST_NAME) as hammer:
        wait_until(lambda: hammer.answers["v1"] > 50, 30, what="the edge to serve v1")

        # A rollout: every request answered, by v1 then v2.
        rolled = edge_pool.cli("set", "image", "web", f"{IMAGE}:v2")
        assert rolled.returncode == 0, rolled.stderr
        assert edge_pool.cli("rollout", "status", "web", "--timeout", "120s").returncode == 0
        mark = hammer.mark()
        wait_until(lambda: hammer.bodies_since(mark) == {"v2"}, 20, what="only v2 answering")

        # A rollback.
        assert edge_pool.cli("rollout", "undo", "web").returncode == 0
        assert edge_pool.cli("rollout", "status", "web", "--timeout", "120s").returncode == 0
        mark = hammer.mark()
        wait_until(lambda: hammer.bodies_since(mark) == {"v1"}, 20, what="only v1 answering")

        # A drain of a host that runs replicas (not the edge).
        drained = edge_pool.cli("drain", "h2", "--wait", "--timeout", "120s")
        assert drained.returncode == 0, drained.stderr
        assert edge_pool.cli("uncordon", "h2").returncode == 0

        # The edge's agent killed: HAProxy keeps serving; the new agent adopts it.
        edge = edge_pool.agents["h1"]
        edge.kill()
        before = hammer.total
        wait_until(lambda: hammer.total > before + 50, 20, what="requests with the agent gone")
        edge.start()  # the same state dir: HAProxy's pid file and sockets are there
        wait_until(
            lambda: any(h.host_id == "h1" and h.connected for h in edge_pool.client.hosts()),
            30,
            what="h1's agent back",
        )
        before = hammer.total
        wait_until(lambda: hammer.total > before + 50, 20, what="requests after the agent's return")

        # A host lost, as at a power cut: its agent killed, its network gone. HAProxy's
        # checks take its replicas out within seconds (requests sent there meanwhile
        # time out connecting and go to another server); fleet replaces them.
        lost = edge_pool.pool.host("h3")
        edge_pool.agents["h3"].kill()
        lost.cut_network()
        try:

            def replaced() -> bool:
                endpoints = edge_pool.client.endpoints("web")
                return len(endpoints) == 3 and all(e.host != "h3" for e in endpoints)

            wait_until(replaced, 90, what="h3's replicas replaced elsewhere")
            before = hammer.total
            wait_until(lambda: hammer.total > before + 50, 20, what="requests after the loss")
        finally:
            lost.restore_network()

    print(
        f"ingress: {hammer.total} requests, {len(hammer.failures)} failed, "
        f"slowest {hammer.slowest:.2f}s, {dict(hammer.answers)}"
    )
    assert hammer.total > 500, f"the hammer barely ran: {hammer.total} requests"
    assert not hammer.failures, f"{len(hammer.failures)} failed: {hammer.failures[:10]}"
