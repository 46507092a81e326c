"""The ingress end to end on three docker hosts whose agents run with ``--ingress`` on
one or two of them (a real HAProxy each).

The first test hammers one edge with a client that counts every request's status while
fleet rolls 6 replicas from v1 to v2, rolls a broken v3 back by itself, drains a host,
walks ``fleet upgrade-hosts`` over the non-edge hosts, restarts the edge's own agent
(kill -9), and loses a host (its agent and dockerd killed): zero failed requests in all
but the last, and in the last only within the proxy's health-check window. After the
v2 rollout completes and the edge has taken v1 out, every page is v2.

The second routes two host names, a path prefix and a TCP port on two edges.

What this proves beyond the edge's integration test: the control plane lists a replica
only once it is available and drains it before its shutdown_delay starts, so no request
reaches a container that is going away (the proxy's retries on connection failure are a
second line, not the mechanism).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fleet.agent.haproxy import _SERVER_OPTS, Paths
from fleet.client import FleetClient
from fleet.testing import EtcdServer, HostPool, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.httpload import Hammer, edge_server_rows, get
from fleet.testing.images import HTTPD_CMD, ensure_image, graceful_cmd
from tests.conftest import PoolFactory

IMAGE = "fleet-test/ingress"
HOST_NAME = "web.example"
ROUTE_TIMEOUT = 2.0  # the route's `timeout`: a stalled replica's request goes elsewhere then

APP = f"""\
name: web
image: {IMAGE}:v1
replicas: 6
placement: spread
resources: {{cpu: 0.1, memory: 32Mi}}
health:
  http: http://:8080/index.html
  interval: 500ms
  retries: 2
update:
  max_surge: 2
  max_unavailable: 0
  min_ready: 1s
  progress_deadline: 12s
shutdown_delay: 2s
ingress:
  port: 8080
  host: {HOST_NAME}
  timeout: {ROUTE_TIMEOUT}s
