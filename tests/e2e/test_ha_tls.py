"""The three-machine HA pool of deploy/ha, TLS everywhere, on namespaced hosts.

Each of three hosts (a network namespace with its own dockerd) runs what deploy/ha puts
on a machine: an etcd member (from the `/etc/default/etcd` the deploy makes), a `fleet
server` (from its `server.toml`) and a `fleet agent` (from its `agent.toml`, listing
every control plane), each in the host's namespace on the host's address, with the
certificates `deploy/ha/make-bundles` issued with fleet's own tooling. Then the leader
control plane is killed with SIGKILL and the etcd member the others use is stopped, and
the pool must go on: a new leader, a scale-up placed and running (read through the
Docker SDK), `fleet get hosts` through the CLI.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleet.testing import HostPool, ManagedProcess, wait_until
from fleet.testing.dockerhosts import DockerHost
from fleet.testing.procs import require_binary
from tests.conftest import PoolFactory, ensure_image
from tests.helpers import b64, fleet_containers, prefix_end

REPO = Path(__file__).resolve().parents[2]
MAKE_BUNDLES = REPO / "deploy" / "ha" / "make-bundles"
FLEET = [sys.executable, "-m", "fleet"]


def in_netns(host: DockerHost, *command: str) -> list[str]:
    """``command`` run in ``host``'s network namespace, as on that machine."""
    nsenter = require_binary("nsenter", "/usr/bin/nsenter")
    return [nsenter, f"--net=/var/run/netns/{host.netns}", "--", *command]


def on_machine(text: str, root: Path) -> str:
    """A path of the deploy's files as it is on this machine: under ``root``."""
    for shipped in ("/etc/", "/var/lib/"):
        text = text.replace(shipped, f"{root}{shipped}")
    return text


def config_file(path: Path, root: Path) -> Path:
    """A daemon's config file with its paths on this machine (under ``root``), for
    ``--config``: the keys as shipped, read by fleet's own config loader."""
    local = root / f"{path.stem}.local.toml"
    local.write_text(on_machine(path.read_text(), root))
    return local


def env_file(path: Path, root: Path) -> dict[str, str]:
    """The ``ETCD_*`` variables of an /etc/default/etcd file."""
    found = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name] = on_machine(value.strip('"'), root)
    return found


@dataclass
class Machine:
    host: DockerHost
    root: Path  # this machine's files, as /etc and /var/lib are laid out on it
    etcd: ManagedProcess | None = None
    server: ManagedProcess | None = None
    agent: ManagedProcess | None = None

    @property
    def name(self) -> str:
        return self.host.name

    def start_etcd(self) -> None:
        variables = env_file(self.root / "etc/default/etcd", self.root)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")} | variables
        args = in_netns(self.host, require_binary("etcd", "/usr/bin/etcd"))
        self.etcd = ManagedProcess(args, self.root / "etcd.log", name=f"etcd {self.name}", env=env)
        self.etcd.start()

    def start_server(self) -> None:
        config = config_file(self.root / "etc/fleet/server.toml", self.root)
        args = in_netns(self.host, *FLEET, "server", "--config", str(config))
        self.server = ManagedProcess(args, self.root / "server.log", name=f"server {self.name}")
        self.server.start()

    def start_agent(self) -> None:
        config = config_file(self.root / "etc/fleet/agent.toml", self.root)
        args = in_netns(self.host, *FLEET, "agent", "--config", str(config))
        args += ["--docker", self.host.docker_url]
        self.agent = ManagedProcess(args, self.root / "agent.log", name=f"agent {self.name}")
        self.agent.start()

    def stop(self) -> None:
        for process in (self.agent, self.server, self.etcd):
            if process is not None:
                process.stop()


