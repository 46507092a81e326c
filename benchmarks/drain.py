"""Drain benchmark (#24): how long emptying one host takes, and how many replicas answer
meanwhile, in fleet and in Docker Swarm mode on the same three hosts in one run.

A real etcd, ``fleet server`` and three ``fleet agent`` processes (mutual TLS) on three
docker hosts in network namespaces (``fleet.testing``). The app ``web``: 12 replicas of
busybox httpd, ``placement: spread`` (4 per host), an http health check every 1 s,
everything else fleet's defaults (make-before-break drains, ``min_available`` = all 12).

1. fleet: ``fleet drain h1 --wait`` of the host holding 4 replicas, timed from the
   command to its return (the host is then empty: nothing of fleet's runs there).
2. Swarm (unless ``--no-swarm``): fleet is stopped and its containers removed, the same
   dockerds form a swarm (h1 the manager), and a service of the same image (by id:
   ``same_image_everywhere``), 12
   replicas, spread by Swarm over the 3 nodes, with the same check as a Docker
   HEALTHCHECK (``wget`` every 1 s), its port published in host mode (Swarm's routing
   mesh does not work here: no IPVS). ``docker node update --availability drain`` of
   h1 (4 tasks), timed until no task container runs on h1 and 12
   task containers run healthy on the others.

Availability, for both, the same way and throughout (from before each drain to after
it): every ~100 ms a thread lists the app's containers on every host through Docker
and sends each a GET / on its published port at its host's address (1 s timeout); a
sample counts the containers that answered 200. Docker's health states are recorded
beside it for Swarm. Also timed for both: from the drain's start until h1 runs none of
the app's containers and 12 answer elsewhere (``empty_and_12_answering``).

Figures go to benchmarks/results/drain-<date>.json (``--tag`` adds to the name).

    PYTHONPATH=. .venv/bin/python benchmarks/drain.py [--no-swarm] [--tag base]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import describe, ended, machine, quietly, stop_on_sigterm

from fleet.client import FleetClient
from fleet.errors import FleetError
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import HTTP_PORT, ensure_image

APP = "web"
IMAGE = "fleet-bench/drain"
REPLICAS = 12
HOSTS = 3
DRAINED = "h1"
FLEET_LABEL = "fleet.app"
SWARM_LABEL = "com.docker.swarm.service.name"
SWARM_SERVICE = "web-swarm"
HEALTH_URL = f"http://127.0.0.1:{HTTP_PORT}/index.html"

SPEC = f"""\
name: {APP}
image: {IMAGE}:v1
replicas: {REPLICAS}
placement: spread
ports: ["{HTTP_PORT}"]
resources: {{cpu: 0.05, memory: 16Mi}}
health:
  http: http://:{HTTP_PORT}/index.html
  interval: 1s
  timeout: 1s
  retries: 2