"""


def _check_window() -> float:
    """The longest a dead server can stay in the edge's rotation, by HAProxy's own
    checks (fall failures ``inter`` apart, each allowed ``timeout check``), plus one
    route timeout for a request already sent to it."""
    opts = dict(re.findall(r"(\w+) (\d+)(?:s\b|\b)", _SERVER_OPTS))
    return int(opts["fall"]) * int(opts["inter"]) + 2.0 + ROUTE_TIMEOUT  # timeout check 2s


@dataclass
class EdgePool:
    pool: HostPool
    server: FleetServerProcess
    client: FleetClient
    agents: dict[str, FleetAgentProcess]
    edges: dict[str, tuple[str, int]]  # host -> the address its HAProxy listens on
    make_agent: Callable[[str], FleetAgentProcess]

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.server.cli(*args, timeout=timeout)

    def connected(self) -> set[str]:
        return {h.host_id for h in self.client.hosts() if h.connected}


@contextlib.contextmanager
def edge_pool(
    docker_hosts: PoolFactory,
    etcd_server: EtcdServer,
    pki: TestPKI,
    tmp_path: Path,
    edge_addresses: dict[str, str],
) -> Iterator[EdgePool]:
    """Three hosts, a control plane, and an agent per host; the hosts named in
    ``edge_addresses`` are edges listening on that address (a free port is picked). The
    non-edges carry the label role=worker and may run host commands (an "upgrade" that
    writes their os-release)."""
    pool = docker_hosts(3)
    for host in pool.hosts:
        host.restore_network()
        if not host.ping():
            host.start_daemon()
        host.remove_all_containers(label="fleet.app")
        (tmp_path / f"os-release-{host.name}").write_text('NAME="Fleet OS"\nVERSION_ID=1\n')
    prefix = f"/e2e-ingress-{tmp_path.name[-24:]}/"
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    edges = {name: (addr, free_port(addr)) for name, addr in edge_addresses.items()}

    def make_agent(name: str) -> FleetAgentProcess:
        host = pool.host(name)
        args = ["--advertise-address", host.address, "--memory", "4Gi", "--cpus", "2"]
        args += ["--os-release", str(tmp_path / f"os-release-{name}")]
        labels = {}
        if name in edges:
            args += ["--ingress", f"{edges[name][0]}:{edges[name][1]}"]
        else:
            args.append("--allow-host-commands")
            labels["role"] = "worker"
        return FleetAgentProcess(
            [server.address], name, host.docker_url, tmp_path, pki, labels, args
        )

    agents = {host.name: make_agent(host.name).start() for host in pool.hosts}
    client = server.client()
    edge_pool = EdgePool(pool, server, client, agents, edges, make_agent)
    try:
        server.process.wait_ready(lambda: len(edge_pool.connected()) == 3, 30, what="3 agents")
        yield edge_pool
    finally:
        client.close()
        for agent in agents.values():
            agent.stop()
        # A stopped agent leaves its HAProxy serving (the next one adopts it): end it.
        for name in edges:
            pidfile = tmp_path / f"agent-{name}-state" / "edge" / "haproxy.pid"
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        server.stop()
        print(server.process.log_tail(60))
        for name, agent in agents.items():
            print(f"--- agent {name}")
            print(agent.process.log_tail(40))
        for host in pool.hosts:  # the pool serves other tests after this one
            host.restore_network()
            if not host.ping():
                host.start_daemon()
            host.remove_all_containers(label="fleet.app")


def edge_servers(tmp_path: Path, edge: str, app: str) -> dict[str, str]:
    """The edge's HAProxy servers of ``app``'s backend and their admin states
    (ready, drain, maint; "down" when its checks failed), from its admin socket."""
    return {
        row.name: "down" if row.state == "ready" and row.op_state != 2 else row.state
        # Paths knows where the agent put it: a short dir when the state dir's is long.
        for row in edge_server_rows(Paths(tmp_path / f"agent-{edge}-state" / "edge").admin)
        if row.backend.startswith(f"http_{app}_")
    }


def test_zero_failed_requests_through_rollout_rollback_drain_upgrade_walk_and_host_kill(
    docker_hosts: PoolFactory, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    pool = docker_hosts(3)
    for host in pool.hosts:
        for tag in ("v1", "v2"):
            ensure_image(host.client(), IMAGE, tag, f"{tag}\n")
        # v3 starts, but serves a directory without index.html: its health check gets 404s.
        ensure_image(host.client(), IMAGE, "v3", "v3\n", graceful_cmd([*HTTPD_CMD[:-1], "/bin"]))
    with edge_pool(docker_hosts, etcd_server, pki, tmp_path, {"h1": "127.0.0.1"}) as edges:
        run_the_gauntlet(edges, tmp_path)


def run_the_gauntlet(edges: EdgePool, tmp_path: Path) -> None:
    client = edges.client
    app_file = tmp_path / "web.yaml"
    app_file.write_text(APP)
    assert edges.cli("apply", "-f", str(app_file)).returncode == 0
    assert edges.cli("rollout", "status", "web", "--timeout", "90s").returncode == 0

    def status(*args: str) -> int:
        done = edges.cli("rollout", "status", "web", *args, "--timeout", "120s")
        print(done.stdout, done.stderr)
        return done.returncode

    with Hammer(edges.edges["h1"], HOST_NAME) as hammer:
        wait_until(lambda: sum(r.ok for r in hammer.results) > 50, 30, what="the edge to serve v1")

        # 1. A rolling upgrade v1 -> v2. Once it is complete and the edge has no v1
        # server in rotation (the old ones drain through their shutdown_delay), every
        # page is v2: requests begun after that instant, not those already in flight.
        with hammer.event("rollout v1->v2"):
            assert client.set_image("web", f"{IMAGE}:v2").revision == 2
            assert status() == 0
            done = time.monotonic()
            wait_until(
                lambda: (
                    not any(
                        "-r1-" in name and state == "ready"
                        for name, state in edge_servers(tmp_path, "h1", "web").items()
                    )
                ),
                20,
                what="the edge to take v1 out of rotation",
            )
            settled = time.monotonic()
            hammer.more(200, what="requests after v1 left the edge")
        rollout = hammer.events[-1].results(hammer)
        after = [r.text for r in rollout if r.began >= settled]
        assert set(after) == {"v2"}, Counter(after)
        assert {"v1", "v2"} <= {r.text for r in rollout}
        print(f"ingress: v1 out of the edge {settled - done:.2f}s after `rollout status`")

        # 2. A broken v3 (its health check fails): rolled back by fleet, never served.
        with hammer.event("broken v3 rolled back"):
            assert client.set_image("web", f"{IMAGE}:v3").revision == 3
            assert status() != 0
            wait_until(
                lambda: (
                    (s := client.rollout_status("web")).state == "complete" and s.rollback_of == 3
                ),
                60,
                what="the automatic rollback of revision 3",
            )
            hammer.more(50)
        assert "v3" not in {r.text for r in hammer.events[-1].results(hammer)}

        # 3. A drain of a host that runs replicas (not the edge).
        with hammer.event("drain h2"):
            drained = edges.cli("drain", "h2", "--wait", "--timeout", "120s")
            assert drained.returncode == 0, drained.stderr
            assert edges.cli("uncordon", "h2").returncode == 0
            hammer.more(50)

        # 4. `fleet upgrade-hosts` over the non-edge hosts: each is drained, "upgraded"
        # (its command writes a new os-release and asks this test, standing in for the
        # host's init system, to reboot it: dockerd and agent restarted), and uncordoned.
        with hammer.event("upgrade-hosts h2 h3"), rebooter(edges, tmp_path) as reboots:
            command = (
                "printf 'NAME=\"Fleet OS\"\\nVERSION_ID=2\\n'"
                f" > {tmp_path}/os-release-$FLEET_HOST_ID && touch {tmp_path}/reboot-$FLEET_HOST_ID"
            )
            walk = edges.cli(
                "upgrade-hosts", "-l", "agent.role=worker", "--command", command,
                "--timeout", "200s", timeout=240,
            )  # fmt: skip
            assert walk.returncode == 0, walk.stdout + walk.stderr
            assert sorted(reboots) == ["h2", "h3"]
            wait_until(lambda: len(client.endpoints("web")) == 6, 60, what="6 available")
            hammer.more(50)
        versions = {h.host_id: h.facts["os_version"] for h in client.hosts()}
        assert versions == {"h1": "1", "h2": "2", "h3": "2"}

        # The edge's own agent killed: HAProxy keeps serving; the new agent adopts it.
        with hammer.event("edge agent kill -9"):
            edges.agents["h1"].kill()
            hammer.more(50, what="requests with the edge's agent gone")
            edges.agents["h1"].start()  # the same state dir: HAProxy's pid file and sockets
            wait_until(lambda: "h1" in edges.connected(), 30, what="h1's agent back")
            hammer.more(50)

        # 5. A host killed: its agent and its dockerd (containers, shims and all) get
        # SIGKILL. Its replicas fail; the edge takes them out by its checks and by
        # fleet's word (the host's session ended), and retries what it sent them.
        victim = max(("h2", "h3"), key=lambda h: sum(e.host == h for e in client.endpoints("web")))
        lost = edges.pool.host(victim)
        with hammer.event(f"{victim} killed") as kill:
            edges.agents[victim].kill()
            lost.power_off()

            def replaced() -> bool:
                endpoints = client.endpoints("web")
                return len(endpoints) == 6 and all(e.host != victim for e in endpoints)

            wait_until(replaced, 90, what=f"{victim}'s replicas replaced elsewhere")
            hammer.more(100)
        lost.start_daemon()
        edges.agents[victim] = edges.make_agent(victim).start()
        wait_until(lambda: victim in edges.connected(), 30, what=f"{victim}'s agent back")

    print(f"ingress: {hammer.total} requests")
    for event in hammer.events:
        results = event.results(hammer)
        failed = [r for r in results if not r.ok]
        slowest = max((r.ended - r.began for r in results), default=0)
        line = f"  {event.name}: {len(results)} requests, {len(failed)} failed"
        if failed:
            span = (failed[0].began - event.began, failed[-1].ended - event.began)
            kinds = Counter(r.text.split(":")[0] for r in failed)
            line += f" between {span[0]:.2f}s and {span[1]:.2f}s in: {dict(kinds)}"
        print(f"{line}; slowest {slowest:.2f}s")
    for event in hammer.events[:-1]:
        results = event.results(hammer)
        assert len(results) >= 50, f"{event.name}: only {len(results)} requests"
        texts = [r.text for r in results if not r.ok]
        assert not texts, f"{event.name}: {len(texts)} failed: {texts[:10]}"
    window = _check_window()
    late = [r for r in kill.results(hammer) if not r.ok and r.ended - kill.began > window]
    assert not late, f"failures after the {window}s check window: {late[:5]}"


@contextlib.contextmanager
def rebooter(edges: EdgePool, tmp_path: Path) -> Iterator[list[str]]:
    """Reboot a host (dockerd and agent restarted) when its upgrade command asks."""
    reboots: list[str] = []
    stop = threading.Event()

    def init_system() -> None:
        while not stop.is_set():
            for marker in sorted(tmp_path.glob("reboot-h*")):
                name = marker.name.removeprefix("reboot-")
                edges.agents[name].stop()
                edges.pool.host(name).stop_daemon()
                edges.pool.host(name).start_daemon()
                edges.agents[name] = edges.make_agent(name).start()
                marker.unlink()
                reboots.append(name)
            stop.wait(0.2)

    thread = threading.Thread(target=init_system, daemon=True)
    thread.start()
    try:
        yield reboots
    finally:
        stop.set()
        thread.join(60)


ROUTES = """\
name: web
image: fleet-test/routes:web
health: {http: "http://:8080/index.html", interval: 500ms}
ingress: {port: 8080, host: a.example}
---
name: api
image: fleet-test/routes:api
health: {http: "http://:8080/api/index.html", interval: 500ms}
ingress: {port: 8080, host: [a.example, api.example], path: /api}
---
name: other
image: fleet-test/routes:other
health: {http: "http://:8080/index.html", interval: 500ms}
ingress: {port: 8080, host: b.example}
---
name: raw
image: fleet-test/routes:raw
health: {http: "http://:8080/index.html", interval: 500ms}
ingress: {port: 8080, tcp: TCP_PORT}
"""


def test_two_edges_route_host_names_a_path_prefix_and_a_tcp_port(
    docker_hosts: PoolFactory, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    pool = docker_hosts(3)
    # api serves its page under /api/ (the edge passes the path on as it came).
    api_cmd = graceful_cmd(
        [
            "sh",
            "-c",
            "mkdir -p /www/api && cp /www/index.html /www/api/ && exec " + " ".join(HTTPD_CMD),
        ]
    )
    for host in pool.hosts:
        for tag in ("web", "other", "raw"):
            ensure_image(host.client(), "fleet-test/routes", tag, f"{tag}\n")
        ensure_image(host.client(), "fleet-test/routes", "api", "api\n", api_cmd)
    tcp_port = free_port()
    with edge_pool(
        docker_hosts, etcd_server, pki, tmp_path, {"h1": "127.0.0.1", "h2": "127.0.0.2"}
    ) as edges:
        app_file = tmp_path / "routes.yaml"
        app_file.write_text(ROUTES.replace("TCP_PORT", str(tcp_port)))
        applied = edges.cli("apply", "-f", str(app_file))
        assert applied.returncode == 0, applied.stderr
        for app in ("web", "api", "other", "raw"):
            done = edges.cli("rollout", "status", app, "--timeout", "60s")
            assert done.returncode == 0, done.stdout + done.stderr

        # (Host, path) -> (status, first line of the body; None: any).
        expected: dict[tuple[str, str], tuple[int, str | None]] = {
            ("a.example", "/"): (200, "web"),
            ("A.Example:80", "/index.html"): (200, "web"),  # case and port ignored
            ("a.example", "/apix"): (404, None),  # not under /api: web's own 404
            ("a.example", "/api/"): (200, "api"),
            ("api.example", "/api/index.html"): (200, "api"),
            ("b.example", "/"): (200, "other"),
            ("b.example", "/api/"): (404, None),  # /api is a.example's only: other's 404
        }

        def answers(address: tuple[str, int]) -> dict[tuple[str, str], tuple[int, str | None]]:
            found = {}
            for key, (_, body) in expected.items():
                status, text = get(address, *key)
                found[key] = (status, None if body is None else text)
            return found

        for name, address in edges.edges.items():
            wait_until(
                lambda address=address: answers(address) == expected,  # type: ignore[misc]
                30,
                what=f"edge {name} to route",
                ignore=(OSError, http.client.HTTPException),
            )
            status, body = get(address, "nobody.example")
            assert status == 503 and "no route for host 'nobody.example'" in body, body
            # The TCP app: the edge's own address, the route's port, any Host.
            raw = (address[0], tcp_port)
            wait_until(
                lambda raw=raw: get(raw, "whatever") == (200, "raw"),  # type: ignore[misc]
                30,
                what=f"edge {name} to pass TCP on",
                ignore=(OSError, http.client.HTTPException),
            )
