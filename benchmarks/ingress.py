"""Ingress benchmark (#20): what the edge costs, and what its clients see while fleet
changes things behind it.

A real etcd, ``fleet server`` and three ``fleet agent`` processes (mutual TLS) on three
docker hosts in network namespaces (``fleet.testing``); h1's agent runs with
``--ingress 127.0.0.1:PORT`` (a real HAProxy), h2 and h3 are the non-edge hosts. The app
``web`` (4 replicas of busybox httpd, ``placement: spread``, an http health check every
1 s, ``max_surge: 1``, ``shutdown_delay: 2s``, ``ingress: {port: 8080, host:
web.example}``) is applied and ready before anything is measured. Images are imported
straight into each daemon: v1, v2 and a broken v3 (it serves a directory with no
index.html, so its health check gets 404s).

1. The proxy's cost, in the same run with the same client (``--concurrency`` threads of
   Python's http.client, each sending as fast as answers come, for ``--duration``
   seconds each): GET / through the edge on one kept-alive connection per thread;
   through the edge with a new connection per request; and straight to the replicas'
   host ports (round-robin over ``fleet endpoints``), a new connection per request
   (busybox httpd closes after each answer). Requests/s and p50/p99 latency of each,
   flat out, then again paced at ``--rate`` requests/s in all: flat out the Python
   client is the bottleneck on this machine, paced the latency the proxy adds shows.
2. Events, one by one, under a constant load through the edge (``--rate`` requests/s
   spread over ``--concurrency`` threads, half on kept-alive connections, half on a new
   connection per request; 10 s client timeout): a rolling upgrade v1 -> v2; a broken
   v3 rolled back automatically; ``fleet drain`` of h2 (then uncordoned); ``fleet
   upgrade-hosts`` over h2 and h3 (selector ``agent.role=worker``; the command writes a
   new os-release and asks this script, standing in for the host's init system, to
   restart dockerd and the agent); a non-edge host killed (its agent SIGKILLed, its
   network cut so that nothing answers at its address, and the host powered off:
   dockerd, containerd, shims and containers SIGKILLed). Each event's
   window runs from its start until fleet says it is done (rollout complete, drained,
   walk done, replicas replaced elsewhere) plus ``--settle`` seconds; every request
   started in the window counts: its status (not 200 is a failure), connection errors,
   timeouts; and the slowest request.
3. Swarm (unless ``--no-swarm``): Docker's swarm mode on the same hosts' dockerds, a
   service with a port published through the routing mesh, and GETs to every host's
   published port. It records what happened: on this project's VMs the kernel has no
   IPVS, so the mesh refuses connections (see benchmarks/README.md).

Figures go to benchmarks/results/ingress.json.

    .venv/bin/python benchmarks/ingress.py [--duration 10] [--concurrency 4] [--rate 100]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import itertools
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import describe, ended, loadavg, machine, quietly, stop_on_sigterm

from fleet.client import FleetClient
from fleet.errors import FleetError
from fleet.spec import load_documents
from fleet.testing import DockerHost, EtcdServer, HostPool, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import HTTPD_CMD, ensure_image, graceful_cmd

APP = "web"
IMAGE = "fleet-bench/ingress"
HOST_NAME = "web.example"
REPLICAS = 4
HOSTS = 3
EDGE = "h1"
LABEL = "fleet.app"
SHUTDOWN_DELAY = 2
CLIENT_TIMEOUT = 10.0  # seconds: well above the route's 2 s, a retried request is slow
SERVER_TIMING = ["--host-down-after", "5s", "--reschedule-after", "5s"]
# v3 runs but serves /bin, where there is no index.html: its health check gets 404s.
VERSIONS: dict[str, tuple[str, list[str] | None]] = {
    "v1": ("v1\n", None),
    "v2": ("v2\n", None),
    "v3": ("v3\n", graceful_cmd([*HTTPD_CMD[:-1], "/bin"])),
}

SPEC = f"""\
name: {APP}
image: {IMAGE}:v1
replicas: {REPLICAS}
placement: spread
resources: {{cpu: 0.1, memory: 32Mi}}
health:
  http: http://:8080/index.html
  interval: 1s
  timeout: 1s
  retries: 2
update:
  max_surge: 1
  max_unavailable: 0
  min_ready: 1s
  progress_deadline: 30s
shutdown_delay: {SHUTDOWN_DELAY}s
ingress:
  port: 8080
  host: {HOST_NAME}
  timeout: 2s