"""


# ---------------------------------------------------------------------- availability


@dataclass
class Watch:
    """Every ~100 ms, in a thread: the containers labelled ``label`` (``value``) on every
    host, and how many of them answer GET / on their published port at the host's
    address; ``samples`` holds (time, running per host, answering, healthy)."""

    hosts: list[tuple[str, str, Any]]  # name, address, docker client
    label: str
    value: str
    samples: list[tuple[float, dict[str, int], int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Watch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            running: dict[str, int] = {}
            answering = healthy = 0
            for name, address, client in self.hosts:
                try:
                    found = client.api.containers(filters={"label": f"{self.label}={self.value}"})
                except Exception:
                    found = []
                running[name] = len(found)
                healthy += sum(1 for c in found if "(healthy)" in c.get("Status", ""))
                for c in found:
                    ports = [p["PublicPort"] for p in c["Ports"] if p.get("PublicPort")]
                    if ports and answers(address, ports[0]):
                        answering += 1
            self.samples.append((time.time(), running, answering, healthy))
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - began)))

    def done_at(self, started: float, host: str, replicas: int) -> float | None:
        """The first sample after ``started`` with nothing on ``host`` and ``replicas``
        answering."""
        for at, running, answering, _ in self.samples:
            if at >= started and running.get(host, 0) == 0 and answering >= replicas:
                return at
        return None

    def summary(self, started: float, ended: float) -> dict[str, Any]:
        window = [s for s in self.samples if started <= s[0] <= ended + 1.0]
        lowest = min(window, key=lambda s: s[2]) if window else None
        return {
            "samples": len(window),
            "min_answering": lowest[2] if lowest else None,
            "min_answering_at_seconds": round(lowest[0] - started, 2) if lowest else None,
            "max_containers": max((sum(s[1].values()) for s in window), default=0),
            "seconds_below_all": round(
                sum(b[0] - a[0] for a, b in itertools.pairwise(window) if a[2] < REPLICAS),
                2,
            ),
            # Each change: seconds since the start, running per host, answering, healthy.
            "timeline": [
                (round(at - started, 2), running, answering, healthy)
                for i, (at, running, answering, healthy) in enumerate(window)
                if i == 0 or window[i - 1][1:] != (running, answering, healthy)
            ],
        }


def answers(address: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


# ---------------------------------------------------------------------- fleet


def run_fleet(pool: HostPool, etcd: EtcdServer, work: Path) -> dict[str, Any]:
    pki = TestPKI(work / "pki")
    server = FleetServerProcess(etcd.endpoint, "/bench-drain/", work, pki).start()
    agents: dict[str, FleetAgentProcess] = {}
    client: FleetClient | None = None
    try:
        for h in pool.hosts:
            args = ["--advertise-address", h.address]
            agents[h.name] = FleetAgentProcess(
                [server.address], h.name, h.docker_url, work, pki, None, args
            ).start()
        client = server.client()
        fleet = client
        settle(lambda: sum(1 for h in fleet.hosts() if h.connected) == HOSTS, 60, "3 agents")
        fleet.apply(load_documents(SPEC, f"{APP}.yaml"))
        settle(lambda: len(fleet.endpoints(APP)) == REPLICAS, 180, "12 endpoints")
        placed = {h: 0 for h in ("h1", "h2", "h3")}
        for e in fleet.endpoints(APP):
            placed[e.host] += 1
        print(f"fleet: web ready, replicas per host {placed}")
        watch = Watch(docker_hosts(pool), FLEET_LABEL, APP)
        with watch:
            settle(lambda: steady(watch), 60, "12 containers answering")
            started = time.time()
            done = server.cli("drain", DRAINED, "--wait", "--timeout", "5m", timeout=400)
            ended = time.time()
            time.sleep(2.0)
        if done.returncode != 0:
            raise RuntimeError(f"fleet drain: {done.stdout}{done.stderr}")
        result: dict[str, Any] = {
            "placed": placed,
            "command": f"fleet drain {DRAINED} --wait",
            "drain_seconds": round(ended - started, 2),
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds"),
        }
        at = watch.done_at(started, DRAINED, REPLICAS)
        result["empty_and_12_answering_seconds"] = round(at - started, 2) if at else None
        result["availability"] = watch.summary(started, ended)
        return result
    finally:
        if client is not None:
            quietly("client", client.close)
        for name, agent in agents.items():
            quietly(f"agent {name}", agent.stop)
        quietly("server", server.stop)
        for h in pool.hosts:
            quietly(f"{h.name} containers", lambda h=h: h.remove_all_containers(FLEET_LABEL))


# ---------------------------------------------------------------------- swarm


def run_swarm(pool: HostPool, image_id: str) -> dict[str, Any]:
    from docker.types import EndpointSpec, Healthcheck, ServiceMode

    manager, *workers = pool.hosts
    client = manager.client()
    result: dict[str, Any] = {}
    try:
        client.swarm.init(advertise_addr=manager.address, listen_addr=f"{manager.address}:2377")
        token = client.swarm.attrs["JoinTokens"]["Worker"]
        for h in workers:
            h.client().swarm.join(
                remote_addrs=[f"{manager.address}:2377"],
                join_token=token,
                advertise_addr=h.address,
                listen_addr=f"{h.address}:2377",
            )
        settle(lambda: len(client.nodes.list()) == HOSTS, 60, "3 swarm nodes")
        second = 1_000_000_000
        service = client.services.create(
            image_id,  # by id: present on every node, so no worker tries to pull it
            name=SWARM_SERVICE,
            mode=ServiceMode("replicated", replicas=REPLICAS),
            # Host mode: each task's port on its own node (plain iptables, no IPVS).
            endpoint_spec=EndpointSpec(
                ports=[{"Protocol": "tcp", "TargetPort": HTTP_PORT, "PublishMode": "host"}]
            ),
            healthcheck=Healthcheck(
                test=["CMD", "wget", "-q", "-O", "/dev/null", HEALTH_URL],
                interval=second,
                timeout=second,
                retries=2,
            ),
        )
        hosts = docker_hosts(pool)

        watch = Watch(hosts, SWARM_LABEL, SWARM_SERVICE)
        with watch:
            settle(lambda: steady(watch, healthy=True), 240, "12 swarm tasks answering, healthy")
            placed = dict(watch.samples[-1][1])
            result["placed"] = placed
            print(f"swarm: web-swarm ready, tasks per host {placed}")
            node = next(
                n
                for n in client.nodes.list()
                if n.attrs["Status"]["Addr"] == pool.host(DRAINED).address
            )
            command = ["docker", "-H", manager.docker_url, "node", "update"]
            command += ["--availability", "drain", node.id]
            started = time.time()
            subprocess.run(command, check=True, capture_output=True, timeout=60)

            def drained() -> bool:
                last = watch.samples[-1]
                return last[0] > started and last[1].get(DRAINED, 0) == 0 and last[3] >= REPLICAS

            settle(drained, 300, "swarm's drain: nothing on h1, 12 healthy elsewhere")
            ended = time.time()
            time.sleep(2.0)
        service.remove()
        result["command"] = f"docker node update --availability drain {DRAINED}"
        result["drain_seconds"] = round(ended - started, 2)
        at = watch.done_at(started, DRAINED, REPLICAS)
        result["empty_and_12_answering_seconds"] = round(at - started, 2) if at else None
        result["availability"] = watch.summary(started, ended)
    except Exception as error:
        result["error"] = repr(error)
    finally:
        for h in pool.hosts:
            with contextlib.suppress(Exception):
                h.client().swarm.leave(force=True)
        for h in pool.hosts:
            quietly(f"{h.name} swarm containers", lambda h=h: h.remove_all_containers(SWARM_LABEL))
    return result


# ---------------------------------------------------------------------- helpers


def same_image_everywhere(pool: HostPool) -> str:
    """The app's image on every host with one id (built on h1, loaded on the others).

    Swarm is given the image by id: a Swarm worker pulls a task's image by tag before
    it starts it, and with no registry reachable here every such pull must time out
    first (seconds per task); by id (as by digest, which is how ``docker service
    create`` pins an image once it has resolved it from a registry) it uses the local
    image at once, as a Swarm with a reachable registry and the image cached would."""
    first = pool.hosts[0].client()
    ensure_image(first, IMAGE, "v1", "v1\n")
    image = first.images.get(f"{IMAGE}:v1")
    data = b"".join(image.save(named=True))
    for h in pool.hosts[1:]:
        h.client().images.load(data)
    ids = {h.client().images.get(f"{IMAGE}:v1").id for h in pool.hosts}
    if ids != {image.id}:
        raise RuntimeError(f"the image has several ids across the hosts: {ids}")
    return str(image.id)


def steady(watch: Watch, healthy: bool = False) -> bool:
    """The last second's samples (10 at least) all had the 12 answering (and healthy,
    for Swarm: Docker's health check passing), before a drain starts."""
    recent = [s for s in watch.samples if s[0] >= time.time() - 1.0]
    return len(recent) >= 5 and all(
        s[2] == REPLICAS and (not healthy or s[3] == REPLICAS) for s in recent
    )


