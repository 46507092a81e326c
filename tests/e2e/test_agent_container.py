"""The agent from fleet's image, run as a container in each namespaced Docker host's own
dockerd with the README's run line: both hosts take replicas, a rollout waits for an
HTTP health check, live usage comes from the hosts' cgroups, `fleet logs` and `fleet
exec` reach a replica, and an upgrade walk's command runs on the host proper (it writes
the machine's files, which the agent's container cannot reach) and survives a restart
of the agent's container, its exit reported once.

How the run line differs on a test host (its socket, `--network host` meaning the test
host's network namespace, the namespaces host commands enter): see
``fleet.testing.agentcontainer``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet.agent.edgelaunch import EDGE_CONTAINER, LABEL_EDGE_PROXY
from fleet.agent.haproxy import Paths
from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import DockerHost, EtcdServer, HostPool, wait_until
from fleet.testing.agentcontainer import AGENT_NAME, AgentFiles, agent_container, gateway_pki
from fleet.testing.certs import TestPKI, tls_args
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.testing.httpload import Hammer, edge_server_rows, get
from fleet.testing.images import ensure_image
from fleet.testing.procs import free_port
from tests.helpers import fleet_containers, http_get

WEB = "fleet-test/agent-container"
COMMAND_LABEL = "fleet.host-command"
ImageLoader = Any


@dataclass
class Pool:
    hosts: list[DockerHost]
    server: FleetServerProcess
    client: FleetClient
    tmp: Path
    pki: TestPKI
    listen: str
    image: ImageLoader

    def agent(self, host: DockerHost) -> Any:
        return host.client().containers.get(AGENT_NAME)

    def agent_log(self, host: DockerHost) -> str:
        return str(self.agent(host).logs().decode(errors="replace"))


def _web_images(host: DockerHost) -> None:
    """v1, and v2 running as uid 1000: a health check opens the namespace of a process
    of another user (the run line's SYS_PTRACE)."""
    client = host.client()
    ensure_image(client, WEB, "v1", "web v1\n")
    ensure_image(client, WEB, "v2-root", "web v2\n")
    base = client.containers.create(f"{WEB}:v2-root")
    try:
        base.commit(WEB, "v2", changes="USER 1000")
    finally:
        base.remove()


@pytest.fixture
def pool(
    request: pytest.FixtureRequest,
    etcd_server: EtcdServer,
    clean_pool: HostPool,
    fleet_image: ImageLoader,
    tmp_path: Path,
) -> Iterator[Pool]:
    gateway = clean_pool.gateway
    pki = gateway_pki(tmp_path / "pki", gateway)
    prefix = f"/e2e-{request.node.name[:40].replace('_', '-')}/"
    listen = f"{gateway}:{free_port(gateway)}"
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki, listen=listen)
    server.start()
    client = server.client()
    found = Pool(list(clean_pool.hosts), server, client, tmp_path, pki, listen, fleet_image)
    try:
        for host in clean_pool.hosts:
            _web_images(host)
            files = AgentFiles.make(tmp_path, host.name, pki, listen, allow_host_commands=True)
            # The image's default runs host commands in sibling containers.
            agent_container(host, fleet_image(host), files)
        yield found
    finally:
        client.close()
        print(server.process.log_tail(60))  # shown only when the test failed
        for host in clean_pool.hosts:
            try:
                print(f"--- agent {host.name}\n" + found.agent_log(host)[-6000:])
            except Exception as error:
                print(f"--- agent {host.name}: {error!r}")
            for container in host.client().containers.list(all=True):
                if container.name == AGENT_NAME or {COMMAND_LABEL, LABEL_EDGE_PROXY} & set(
                    container.labels
                ):
                    container.remove(force=True)
        server.stop()


