"""The soak's pool, all real: a 3-member etcd, 2 control planes, 4 Docker hosts in
network namespaces with an agent each, a registry on the hosts' bridge; and the
primitive faults done to them (each one the way the e2e tests do it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fleet.client import FleetClient
from fleet.errors import FleetError
from fleet.store.keys import KeyLayout
from fleet.testing.certs import TestPKI
from fleet.testing.dockerhosts import DockerHost, HostPool, cleanup_stale
from fleet.testing.etcd import EtcdCluster
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from fleet.testing.procs import ProcessError, require_binary, run, wait_until
from fleet.testing.registry import Registry, push_image
from fleet.testing.soak.observe import EtcdReader

__all__ = ["SERVERS", "SoakCluster"]

SERVERS = ("cp1", "cp2")
IMAGE_TAGS = ("v1", "v2", "v3")
# Short liveness timings, so partitions long enough to move replicas happen often.
DOWN_AFTER, RESCHEDULE_AFTER = 4, 6


class SoakCluster:
    """Starts and stops the pool; every fault primitive is a method here."""

    def __init__(self, work_dir: Path, *, hosts: int = 4, prefix: str = "/soak/") -> None:
        self.work_dir = work_dir
        self.prefix = prefix
        self.layout = KeyLayout(prefix)
        self.pool = HostPool(hosts)
        self.registry: Registry | None = None
        self.etcd = EtcdCluster(3)
        self.pki = TestPKI(work_dir / "pki")
        self.servers: dict[str, FleetServerProcess] = {}
        self.agents: dict[str, FleetAgentProcess] = {}
        self.images: dict[str, str] = {}  # tag -> registry reference
        self.netem_on: set[str] = set()
        self._restarts = 0

    # ------------------------------------------------------------------ lifecycle

    def start_infra(self) -> None:
        """Hosts, registry (with the web images pushed), etcd."""
        cleanup_stale()
        self.pool.start()
        self.registry = Registry(self.pool.gateway).start()
        h1 = self.pool.hosts[0]
        for tag in IMAGE_TAGS:
            ensure_image(h1.client(), "soak/web", tag, f"soak {tag}\n")
            self.images[tag] = push_image(
                h1.client(), f"soak/web:{tag}", self.registry.address, "soak/web", tag
            )
        self.etcd.start()

    @property
    def broken_image(self) -> str:
        """An image the registry does not hold: every pull of it fails."""
        assert self.registry is not None
        return f"{self.registry.address}/soak/web:missing"

    @property
    def etcd_reader(self) -> EtcdReader:
        return EtcdReader([m.url for m in self.etcd.members])

    def server_process(self, name: str, prefix: str, log_dir: Path) -> FleetServerProcess:
        timing = [f"--host-down-after={DOWN_AFTER}s", f"--reschedule-after={RESCHEDULE_AFTER}s"]
        return FleetServerProcess(
            ",".join(self.etcd.endpoints),
            prefix,
            log_dir,
            self.pki,
            log_name=f"server-{name}.log",
            extra_args=["--server-id", name, *timing],
        )

    def agent_process(
        self, host: DockerHost, servers: list[str], log_dir: Path
    ) -> FleetAgentProcess:
        extra = ["--advertise-address", host.address, "--memory", "4Gi", "--cpus", "2"]
        return FleetAgentProcess(
            servers, host.name, host.docker_url, log_dir, self.pki, None, extra
        )

    def start_fleet(self) -> None:
        """Both control planes and every agent, against the soak's prefix."""
        log_dir = self.work_dir / "fleet"
        log_dir.mkdir(parents=True, exist_ok=True)
        for name in SERVERS:
            self.servers[name] = self.server_process(name, self.prefix, log_dir).start()
        addresses = [s.address for s in self.servers.values()]
        for host in self.pool.hosts:
            self.agents[host.name] = self.agent_process(host, addresses, log_dir).start()
        with self.client() as client:
            wait_until(
                lambda: len([h for h in client.hosts() if h.connected]) == len(self.pool.hosts),
                60,
                what="every agent to connect",
                ignore=(FleetError,),
            )

    def client(self, timeout: float = 15.0) -> FleetClient:
        """A client of both control planes (it fails over between them)."""
        servers = list(self.servers.values())
        return FleetClient([s.address for s in servers], servers[0].transport(), timeout=timeout)

    def close(self) -> list[str]:
        """Tear everything down; return what failed (teardown goes on regardless)."""
        errors: list[str] = []

        def attempt(what: str, step: Callable[[], object]) -> None:
            try:
                step()
            except Exception as error:
                errors.append(f"{what}: {error!r}")

        for host in self.pool.hosts:
            attempt(f"netem {host.name}", lambda h=host: self.netem(h, False))  # type: ignore[misc]
            attempt(f"network {host.name}", host.restore_network)
        for agent in self.agents.values():
            attempt(f"agent {agent.host_id}", agent.stop)
        for name, server in self.servers.items():
            attempt(f"server {name}", server.stop)
        attempt("etcd", self.etcd.close)
        if self.registry is not None:
            attempt("registry", self.registry.stop)
        attempt("hosts", self.pool.close)
        return errors

    def pids(self) -> dict[str, int]:
        """The processes whose memory the checker bounds, by name."""
        found: dict[str, int] = {}
        for name, server in self.servers.items():
            if server.process.running and server.process.pid is not None:
                found[f"server-{name}"] = server.process.pid
        for name, agent in self.agents.items():
            if agent.process.running and agent.process.pid is not None:
                found[f"agent-{name}"] = agent.process.pid
        for i, member in enumerate(self.etcd.members):
            if member.pid is not None:
                found[f"etcd-m{i}"] = member.pid
        return found

    # ------------------------------------------------------------------ faults

    def leader(self) -> str:
        """The leading control plane's id, read straight from etcd ("" if none)."""
        with contextlib.suppress(ConnectionError, ValueError, KeyError):
            _, kvs = self.etcd_reader.prefix(self.layout.leader())
            for key, value in kvs:
                if key == self.layout.leader():
                    return str(json.loads(value).get("candidate", ""))
        return ""

    def stop_server(self, name: str, *, kill: bool) -> None:
        """kill -9, or SIGTERM (with the usual SIGKILL after 10 s if it hangs)."""
        server = self.servers[name]
        if kill:
            server.kill()
        else:
            server.stop()

    def start_server(self, name: str) -> None:
        """The same control plane again, on its address (a new process)."""
        self._restarts += 1
        again = self.servers[name].again(f"server-{name}.log")
        self.servers[name] = again.start(timeout=60)

    def kill_agent(self, host: str) -> None:
        self.agents[host].kill()

    def start_agent(self, host: str) -> None:
        self.agents[host].start()

    def restart_dockerd(self, host: str) -> None:
        """SIGTERM dockerd (its containers stop with it), start it again."""
        h = self.pool.host(host)
        h.stop_daemon()
        h.close_client()
        h.start_daemon()

    def cut(self, host: str, cut: bool) -> None:
        h = self.pool.host(host)
        if cut:
            h.cut_network()
        else:
            h.restore_network()

    def netem_available(self) -> str:
        """ "" if ``tc netem`` works here, else why not (the kernel may lack sch_netem):
        tried on the loopback of the first host's namespace, where it harms nothing."""
        tc = require_binary("tc", "/usr/sbin/tc", "/sbin/tc")
        netns = self.pool.hosts[0].netns
        try:
            run([tc, "-n", netns, "qdisc", "add", "dev", "lo", "root", "netem", "loss", "0%"])
        except ProcessError as error:
            return str(error)
        run([tc, "-n", netns, "qdisc", "del", "dev", "lo", "root"], check=False)
        return ""

    def netem(self, host: DockerHost, on: bool, loss: str = "30%") -> None:
        """Lose ``loss`` of the packets both ways on the host's link (tc netem)."""
        tc = require_binary("tc", "/usr/sbin/tc", "/sbin/tc")
        for args in (["dev", host.veth], ["-n", host.netns, "dev", "eth0"]):
            prefix, rest = (args[:2], args[2:]) if args[0] == "-n" else ([], args)
            if on:
                run([tc, *prefix, "qdisc", "replace", *rest, "root", "netem", "loss", loss])
            else:
                run([tc, *prefix, "qdisc", "del", *rest, "root"], check=False)
        (self.netem_on.add if on else self.netem_on.discard)(host.name)

    def power(self, host: str, on: bool) -> None:
        """Off: the agent and every process of the host SIGKILLed at once. On: dockerd
        boots (its containers stay stopped), then the agent starts."""
        h = self.pool.host(host)
        if not on:
            self.agents[host].kill()
            h.power_off()
            return
        h.start_daemon()
        self.agents[host].start()

    def etcd_member(self, index: int, up: bool) -> None:
        member = self.etcd.members[index]
        if up:
            member.start()
        else:
            member.stop()

    def freeze_etcd(self, index: int, frozen: bool) -> None:
        """SIGSTOP an etcd member (it stalls, as on a disk that stops answering), or
        SIGCONT it."""
        pid = self.etcd.members[index].pid
        if pid is not None:
            os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)

    # ------------------------------------------------------------------ the earlier pool

    def seed_earlier_pool(self, specs: list[str], expect: int) -> dict[str, set[str]]:
        """Run an earlier pool (its own prefix) on these hosts until ``expect``
        containers run, stop it, and stop its containers: the leftovers a fresh pool
        must leave alone. Returns host -> ids of those stopped containers."""
        from fleet.spec import load_documents

        log_dir = self.work_dir / "earlier-pool"
        log_dir.mkdir(parents=True, exist_ok=True)
        server = self.server_process("old", "/soak-old/", log_dir).start()
        agents = [self.agent_process(h, [server.address], log_dir).start() for h in self.pool.hosts]
        try:
            with server.client(timeout=15) as client:
                wait_until(
                    lambda: len([h for h in client.hosts() if h.connected]) == len(agents),
                    60,
                    what="the earlier pool's agents",
                    ignore=(FleetError,),
                )
                client.apply(load_documents("\n---\n".join(specs), "earlier.yaml"))

                def running() -> int:
                    return sum(
                        len(h.client().containers.list(filters={"label": "fleet.app"}))
                        for h in self.pool.hosts
                    )

                wait_until(lambda: running() >= expect, 120, what="the earlier pool's containers")
        finally:
            for agent in agents:
                agent.stop()
            server.stop()
        left: dict[str, set[str]] = {}

        def stop_all(host: DockerHost) -> None:
            found = host.client().containers.list(filters={"label": "fleet.app"})
            for container in found:
                container.stop(timeout=2)
            left[host.name] = {c.id for c in found}

        with ThreadPoolExecutor(max_workers=len(self.pool.hosts)) as pool:
            list(pool.map(stop_all, self.pool.hosts))
        return left