def docker_hosts(pool: HostPool) -> list[tuple[str, str, Any]]:
    return [(h.name, h.address, h.client()) for h in pool.hosts]


def settle(done: Callable[[], bool], timeout: float, what: str) -> None:
    wait_until(done, timeout, interval=0.2, what=what, ignore=(FleetError,))


def report(result: dict[str, Any]) -> str:
    lines = [describe(result["machine"]), ""]
    lines.append(
        f"{'':<8}{'drain s':>9}{'empty+12 s':>12}{'min answering':>15}{'s below 12':>12}"
        f"{'max containers':>16}  command"
    )
    for name in ("fleet", "swarm"):
        r = result.get(name)
        if not r:
            continue
        if "error" in r:
            lines.append(f"{name:<8}error: {r['error']}")
            continue
        a = r["availability"]
        lines.append(
            f"{name:<8}{r['drain_seconds']:>9.1f}{r['empty_and_12_answering_seconds'] or 0:>12.1f}"
            f"{a['min_answering']:>12}/{REPLICAS}{a['seconds_below_all']:>12.1f}"
            f"{a['max_containers']:>16}  {r['command']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--no-swarm", action="store_true", help="skip Swarm")
    parser.add_argument("--no-fleet", action="store_true", help="skip fleet")
    parser.add_argument("--tag", default="", help="added to the result file's name")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs' directory")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces and a dockerd per host")
    stop_on_sigterm()
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-drain-"))
    pool: HostPool | None = None
    etcd: EtcdServer | None = None
    ok = False
    try:
        etcd = EtcdServer(data_dir=work / "etcd").start()
        pool = HostPool(HOSTS, prefix=f"dr{os.getpid() % 100000}").start()
        image_id = same_image_everywhere(pool)
        result: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": {"hosts": HOSTS, "replicas": REPLICAS, "drained": DRAINED, "spec": SPEC},
            "machine": machine(pool.hosts[0].client(), docker_cli=_docker_cli()),
        }
        if not args.no_fleet:
            result["fleet"] = run_fleet(pool, etcd, work)
            print(f"fleet: drained in {result['fleet']['drain_seconds']} s")
        if not args.no_swarm:
            result["swarm"] = run_swarm(pool, image_id)
            print(f"swarm: {result['swarm'].get('drain_seconds', result['swarm'].get('error'))}")
        ended(result["machine"])
        result["run_seconds"] = round(time.monotonic() - began, 1)
        print()
        print(report(result))
        args.out.mkdir(parents=True, exist_ok=True)
        tag = f"-{args.tag}" if args.tag else ""
        path = args.out / f"drain-{datetime.now(UTC):%Y%m%d}{tag}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {path} ({result['run_seconds']:.0f} s)")
        ok = True
    finally:
        if pool is not None:
            quietly("host pool", pool.close)
        if etcd is not None:
            quietly("etcd", etcd.close)
        if ok and not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}")


def _docker_cli() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["docker", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    return "?"


if __name__ == "__main__":
    main()