@dataclass
class Pool:
    pool: HostPool
    out: Path
    machines: list[Machine] = field(default_factory=list)

    def etcd_context(self) -> ssl.SSLContext:
        """A control plane's way into etcd (its bundle's etcd client certificate)."""
        tls = self.machines[0].root / "etc/fleet/etcd"
        context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        context.load_cert_chain(str(tls / "client.crt"), str(tls / "client.key"))
        return context

    def etcd_get(self, machine: Machine, key: str) -> dict[str, Any] | None:
        """``key``'s JSON value, read from ``machine``'s etcd member over TLS."""
        url = f"https://{machine.host.address}:2379/v3/kv/range"
        body = {"key": b64(key.encode()), "range_end": b64(prefix_end(key.encode()))}
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=3, context=self.etcd_context()) as answer:
            kvs = json.loads(answer.read()).get("kvs") or []
        for kv in kvs:
            if kv["key"] == b64(key.encode()):
                value: dict[str, Any] = json.loads(base64.b64decode(kv["value"]))
                return value
        return None

    def etcd_healthy(self, machine: Machine) -> bool:
        url = f"https://{machine.host.address}:2379/health"
        try:
            with urllib.request.urlopen(url, timeout=2, context=self.etcd_context()) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def leader(self, machine: Machine) -> str:
        found = self.etcd_get(machine, "/fleet/leader")
        return str(found["candidate"]) if found else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The fleet CLI from outside the pool, with the admin bundle, to every server."""
        admin = self.out / "admin"
        servers = ",".join(f"{m.host.address}:7400" for m in self.machines)
        command = [*FLEET, *args, "--server", servers, "--tls-ca", str(admin / "ca.crt")]
        command += ["--tls-cert", str(admin / "client-admin.crt")]
        command += ["--tls-key", str(admin / "client-admin.key")]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    def running(self, app: str) -> int:
        return sum(
            1
            for m in self.machines
            for c in fleet_containers(m.host.client(), app)
            if c.status == "running"
        )


@pytest.fixture
def ha_pool(docker_hosts: PoolFactory, tmp_path: Path) -> Iterator[Pool]:
    hosts = docker_hosts(3)
    for host in hosts.hosts:
        host.remove_all_containers(label="fleet.app")
        ensure_image(host)
    # The files, as deploy/ha/README.md makes them: one pool.env, one script.
    pool_env = tmp_path / "pool.env"
    planes = " ".join(f"{h.name}={h.address}" for h in hosts.hosts)
    pool_env.write_text(
        f'CONTROL_PLANES="{planes}"\nAGENTS="{" ".join(h.name for h in hosts.hosts)}"\n'
    )
    out = tmp_path / "out"
    subprocess.run(
        [str(MAKE_BUNDLES), str(pool_env), str(out)],
        env={**os.environ, "FLEET": " ".join(FLEET)},
        check=True,
        capture_output=True,
        timeout=120,
    )
    pool = Pool(hosts, out, [Machine(h, out / h.name) for h in hosts.hosts])
    try:
        for machine in pool.machines:
            machine.start_etcd()
        for machine in pool.machines:
            wait_until(lambda m=machine: pool.etcd_healthy(m), 30, what=f"etcd on {machine.name}")
        for machine in pool.machines:
            machine.start_server()
        for machine in pool.machines:
            machine.start_agent()
        yield pool
    finally:
        for machine in pool.machines:
            machine.stop()
            for process in (machine.server, machine.agent):
                if process is not None:
                    print(process.log_tail(30))
        for host in hosts.hosts:
            host.remove_all_containers(label="fleet.app")


def hosts_ready(pool: Pool) -> list[dict[str, Any]]:
    done = pool.cli("get", "hosts", "-o", "json")
    if done.returncode != 0:
        return []
    hosts: list[dict[str, Any]] = json.loads(done.stdout)
    ready = [h for h in hosts if h.get("connected") and h.get("state") == "ready"]
    return ready if len(ready) == 3 else []


WEB = """
name: web
image: fleet-test/web:v1
replicas: {replicas}
placement: spread
resources: {{cpu: 0.1, memory: 32Mi}}
"""


def test_the_pool_survives_its_leader_and_an_etcd_member(ha_pool: Pool, tmp_path: Path) -> None:
    began = time.monotonic()
    pool = ha_pool
    wait_until(lambda: hosts_ready(pool), 60, what="3 hosts ready through the CLI")
    app = tmp_path / "web.yaml"
    app.write_text(WEB.format(replicas=3))
    done = pool.cli("apply", "-f", str(app))
    assert done.returncode == 0, done.stderr
    wait_until(lambda: pool.running("web") == 3, 60, what="3 replicas running")

    first = pool.machines[0]
    leader_name = wait_until(lambda: pool.leader(first), 10, what="a leader")
    leader = next(m for m in pool.machines if m.name == leader_name)
    # Every server uses the first etcd member it was given: stop that one, so the
    # survivors must move to another member, and kill -9 the leading control plane.
    assert leader.server is not None and first.etcd is not None
    leader.server.kill()
    killed = time.monotonic()
    first.etcd.stop()
    survivor = next(m for m in pool.machines if m is not first)
    new_leader = wait_until(
        lambda: (name := pool.leader(survivor)) and name != leader_name and name,
        30,
        what="a new leader",
        ignore=(OSError,),
    )
    took = time.monotonic() - killed
    print(f"kill -9 of {leader_name} -> {new_leader} leads: {took:.2f}s")

    app.write_text(WEB.format(replicas=5))
    done = wait_until(
        lambda: (d := pool.cli("apply", "-f", str(app))).returncode == 0 and d,
        30,
        what="the scale-up to be accepted",
    )
    wait_until(lambda: pool.running("web") == 5, 60, what="5 replicas running")
    hosts = wait_until(lambda: hosts_ready(pool), 60, what="3 hosts ready after the faults")
    assert sorted(h["host_id"] for h in hosts) == sorted(m.name for m in pool.machines)
    print(f"whole scenario: {time.monotonic() - began:.1f}s")
