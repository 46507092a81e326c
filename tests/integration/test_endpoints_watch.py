"""Following an app's endpoints from outside (#20): ``WatchEndpoints`` and ``fleet
endpoints APP --watch -o json`` against a real ``fleet server`` (two, on one real etcd)
and a real agent over the namespaced dockerd, and Prometheus' HTTP service discovery
on the metrics port. The stream sends the whole list at once and again on each change
(a replica becoming available after ``min_ready``: the server's timer; one scaled
away), reconnects to the other server when its own stops, and answers viewers, not
agents."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet.client import FleetClient
from fleet.errors import NotFound, PermissionDenied
from fleet.pki.subjects import Role
from fleet.proto import fleet_pb2 as pb
from fleet.spec import load_documents
from fleet.testing import DockerHost, EtcdServer, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.transport import Transport
from tests.conftest import ensure_image
from tests.helpers import http_get, scrape


@dataclass
class Pool:
    first: FleetServerProcess  # the agent's, with the metrics port
    second: FleetServerProcess  # the one the watch starts on, stopped midway
    metrics: str
    agent: FleetAgentProcess
    host: DockerHost
    docker: Any
    image: str


@pytest.fixture
def pool(
    etcd_server: EtcdServer, clean_host: DockerHost, pki: TestPKI, tmp_path: Path
) -> Iterator[Pool]:
    image = ensure_image(clean_host)
    metrics = f"127.0.0.1:{free_port()}"
    prefix = "/t-endpoints-watch/"
    first = FleetServerProcess(
        etcd_server.endpoint, prefix, tmp_path, pki, extra_args=["--metrics-listen", metrics]
    ).start()
    second = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    # The host's own address, where its published ports answer (HAProxy goes there).
    agent = FleetAgentProcess(
        [first.address],
        clean_host.name,
        clean_host.docker_url,
        tmp_path,
        pki,
        extra_args=["--advertise-address", clean_host.address],
    ).start()
    try:
        with first.client() as client:
            wait_until(
                lambda: any(h.connected for h in client.hosts() if h.host_id == clean_host.name),
                30,
                what="the agent to connect",
            )
        yield Pool(first, second, metrics, agent, clean_host, clean_host.client(), image)
    finally:
        agent.stop()
        second.stop()
        first.stop()
        print(first.process.log_tail(60))
        print(agent.process.log_tail(40))


def web(image: str, replicas: int) -> str:
    return f"""\
name: web
image: {image}
replicas: {replicas}
command: [httpd, -f, -p, "8080", -h, /www]
ports: [{{container_port: 8080}}]
labels: {{team: shop, app.kubernetes.io/name: web}}
update: {{min_ready: 1s}}
stop_grace_period: 1s
"""


class Follower:
    """``fleet endpoints web --watch -o json`` as a script runs it: each line it prints,
    parsed, in ``documents``."""

    def __init__(self, servers: str, pki: TestPKI) -> None:
        pki.client()  # the admin certificate, found through FLEET_PKI_DIR
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FLEET_") or k == "FLEET_CLI_CONFIG"
        }
        env["FLEET_PKI_DIR"] = str(pki.dir)
        command = [sys.executable, "-m", "fleet", "endpoints", "web", "--watch", "-o", "json"]
        self.process = subprocess.Popen(
            [*command, "--server", servers],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.documents: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.documents.append(json.loads(line))

    def slots(self) -> list[int] | None:
        """The slots of the newest list (None before the first)."""
        if not self.documents:
            return None
        return sorted(int(e["slot"]) for e in self.documents[-1]["endpoints"])

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: its exit code and what it said on stderr."""
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=15)
        self._reader.join(5)
        return self.process.returncode, err


FOLLOW = Path(__file__).parents[2] / "deploy" / "external-lb" / "haproxy-follow.py"


class Balancer:
    """A real HAProxy with a backend of server slots, kept by the documented follower
    script (deploy/external-lb/haproxy-follow.py) running the real CLI."""

    def __init__(self, tmp_path: Path, servers: str, pki: TestPKI) -> None:
        self.socket = str(tmp_path / "haproxy.sock")
        self.port = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            f"global\n    stats socket {self.socket} mode 600 level admin\n"
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n"
            "    timeout server 10s\n"
            f"frontend web\n    bind 127.0.0.1:{self.port}\n    default_backend web\n"
            "backend web\n    server-template s 1-4 127.0.0.1:1 disabled\n"
        )
        self.haproxy = subprocess.Popen(["haproxy", "-f", str(config), "-db"])
        wait_until(lambda: os.path.exists(self.socket), 10, what="haproxy's socket")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FLEET_") or k == "FLEET_CLI_CONFIG"
        }
        env["FLEET_PKI_DIR"] = str(pki.dir)
        env["FLEET"] = f"{sys.executable} -m fleet"
        self.follower = subprocess.Popen(
            [sys.executable, str(FOLLOW), "web", "8080", "web", self.socket, "--server", servers],
            env=env,
        )

    def in_rotation(self) -> list[tuple[str, str, int]]:
        """(slot, address, port) of each server not in maintenance (admin state bits 1-2)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.socket)
            s.sendall(b"show servers state web\n")
            text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
        rows = [r.split() for r in text.splitlines()[2:] if r.strip()]
        return sorted((r[3], r[4], int(r[18])) for r in rows if int(r[6]) & 3 == 0)

    def close(self) -> None:
        self.follower.send_signal(signal.SIGINT)
        self.follower.wait(10)
        self.haproxy.terminate()
        self.haproxy.wait(10)


def host_port(container: Any) -> int:
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])


def containers(pool: Pool, count: int) -> dict[int, Any]:
    """slot -> container, once the host runs exactly ``count`` of web's (seen in Docker)."""
    found: dict[int, Any] = {}

    def settled() -> bool:
        nonlocal found
        listed = pool.docker.containers.list(filters={"label": "fleet.app=web"})
        found = {int(c.labels["fleet.slot"]): c for c in listed if c.status == "running"}
        return len(found) == count == len(listed)

    wait_until(settled, 60, what=f"{count} running containers of web")
    return found