"""


# ---------------------------------------------------------------------- the load


@dataclass
class Load:
    """Client threads sending GET / without pause (``rate`` None) or at ``rate``
    requests/s in all; each request's start (monotonic), latency and outcome ("ok",
    "HTTP 503", or the exception's name) recorded."""

    targets: Callable[[int], Iterator[tuple[str, int]]]  # thread index -> addresses
    threads: int
    keep_alive: Callable[[int], bool]  # thread index -> kept-alive connection or not
    rate: float | None = None
    records: list[tuple[float, float, str]] = field(default_factory=list)
    bodies: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(CLIENT_TIMEOUT + 2)

    def _run(self, index: int) -> None:
        keep = self.keep_alive(index)
        targets = self.targets(index)
        interval = self.threads / self.rate if self.rate else 0.0
        next_at = time.monotonic() + interval * index / self.threads
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_at = max(next_at + interval, time.monotonic() - interval)
            if connection is None:
                connection = http.client.HTTPConnection(*next(targets), timeout=CLIENT_TIMEOUT)
            began = time.monotonic()
            try:
                connection.request("GET", "/", headers={"Host": HOST_NAME})
                response = connection.getresponse()
                body = response.read().decode(errors="replace").strip()
                outcome = "ok" if response.status == 200 else f"HTTP {response.status}"
                if outcome == "ok":
                    self.bodies[body] += 1
                closing = response.will_close or not keep
            except (OSError, http.client.HTTPException) as error:
                outcome, closing = type(error).__name__, True
            self.records.append((began, time.monotonic() - began, outcome))
            if closing:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def summary(records: list[tuple[float, float, str]], seconds: float) -> dict[str, Any]:
    latencies = [r[1] for r in records]
    failed = Counter(r[2] for r in records if r[2] != "ok")
    return {
        "requests": len(records),
        "failed": sum(failed.values()),
        "failures": dict(failed),
        "requests_per_second": round(len(records) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "slowest_ms": round(max(latencies, default=0.0) * 1000, 1),
        "seconds": round(seconds, 2),
    }


# ---------------------------------------------------------------------- the cluster


@dataclass
class Bench:
    work: Path
    pki: TestPKI
    pool: HostPool
    server: FleetServerProcess
    ingress: tuple[str, int]
    agents: dict[str, FleetAgentProcess] = field(default_factory=dict)
    client: FleetClient | None = None
    restarts: list[str] = field(default_factory=list)

    @property
    def fleet(self) -> FleetClient:
        assert self.client is not None
        return self.client

    def agent(self, host: DockerHost) -> FleetAgentProcess:
        args = ["--advertise-address", host.address, "--allow-host-commands"]
        args += ["--os-release", str(self.work / f"os-release-{host.name}")]
        if host.name == EDGE:
            args += ["--ingress", f"{self.ingress[0]}:{self.ingress[1]}"]
        labels = None if host.name == EDGE else {"role": "worker"}
        return FleetAgentProcess(
            [self.server.address], host.name, host.docker_url, self.work, self.pki, labels, args
        )

    def cli(self, *args: str, timeout: float = 300) -> None:
        done = self.server.cli(*args, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"fleet {' '.join(args)}: {done.stdout}{done.stderr}")

    def connected(self) -> set[str]:
        return {h.host_id for h in self.fleet.hosts() if h.connected}

    def endpoints(self) -> list[tuple[str, str, int]]:
        return [(e.host, e.address, e.host_port) for e in self.fleet.endpoints(APP)]

    def init_system(self, stop: threading.Event) -> None:
        """Restart a host's dockerd and agent when its upgrade command asks for it."""
        while not stop.is_set():
            for marker in sorted(self.work.glob("restart-h*")):
                name = marker.name.removeprefix("restart-")
                host = self.pool.host(name)
                self.agents[name].stop()
                host.stop_daemon()
                host.start_daemon()
                self.agents[name] = self.agent(host).start()
                marker.unlink()
                self.restarts.append(name)
            stop.wait(0.2)

    def stop_edge_proxy(self) -> None:
        """A stopped agent leaves its HAProxy serving (the next one adopts it): end it."""
        pidfile = self.work / f"agent-{EDGE}-state" / "edge" / "haproxy.pid"
        with contextlib.suppress(OSError, ValueError):
            for pid in (int(p) for p in pidfile.read_text().split()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                gone = functools.partial(lambda p: not Path(f"/proc/{p}").exists(), pid)
                wait_until(gone, 10, what=f"HAProxy (pid {pid}) to exit")


# ---------------------------------------------------------------------- the events


def wait_settled(bench: Bench, what: str, done: Callable[[], bool], timeout: float) -> None:
    wait_until(done, timeout, interval=0.2, what=what, ignore=(FleetError,))


def rollout(bench: Bench) -> str:
    bench.cli("set", "image", APP, f"{IMAGE}:v2")
    bench.cli("rollout", "status", APP, "--timeout", "180s")
    return "rollout v1 -> v2 complete"


def rollback(bench: Bench) -> str:
    bench.fleet.set_image(APP, f"{IMAGE}:v3")

    def rolled_back() -> bool:
        status = bench.fleet.rollout_status(APP)
        return status.state == "complete" and status.rollback_of == 3

    wait_settled(bench, "the rollback of v3 to complete", rolled_back, 240)
    return "v3 failed its health checks, rolled back to v2"


def drain(bench: Bench) -> str:
    bench.cli("drain", "h2", "--wait", "--timeout", "180s")
    bench.cli("uncordon", "h2")
    return "h2 drained, then uncordoned"


def upgrade_hosts(bench: Bench) -> str:
    command = (
        f"printf 'NAME=\"Fleet OS\"\\nVERSION_ID=2\\n' > {bench.work}/os-release-$FLEET_HOST_ID"
        f" && touch {bench.work}/restart-$FLEET_HOST_ID"
    )
    stop = threading.Event()
    restarter = threading.Thread(target=bench.init_system, args=(stop,), daemon=True)
    restarter.start()
    try:
        walk = bench.fleet.upgrade_hosts(
            "start", selector=["agent.role=worker"], max_parallel=1, command=command
        )
        hosts = [h.host_id for h in walk.hosts]
        wait_settled(bench, "the upgrade walk", lambda: bench.fleet.upgrade().state == "done", 400)
        phases = {h.host_id: h.phase for h in bench.fleet.upgrade().hosts}
        if set(phases.values()) != {"done"}:
            raise RuntimeError(f"upgrade walk: {phases}")
    finally:
        stop.set()
        restarter.join(60)
    return f"{', '.join(hosts)} drained, restarted (dockerd and agent) and back, one at a time"


def kill_host(bench: Bench) -> str:
    on = Counter(host for host, _, _ in bench.endpoints() if host != EDGE)
    victim = on.most_common(1)[0][0] if on else "h3"
    # As a machine losing power: nothing answers any more, not even with a refusal (a
    # powered-off namespace would still refuse connections, which HAProxy retries at once).
    bench.agents[victim].kill()
    bench.pool.host(victim).cut_network()
    bench.pool.host(victim).power_off()

    def replaced() -> bool:
        found = bench.endpoints()
        return len(found) == REPLICAS and all(host != victim for host, _, _ in found)

    wait_settled(bench, f"{victim}'s replicas replaced elsewhere", replaced, 180)
    return f"{victim} killed ({on[victim]} replicas): agent SIGKILLed, network cut, powered off"


EVENTS: list[tuple[str, Callable[[Bench], str]]] = [
    ("rolling upgrade v1->v2", rollout),
    ("auto rollback of broken v3", rollback),
    ("drain of h2 (non-edge)", drain),
    ("upgrade-hosts h2, h3", upgrade_hosts),
    ("non-edge host killed", kill_host),
]


# ---------------------------------------------------------------------- swarm


def swarm_attempt(pool: HostPool, work: Path) -> dict[str, Any]:
    """Swarm on the live hosts' dockerds, a service published through the routing mesh,
    three GETs to each host's published port; what happened, and dockerd's complaints."""
    hosts = [h for h in pool.hosts if h.ping()]
    manager, *workers = hosts
    result: dict[str, Any] = {"hosts": [h.name for h in hosts]}
    client = manager.client()
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
        result["nodes"] = [n.attrs["Status"]["State"] for n in client.nodes.list()]
        from docker.types import EndpointSpec, ServiceMode

        port = free_port()
        service = client.services.create(
            f"{IMAGE}:v1",
            name="web-swarm",
            endpoint_spec=EndpointSpec(ports={port: 8080}),
            mode=ServiceMode("replicated", replicas=len(hosts)),
        )

        def running() -> bool:
            tasks: list[dict[str, Any]] = service.tasks()
            return sum(1 for t in tasks if t["Status"]["State"] == "running") == len(hosts)

        wait_until(running, 120, what="the swarm service's tasks running")
        answers: dict[str, list[str]] = {}
        for h in hosts:
            answers[h.name] = []
            for _ in range(3):
                try:
                    with urllib.request.urlopen(f"http://{h.address}:{port}/", timeout=3) as r:
                        answers[h.name].append(f"HTTP {r.status}")
                except OSError as error:
                    answers[h.name].append(repr(getattr(error, "reason", error)))
        result["published_port_answers"] = answers
        result["routing_mesh_works"] = all(
            a == "HTTP 200" for found in answers.values() for a in found
        )
        with open(manager.log_path, errors="replace") as f:
            complaints = [line.strip() for line in f if "ipvs" in line.lower()]
        result["dockerd_ipvs_lines"] = complaints[:3]
        result["kernel_has_ipvs"] = Path("/proc/sys/net/ipv4/vs").exists()
    except Exception as error:
        result["error"] = repr(error)
    finally:
        for h in hosts:
            with contextlib.suppress(Exception):
                h.client().swarm.leave(force=True)
    return result


# ---------------------------------------------------------------------- report


def table(result: dict[str, Any]) -> str:
    lines = [describe(result["machine"]), ""]
    settings = result["settings"]
    for key, how in (
        ("throughput", "flat out"),
        ("latency_at_rate", f"paced at {settings['rate']:g} req/s in all"),
    ):
        lines.append(
            f"{'path':<44}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}   "
            f"({settings['concurrency']} client threads, {how}, "
            f"{settings['duration_seconds']:g} s each)"
        )
        for name, s in result[key].items():
            lines.append(
                f"{name:<44}{s['requests_per_second']:>9.0f}{s['p50_ms']:>9.2f}"
                f"{s['p99_ms']:>9.2f}{s['failed']:>8}"
            )
        lines.append("")
    lines += [f"events under {result['settings']['rate']:g} req/s through the edge:"]
    lines.append(
        f"{'event':<30}{'seconds':>8}{'requests':>10}{'failed':>8}{'slowest ms':>12}"
        f"{'p99 ms':>9}  what"
    )
    for e in result["events"]:
        s = e["load"]
        lines.append(
            f"{e['event']:<30}{s['seconds']:>8.1f}{s['requests']:>10}{s['failed']:>8}"
            f"{s['slowest_ms']:>12.0f}{s['p99_ms']:>9.1f}  {e['what']}"
            + (f"  failures: {s['failures']}" if s["failed"] else "")
        )
    whole = result["events_load"]
    lines.append(
        f"{'whole event phase':<30}{whole['seconds']:>8.1f}{whole['requests']:>10}"
        f"{whole['failed']:>8}{whole['slowest_ms']:>12.0f}{whole['p99_ms']:>9.1f}"
    )
    swarm = result.get("swarm")
    if swarm:
        lines += ["", f"swarm routing mesh works: {swarm.get('routing_mesh_works')}"]
        lines.append(f"  answers: {swarm.get('published_port_answers') or swarm.get('error')}")
        lines += [f"  dockerd: {line}" for line in swarm.get("dockerd_ipvs_lines", [])[:2]]
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def measure(load: Load, seconds: float) -> dict[str, Any]:
    with load:
        time.sleep(seconds)
    return summary(load.records, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per path")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--rate", type=float, default=100.0, help="req/s during the events")
    parser.add_argument("--settle", type=float, default=4.0, help="seconds after each event")
    parser.add_argument("--no-swarm", action="store_true", help="skip the Swarm attempt")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs' directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces and a dockerd per host")
    if args.concurrency < 1 or args.duration <= 0 or args.rate <= 0:
        raise SystemExit("--concurrency, --duration and --rate must be positive")
    stop_on_sigterm()

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-ingress-"))
    pool: HostPool | None = None
    etcd: EtcdServer | None = None
    bench: Bench | None = None
    ok = False
    try:
        pki = TestPKI(work / "pki")
        etcd = EtcdServer(data_dir=work / "etcd").start()
        pool = HostPool(HOSTS, prefix=f"in{os.getpid() % 100000}").start()
        for h in pool.hosts:
            (work / f"os-release-{h.name}").write_text('NAME="Fleet OS"\nVERSION_ID=1\n')
            for tag, (index, cmd) in VERSIONS.items():
                ensure_image(h.client(), IMAGE, tag, index, cmd)
        result: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": {
                "hosts": HOSTS,
                "edge": EDGE,
                "replicas": REPLICAS,
                "concurrency": args.concurrency,
                "duration_seconds": args.duration,
                "rate": args.rate,
                "settle_seconds": args.settle,
                "client_timeout_seconds": CLIENT_TIMEOUT,
                "server_args": SERVER_TIMING,
                "spec": SPEC,
            },
            "machine": machine(pool.hosts[0].client()),
        }
        server = FleetServerProcess(
            etcd.endpoint, "/bench-ingress/", work, pki, extra_args=SERVER_TIMING
        ).start()
        bench = Bench(work, pki, pool, server, ("127.0.0.1", free_port()))
        for h in pool.hosts:
            bench.agents[h.name] = bench.agent(h).start()
        bench.client = server.client()
        wait_settled(bench, "3 agents", lambda: len(bench.connected()) == HOSTS, 60)
        bench.fleet.apply(load_documents(SPEC, f"{APP}.yaml"))
        wait_settled(bench, "4 endpoints", lambda: len(bench.endpoints()) == REPLICAS, 120)
        edge = bench.ingress

        def edge_targets(index: int) -> Iterator[tuple[str, int]]:
            return itertools.repeat(edge)

        probe = Load(edge_targets, 1, lambda i: True)
        with probe:
            wait_until(lambda: probe.bodies["v1"] > 20, 60, what="the edge to serve v1")
        direct = [(address, port) for _, address, port in bench.endpoints()]

        def direct_targets(index: int) -> Iterator[tuple[str, int]]:
            return itertools.islice(itertools.cycle(direct), index, None)

        print(f"web ready on {len(direct)} replicas; the edge at {edge[0]}:{edge[1]}")
        for key, rate in (("throughput", None), ("latency_at_rate", args.rate)):
            result[key] = {}
            for name, targets, keep in (
                ("edge, kept-alive client connections", edge_targets, True),
                ("edge, a new connection per request", edge_targets, False),
                ("straight to the replicas (round-robin)", direct_targets, False),
            ):
                keeps = functools.partial(lambda k, i: k, keep)
                load = Load(targets, args.concurrency, keeps, rate=rate)
                found = result[key][name] = measure(load, args.duration)
                print(
                    f"  {name}, {'flat out' if rate is None else f'{rate:g} req/s'}: "
                    f"{found['requests_per_second']:.0f} req/s, p50 {found['p50_ms']} ms, "
                    f"p99 {found['p99_ms']} ms"
                )

        result["events"] = []
        load = Load(edge_targets, args.concurrency, lambda i: i % 2 == 0, rate=args.rate)
        with load:
            phase = time.monotonic()
            for name, event in EVENTS:
                t0 = time.monotonic()
                what = event(bench)
                done = time.monotonic() - t0
                time.sleep(args.settle)
                t1 = time.monotonic()
                window = [r for r in load.records if t0 <= r[0] < t1]
                result["events"].append(
                    {
                        "event": name,
                        "what": what,
                        "done_seconds": round(done, 2),
                        "load": summary(window, t1 - t0),
                        "loadavg": loadavg(),
                    }
                )
                s = result["events"][-1]["load"]
                print(f"  {name}: {s['failed']} of {s['requests']} failed ({what})")
            phase_seconds = time.monotonic() - phase
        result["events_load"] = summary(load.records, phase_seconds)
        result["events_load"]["bodies"] = dict(load.bodies)
        result["upgrade_restarts"] = bench.restarts
        ended(result["machine"])

        # fleet is done: stop it before Swarm takes the same daemons.
        for name, agent in bench.agents.items():
            quietly(f"agent {name}", agent.stop)
        quietly("edge proxy", bench.stop_edge_proxy)
        for h in pool.hosts:
            if h.ping():
                quietly(f"{h.name} containers", functools.partial(h.remove_all_containers, LABEL))
        if not args.no_swarm:
            result["swarm"] = swarm_attempt(pool, work)
        result["run_seconds"] = round(time.monotonic() - began, 1)

        print()
        print(table(result))
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "ingress.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {path} ({result['run_seconds']:.0f} s)")
        ok = True
    finally:
        if bench is not None:
            if not ok:
                print("server log tail:\n" + bench.server.process.log_tail(60))
                for name, agent in bench.agents.items():
                    print(f"agent {name} log tail:\n" + agent.process.log_tail(30))
            if bench.client is not None:
                quietly("client", bench.client.close)
            for name, agent in bench.agents.items():
                quietly(f"agent {name}", agent.stop)
            quietly("edge proxy", bench.stop_edge_proxy)
            quietly("server", bench.server.stop)
        if pool is not None:
            quietly("host pool", pool.close)
        if etcd is not None:
            quietly("etcd", etcd.close)
        if args.keep_logs or not ok:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