def _exec(server: FleetServerProcess, target: str, *command: str) -> Any:
    """`fleet exec TARGET -- COMMAND` as an admin (its options before the `--`)."""
    assert server.pki is not None
    options = ["--server", server.address, *tls_args(server.pki.client())]
    argv = [sys.executable, "-m", "fleet", "exec", target, *options, "--", *command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _web(image: str) -> str:
    return f"""
name: web
image: {image}
replicas: 4
placement: spread
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
health: {{http: "http://:8080/index.html", interval: 500ms, timeout: 1s, retries: 2}}
update: {{max_surge: 1, max_unavailable: 0, min_ready: 1s, progress_deadline: 90s}}
"""


BURN = """
name: burn
image: {image}
resources: {{cpu: 1, memory: 32Mi}}  # cpu is a limit too
command: [sh, -c, "echo burning; while :; do :; done"]
"""


def test_the_agent_in_its_container_runs_the_pool(pool: Pool) -> None:
    client = pool.client

    # Both agents register from their containers, with the test hosts' addresses (host
    # networking) and the OS version of the mounted os-release.
    def registered() -> dict[str, tuple[str, str]] | None:
        hosts = {h.host_id: (h.address, h.facts.get("os_version", "")) for h in client.hosts()}
        connected = all(h.connected for h in client.hosts())
        return hosts if len(hosts) == 2 and connected else None

    hosts = wait_until(registered, 90, what="both agents, from their containers")
    assert hosts == {h.name: (h.address, "1") for h in pool.hosts}
    assert all(pool.agent(h).status == "running" for h in pool.hosts)

    # Placement on both hosts, then a rollout gated by the HTTP health check.
    client.apply(load_documents(_web(f"{WEB}:v1"), "web.yaml"))
    wait_until(lambda: len(client.endpoints("web")) == 4, 120, what="4 available v1 replicas")
    assert {h.name: len(fleet_containers(h.client(), "web")) for h in pool.hosts} == {
        "h1": 2,
        "h2": 2,
    }
    client.apply(load_documents(_web(f"{WEB}:v2"), "web.yaml"))
    status = pool.server.cli("rollout", "status", "web", "--timeout", "180s")
    assert status.returncode == 0, status.stdout + status.stderr

    def settled() -> bool:  # the last v1 container leaves after the rollout completes
        replicas = client.containers("web")
        return len(replicas) == 4 and {(r.revision, r.status.health) for r in replicas} == {
            (2, "healthy")
        }

    wait_until(settled, 30, what="the 4 v2 replicas alone, healthy")
    for endpoint in client.endpoints("web"):
        assert http_get(endpoint.address, endpoint.host_port) == "web v2\n"

    # Live usage: a busy container shows in its host's usage, read from the cgroups.
    client.apply(load_documents(BURN.format(image=f"{WEB}:v1"), "burn.yaml"))

    def burning() -> tuple[str, float] | None:
        [replica] = client.containers("burn") or [None]
        if replica is None or replica.status.cpu < 0.3:
            return None
        usage = next(h.usage for h in client.hosts() if h.host_id == replica.host)
        return (replica.host, usage.cpu) if usage.cpu >= 0.3 and usage.memory_bytes else None

    busy_host, _ = wait_until(burning, 60, what="the busy container's cpu in its host's usage")
    for host in pool.hosts:
        assert "stats API" not in pool.agent_log(host), "usage did not come from the cgroups"

    # Logs and exec of replicas, relayed by the containerised agents.
    logs = pool.server.cli("logs", "burn")
    assert logs.returncode == 0 and "burning" in logs.stdout, logs.stdout + logs.stderr
    ran = _exec(pool.server, "web/0", "cat", "/www/index.html")
    assert (ran.returncode, ran.stdout) == (0, "web v2\n"), ran.stderr
    assert pool.server.cli("delete", "app", "burn").returncode == 0

    # An upgrade walk: each host's command runs on the host (it writes the machine's
    # files), and the agent's container restarts while it runs. Once the command's exit
    # is reported, the test restarts the agent again as the upgrade's reboot would, and
    # the agent comes back with the new OS version.
    command = (
        f"sleep 3; printf 'NAME=\"Fleet OS\"\\nVERSION_ID=2\\n' > {pool.tmp}/os-release-"
        f'$FLEET_HOST_ID; echo "upgraded $FLEET_HOST_ID" > {pool.tmp}/upgraded-$FLEET_HOST_ID'
    )
    walk = pool.server.cli("upgrade-hosts", "--command", command, "--no-wait")
    assert walk.returncode == 0, walk.stdout + walk.stderr
    restarted_mid: set[str] = set()  # while its command sleeps
    rebooted: set[str] = set()

    def exits(host: str) -> list[str]:
        return [e.message for e in client.events(host=host) if e.kind == "host-command-exited"]

    def walked() -> bool:
        for host in pool.hosts:
            running = host.client().containers.list(filters={"label": COMMAND_LABEL})
            if host.name not in restarted_mid and running:
                pool.agent(host).restart(timeout=10)
                restarted_mid.add(host.name)
            elif host.name in restarted_mid - rebooted and exits(host.name):
                pool.agent(host).restart(timeout=10)
                rebooted.add(host.name)
        return client.upgrade().state == "done" and rebooted == {"h1", "h2"}

    wait_until(walked, 300, interval=0.3, what="the upgrade walk to finish")
    assert restarted_mid == rebooted == {"h1", "h2"}
    for host in pool.hosts:
        assert (pool.tmp / f"upgraded-{host.name}").read_text() == f"upgraded {host.name}\n"
        assert exits(host.name) == [f"exit code 0: {command}"]
        # Reported, then removed; its output kept in the agent's state dir.
        assert not host.client().containers.list(all=True, filters={"label": COMMAND_LABEL})
        logs_kept = list((pool.tmp / f"var-{host.name}/agent").glob("command-*.log"))
        assert len(logs_kept) == 1

    def final() -> dict[str, tuple[str, str | None]]:
        return {h.host_id: (h.state, h.facts.get("os_version")) for h in client.hosts()}

    # The walk is done once the last command's exit is reported; that host's agent was
    # restarted after it (the "reboot") and may still be registering again.
    want = {"h1": ("ready", "2"), "h2": ("ready", "2")}
    wait_until(lambda: final() == want, 30, what="both hosts ready on version 2")
    assert busy_host in final()


def _edge_web(image: str, replicas: int) -> str:
    return f"""
name: web
image: {image}
replicas: {replicas}
placement: spread
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
health: {{http: "http://:8080/index.html", interval: 500ms, timeout: 1s, retries: 2}}
update: {{max_surge: 1, max_unavailable: 0, min_ready: 1s}}
shutdown_delay: 2s
ingress: {{port: 8080, host: web.test}}
"""


def _ready_servers(state_dir: Path) -> int:
    """How many servers of web's backend the edge's HAProxy has ready, from its admin
    socket (in the agent's state dir, which the test reaches from the machine)."""
    # The agent in its container put it in the edge dir: its path there is short.
    rows = edge_server_rows(state_dir / "agent" / "edge" / "admin.sock")
    return sum(1 for r in rows if r.backend.startswith("http_web_") and r.state == "ready")


def test_the_agent_in_its_container_runs_an_edge_proxy_that_outlives_it(pool: Pool) -> None:
    """An edge whose agent runs from the image: HAProxy runs in a sibling container from
    the same image (host network, the agent's state dir shared), serves the app, keeps
    serving while the agent's container restarts (not one request lost), and the
    restarted agent adopts it and changes its servers through the runtime API."""
    client = pool.client
    edge = pool.hosts[0]
    wait_until(
        lambda: len(client.hosts()) == 2 and all(h.connected for h in client.hosts()),
        90,
        what="both agents",
    )
    # The operator makes h1 an edge: its agent again, with --ingress.
    port = 18080
    files = AgentFiles.make(pool.tmp, edge.name, pool.pki, pool.listen)
    pool.agent(edge).remove(force=True)
    agent_container(edge, pool.image(edge), files, ("--ingress", f"{edge.address}:{port}"))
    wait_until(
        lambda: any(h.host_id == edge.name and h.ingress and h.connected for h in client.hosts()),
        90,
        what="h1 to register as an edge",
    )
    client.apply(load_documents(_edge_web(f"{WEB}:v1", 2), "web.yaml"))
    address = (edge.address, port)

    def serves() -> bool:
        try:
            return get(address, "web.test") == (200, "web v1")
        except OSError:
            return False

    wait_until(serves, 120, what="the edge to serve web")
    proxy = edge.client().containers.get(EDGE_CONTAINER)
    pidfile = Paths(files.state / "agent" / "edge").pidfile
    pid = int(pidfile.read_text().split()[0])
    assert proxy.status == "running" and proxy.labels[LABEL_EDGE_PROXY] == edge.name
    assert proxy.attrs["State"]["Pid"] == pid, "the pidfile names the container's HAProxy"
    assert proxy.attrs["HostConfig"]["NetworkMode"] == "host"

    with Hammer(address, "web.test") as hammer:
        hammer.more(50)
        with hammer.event("agent restart") as restart:
            pool.agent(edge).restart(timeout=10)
            wait_until(
                lambda: "adopted running haproxy" in pool.agent_log(edge),
                60,
                what="the restarted agent to adopt HAProxy",
            )
            # It still changes HAProxy: 2 more replicas join web's backend.
            client.apply(load_documents(_edge_web(f"{WEB}:v1", 4), "web.yaml"))
            wait_until(
                lambda: _ready_servers(files.state) == 4, 120, what="4 ready servers on the edge"
            )
            hammer.more(50)
    results = restart.results(hammer)
    failed = [r.text for r in results if not r.ok]
    assert results and not failed, f"{len(failed)} of {len(results)} failed: {failed[:5]}"
    again = edge.client().containers.get(EDGE_CONTAINER)
    assert (again.id, int(pidfile.read_text().split()[0])) == (proxy.id, pid)