def first(watch: Generator[pb.EndpointList, None, None]) -> pb.EndpointList:
    """The list a watch sends at once; then hang up."""
    try:
        return next(watch)
    finally:
        watch.close()


def test_a_watch_follows_availability_and_scaling_across_servers_and_sd_lists_targets(
    pool: Pool, pki: TestPKI, tmp_path: Path
) -> None:
    admin = pool.first.client()
    with pytest.raises(NotFound, match="web"):
        first(admin.watch_endpoints("web"))
    admin.apply(load_documents(web(pool.image, 1)))

    # Started on the second server, with the first as the other choice.
    servers = f"{pool.second.address},{pool.first.address}"
    follower = Follower(servers, pki)
    balancer = Balancer(tmp_path, servers, pki)
    try:
        wait_until(lambda: follower.slots() == [0], 40, what="slot 0 available in the watch")
        address = pool.host.address
        assert [h.address for h in admin.hosts() if h.host_id == pool.host.name] == [address]
        [endpoint] = follower.documents[-1]["endpoints"]
        first_port = host_port(containers(pool, 1)[0])
        assert (endpoint["address"], endpoint["host_port"], endpoint["container_port"]) == (
            address,
            first_port,
            8080,
        )

        # Roles: a viewer may watch, and is sent the list at once; an agent may not.
        viewer = pool.first.client("vic", Role.viewer)
        now = first(viewer.watch_endpoints("web"))
        assert [e.slot for e in now.endpoints] == [0] and now.version > 0
        agent = FleetClient([pool.first.address], Transport(pki.agent("h9")))
        with pytest.raises(PermissionDenied, match="agent certificate 'h9' may not read apps"):
            first(agent.watch_endpoints("web"))

        # A second replica: listed once available (1s after it is healthy: the timer).
        admin.scale("web", 2)
        wait_until(lambda: follower.slots() == [0, 1], 40, what="slot 1 in the watch")
        ports = {slot: host_port(c) for slot, c in containers(pool, 2).items()}
        # No app named: every app's, in a list and in a watch (the same two here).
        assert admin.endpoints("") == admin.endpoints("web")
        assert list(first(admin.watch_endpoints("")).endpoints) == admin.endpoints("web")
        # The documented HAProxy follower put both in rotation, each in a slot of its own,
        # and requests through HAProxy reach them.
        both = [("s1", address, ports[0]), ("s2", address, ports[1])]
        wait_until(lambda: balancer.in_rotation() == both, 20, what=f"haproxy servers {both}")
        assert http_get("127.0.0.1", balancer.port)

        # Prometheus' http_sd on the metrics port: a target group per replica port.
        status, text, headers = scrape(
            pool.metrics, ca=pki.ca, cert=pki.client("vic", Role.viewer), path="/v1/sd/http"
        )
        assert status == 200, text
        assert headers["Content-Type"] == "application/json"
        groups = json.loads(text.encode("utf-8"))
        assert groups == [
            {
                "targets": [f"{address}:{ports[slot]}"],
                "labels": {
                    "__meta_fleet_label_app_kubernetes_io_name": "web",
                    "__meta_fleet_label_team": "shop",
                    "__meta_fleet_app": "web",
                    "__meta_fleet_host": pool.host.name,
                    "__meta_fleet_slot": str(slot),
                    "__meta_fleet_revision": "1",
                    "__meta_fleet_container_port": "8080",
                },
            }
            for slot in (0, 1)
        ]
        assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", k) for g in groups for k in g["labels"])
        # The same credentials as /metrics: none, an agent's certificate: refused.
        assert scrape(pool.metrics, ca=pki.ca, path="/v1/sd/http")[0] == 401
        assert scrape(pool.metrics, ca=pki.ca, cert=pki.agent("h9"), path="/v1/sd/http")[0] == 403
        status, text, _ = scrape(
            pool.metrics, ca=pki.ca, cert=pki.client(), path="/v1/sd/http?app=nope"
        )
        assert (status, json.loads(text)) == (200, [])

        # The watch's server stops: the CLI goes on with the other, which sends the same
        # list (not printed again), then the next change.
        seen = len(follower.documents)
        pool.second.stop()
        admin.scale("web", 1)
        wait_until(lambda: follower.slots() == [0], 30, what="slot 1 scaled away in the watch")
        assert len(follower.documents) == seen + 1, follower.documents
        # HAProxy: slot 1 out of rotation, slot 0's server left where it was.
        wait_until(lambda: balancer.in_rotation() == both[:1], 20, what="haproxy down to s1")
    finally:
        balancer.close()
        code, err = follower.interrupt()
    assert code == 130 and "Traceback" not in err, err
    documents = follower.documents
    # One line per change: each list differs from the one before, versions rise.
    lists = [d["endpoints"] for d in documents]
    assert all(a != b for a, b in itertools.pairwise(lists)), lists
    versions = [d["version"] for d in documents]
    assert versions == sorted(set(versions)), versions
    assert {d["app"] for d in documents} == {"web"}
