"""Failover benchmark: a killed leader, a dead host, median and max over several runs.

The HA shape of the chaos tests (``fleet.testing``): a 3-member etcd, two ``fleet
server`` processes (``cp1`` and ``cp2``, one leads) and three docker hosts in network
namespaces, each with its own dockerd and a ``fleet agent`` that knows both servers
(mutual TLS). The image (busybox httpd) is imported straight into every daemon.

1. Leader failover, ``--runs`` times: the leader's id is read from etcd (the
   ``<prefix>leader`` key), that server is SIGKILLed, and at once a ``scale`` of the app
   ``probe`` from 1 to 2 replicas is sent through the other server. Timed from the kill:
   the leader key gone (the dead leader's lease expired), the key naming the survivor,
   the scale call accepted (a plain API write: any replica takes it), and **the new
   leader's first write**: its controller storing the new replica record
   (``<prefix>replicas/probe/<slot>``), the first write that needs a leader; then the new
   replica running (Docker). The killed server is started again on its address, the app
   scaled back to 1, and both servers serve before the next run (the two take turns).
2. Host death, ``--runs`` times: the app ``web`` (3 replicas, ``placement: spread``, one
   per host) is applied afresh; the host of one replica (h1, h2, h3 in turn) loses its
   agent (SIGKILL) and is powered off (dockerd, containerd, shims and containers
   SIGKILLed). Timed from the kill: until ``apps web`` says 3 available with none on the
   dead host, and Docker on the other two hosts runs 3 containers of the app; beside it
   when the host's liveness key went, when the controller moved the replica record and
   when Docker ran the third container. The host is then booted (dockerd, a new agent)
   and must be connected and fenced (no fleet container left on it); the app is deleted.
   The host's first look comes after ``power_off`` returns (about 0.1 s); a liveness
   key still there 0.5 s after the kill has its lease noted (which one, the seconds
   left on it). With ``--silent`` the agent is frozen (SIGSTOP) instead of killed: its
   connection stays open and says nothing, as when a machine loses power or its network
   (no FIN reaches the server); the host is powered off after the measurement. Before a
   boot the old containerd must be reaped (see ``wait_reaped``).

The servers run with ``--host-down-after`` and ``--reschedule-after`` (3 s each by
default) and fleet's default ``--leader-ttl`` of 3 s. Figures go to
benchmarks/results/failover.json.

    .venv/bin/python benchmarks/failover.py [--runs N] [--only leader|host] [--silent]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker.errors
from _harness import describe, ended, loadavg, machine, quietly, stop_on_sigterm

from fleet.client import FleetClient
from fleet.errors import FleetError
from fleet.spec import AppSpec, load_documents
from fleet.testing import DockerHost, EtcdCluster, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image

APP, PROBE = "web", "probe"
IMAGE_REPO, IMAGE_TAG = "fleet-bench/failover", "v1"
IMAGE = f"{IMAGE_REPO}:{IMAGE_TAG}"
HOSTS = 3
SERVER_IDS = ("cp1", "cp2")
LABEL_APP = "fleet.app"
POLL = 0.02  # seconds between two looks at etcd while timing a leader failover
HOST_POLL = 0.05  # ... at etcd, the API and Docker while timing a host death
DOCKER_POLL = 0.1  # ... at Docker while waiting for the probe's new replica
TIMEOUT = 60.0  # every wait has a deadline
LINGER = 0.5  # a liveness key still there this long after a SIGKILL: its lease is noted


# ---------------------------------------------------------------------- etcd, read directly


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EtcdView:
    """Reads fleet's keys straight from etcd's JSON gateway (not through fleet's store),
    from the first member that answers."""

    def __init__(self, urls: Sequence[str], prefix: str) -> None:
        self.urls = list(urls)
        self.prefix = prefix

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for url in self.urls:
            request = urllib.request.Request(
                f"{url}{path}", data=json.dumps(body).encode(), method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    found: dict[str, Any] = json.loads(response.read())
                    return found
            except (OSError, ValueError) as error:  # URLError is an OSError
                last = error
        raise OSError(f"no etcd member answered: {last!r}")

    def _kvs(self, key: str, *, folder: bool = False) -> list[dict[str, Any]]:
        raw = key.encode()
        body = {"key": _b64(raw)}
        if folder:
            body["range_end"] = _b64(raw[:-1] + bytes([raw[-1] + 1]))
        kvs: list[dict[str, Any]] = self._post("/v3/kv/range", body).get("kvs") or []
        return kvs

    def _range(self, key: str, *, folder: bool = False) -> dict[str, bytes]:
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in self._kvs(key, folder=folder)
        }

    def _json(self, key: str) -> dict[str, Any] | None:
        found = self._range(key).get(key)
        return json.loads(found) if found else None

    def alive_lease(self, host: str) -> int | None:
        """The lease the host's liveness key is bound to, None when there is no key."""
        kvs = self._kvs(f"{self.prefix}alive/{host}")
        return int(kvs[0].get("lease", 0)) if kvs else None

    def lease_ttl(self, lease: int) -> int:
        """Seconds left on a lease (whole seconds); -1 once it is revoked or expired."""
        return int(self._post("/v3/lease/timetolive", {"ID": lease}).get("TTL", -1))

    def leader(self) -> str | None:
        found = self._json(f"{self.prefix}leader")
        return str(found["candidate"]) if found else None

    def alive(self, host: str) -> dict[str, Any] | None:
        """The host's liveness record (bound to its lease), None once it is gone."""
        return self._json(f"{self.prefix}alive/{host}")

    def replicas(self, app: str) -> dict[str, dict[str, Any]]:
        """Every replica record of ``app``, by key."""
        found = self._range(f"{self.prefix}replicas/{app}/", folder=True)
        return {key: json.loads(value) for key, value in found.items()}


def replica_hosts(record: dict[str, Any]) -> set[str]:
    """The hosts a replica record wants a container on: its own and its next's."""
    hosts = {str(record.get("host", ""))}
    if record.get("next"):
        hosts.add(str(record["next"].get("host", "")))
    return hosts


# ---------------------------------------------------------------------- server logs

_LOG_TIME = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "


def log_times(log: Path, pattern: str, since: float) -> list[float]:
    """Epoch seconds of the log lines matching ``pattern`` (after the timestamp) at or
    after ``since`` (local time, millisecond resolution)."""
    regex = re.compile(_LOG_TIME + pattern)
    found = []
    with contextlib.suppress(OSError), open(log, errors="replace") as f:
        for line in f:
            match = regex.match(line)
            if match:
                at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if at >= since - 0.001:
                    found.append(at)
    return found


def first_after(log: Path, pattern: str, since: float) -> float | None:
    """Seconds from ``since`` to the first matching log line, None if there is none."""
    times = log_times(log, pattern, since)
    return round(min(times) - since, 3) if times else None


# ---------------------------------------------------------------------- docker


def running(hosts: Sequence[DockerHost], app: str) -> int:
    """Running containers of ``app`` on ``hosts``, read through the Docker SDK."""
    label = f"{LABEL_APP}={app}"
    return sum(
        len(h.client().api.containers(filters={"label": label, "status": "running"})) for h in hosts
    )


def per_host(hosts: Sequence[DockerHost], app: str) -> dict[str, int]:
    return {h.name: running([h], app) for h in hosts}


def fleet_left(host: DockerHost, app: str | None = None) -> int:
    """fleet's containers on ``host`` in any state (of ``app``, or of any app)."""
    label = f"{LABEL_APP}={app}" if app else LABEL_APP
    return len(host.client().api.containers(all=True, filters={"label": label}))


def process_named(pid: int, name: str) -> bool:
    """Whether ``pid`` is (still) a process called ``name``, a zombie included."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def wait_reaped(host: DockerHost) -> float:
    """Wait until the powered-off host's containerd is reaped; the seconds it took.

    ``power_off`` leaves containerd a zombie of pid 1 (it was dockerd's child) with its
    pidfile in place; a dockerd booted meanwhile takes it for a live containerd, times
    out waiting for its socket and exits, and ``start_daemon`` then falls back to the
    vfs driver: a host without its images."""
    began = time.monotonic()
    pidfile = host.data_dir / "exec" / "containerd" / "containerd.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        wait_until(
            lambda: not process_named(pid, "containerd"),
            30,
            interval=0.05,
            what=f"{host.name}'s old containerd (pid {pid}) to be reaped",
        )
    return time.monotonic() - began


# ---------------------------------------------------------------------- the cluster


def spec(name: str, replicas: int) -> AppSpec:
    text = f"""
name: {name}
image: {IMAGE}
replicas: {replicas}
placement: spread
resources: {{cpu: 0.1, memory: 32Mi}}
stop_grace_period: 2s
"""
    [parsed] = load_documents(text, f"{name}.yaml")
    return parsed


def answers(client: FleetClient) -> bool:
    return client.hosts() is not None


class Stamps:
    """When each thing was first seen, in seconds from ``t0`` (time.monotonic)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.seen: dict[str, float] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, what: str, at: float | None = None) -> None:
        if what not in self.seen:
            self.seen[what] = round(self.now() if at is None else at, 3)

    def __contains__(self, what: str) -> bool:
        return what in self.seen


@dataclass
class Bench:
    work: Path
    pki: TestPKI
    pool: HostPool
    etcd: EtcdCluster
    prefix: str
    timing: list[str]
    view: EtcdView
    servers: dict[str, FleetServerProcess] = field(default_factory=dict)
    agents: dict[str, FleetAgentProcess] = field(default_factory=dict)
    client: FleetClient | None = None
    restarts: int = 0

    @property
    def fleet(self) -> FleetClient:
        assert self.client is not None
        return self.client

    def start_servers(self) -> None:
        endpoints = ",".join(self.etcd.endpoints)
        for sid in SERVER_IDS:
            self.servers[sid] = FleetServerProcess(
                endpoints,
                self.prefix,
                self.work,
                self.pki,
                log_name=f"server-{sid}.log",
                extra_args=["--server-id", sid, *self.timing],
            ).start()
        addresses = [s.address for s in self.servers.values()]
        self.client = FleetClient(addresses, self.servers["cp1"].transport(), timeout=10)

    def agent(self, host: DockerHost) -> FleetAgentProcess:
        return FleetAgentProcess(
            [s.address for s in self.servers.values()],
            host.name,
            host.docker_url,
            self.work,
            self.pki,
            None,
            ["--advertise-address", host.address],
        )

    def connected(self) -> set[str]:
        return {h.host_id for h in self.fleet.hosts() if h.connected}

    def wait_steady(self) -> str:
        """Both servers answer, a leader leads, every agent is connected; the leader."""
        for server in self.servers.values():
            with server.client(timeout=2) as direct:
                server.process.wait_ready(
                    functools.partial(answers, direct), 30, what="the server to answer"
                )
        leader = wait_until(self.view.leader, 30, what="a leader", ignore=(OSError,)) or ""
        wait_until(
            lambda: len(self.connected()) == HOSTS,
            30,
            what=f"{HOSTS} agents connected",
            ignore=(FleetError,),
        )
        return leader

    def restart(self, sid: str) -> float:
        """The killed server ``sid`` started again on its address; seconds to answer."""
        self.restarts += 1
        began = time.monotonic()
        server = self.servers[sid].again(f"server-{sid}-{self.restarts}.log").start()
        self.servers[sid] = server
        return time.monotonic() - began

    def apply_and_wait(self, name: str, replicas: int, *, one_per_host: bool) -> None:
        self.fleet.apply([spec(name, replicas)])
        hosts = self.pool.hosts

        def ready() -> bool:
            if one_per_host and sorted(per_host(hosts, name).values()) != [1] * HOSTS:
                return False
            if running(hosts, name) != replicas:
                return False
            [app] = self.fleet.apps(name)
            return app.available == replicas

        wait_until(ready, TIMEOUT, interval=0.1, what=f"{replicas} of {name} running")

    def delete_and_wait(self, name: str) -> None:
        self.fleet.delete_app(name)
        wait_until(
            lambda: (
                not self.view.replicas(name)
                and not sum(fleet_left(h, name) for h in self.pool.hosts)
            ),
            TIMEOUT,
            interval=0.1,
            what=f"every container of {name} gone",
        )


# ---------------------------------------------------------------------- 1. leader failover


def scale_until_accepted(
    client: FleetClient, replicas: int, t0: float
) -> tuple[float, int, list[str]]:
    """``scale`` until one is accepted: (seconds from t0, attempts, the errors seen)."""
    errors: list[str] = []
    while True:
        try:
            client.scale(PROBE, replicas)
            return time.monotonic() - t0, len(errors) + 1, errors
        except FleetError as error:
            errors.append(f"{time.monotonic() - t0:.3f}s {type(error).__name__}: {error}")
            if time.monotonic() - t0 > TIMEOUT:
                raise
            time.sleep(0.05)


def leader_run(bench: Bench, run: int) -> dict[str, Any]:
    load = loadavg()
    leader = bench.wait_steady()
    if leader not in bench.servers:
        raise RuntimeError(f"the leader {leader!r} is none of {list(bench.servers)}")
    survivor_id = next(sid for sid in SERVER_IDS if sid != leader)
    victim, survivor = bench.servers[leader], bench.servers[survivor_id]
    before = bench.view.replicas(PROBE)
    hosts_before = {k: v["host"] for k, v in before.items()}
    target = len(before) + 1
    hosts = bench.pool.hosts
    scaler = ThreadPoolExecutor(1, "scale")
    try:
        with survivor.client(timeout=10) as direct:
            direct.hosts()  # the channel is up before the clock starts
            epoch, t0 = time.time(), time.monotonic()
            victim.kill()
            stamps = Stamps(t0)
            stamps.mark("killed")
            scale: Future[tuple[float, int, list[str]]] = scaler.submit(
                scale_until_accepted, direct, target, t0
            )
            last_docker = 0.0
            while True:
                now = stamps.now()
                if now > TIMEOUT:
                    raise TimeoutError(f"run {run}: failover not done in {TIMEOUT}s: {stamps.seen}")
                # The replicas first: a new record proves that the leader key named
                # the survivor by then (the controller's writes are fenced on it).
                # Each figure is when the answer that showed it came back.
                if set(bench.view.replicas(PROBE)) - set(before):
                    seen = stamps.now()
                    stamps.mark("first_leader_write", seen)
                    stamps.mark("leader_key_gone", seen)
                    stamps.mark("survivor_leads", seen)
                current = bench.view.leader()
                if current is None:
                    stamps.mark("leader_key_gone")
                elif current == survivor_id:
                    stamps.mark("leader_key_gone")  # gone and taken again within one look
                    stamps.mark("survivor_leads")
                if scale.done():
                    stamps.mark("scale_accepted", scale.result()[0])
                if "first_leader_write" in stamps and now - last_docker >= DOCKER_POLL:
                    last_docker = now
                    if running(hosts, PROBE) >= target:
                        stamps.mark("new_replica_running")
                if all(key in stamps for key, _, _ in LEADER_ROWS):
                    break
                time.sleep(POLL)
            _, attempts, errors = scale.result()
    finally:
        scaler.shutdown(wait=True)
    after = bench.view.replicas(PROBE)
    moved = {k: (h, after[k]["host"]) for k, h in hosts_before.items() if after[k]["host"] != h}
    log = survivor.process.log_path
    result: dict[str, Any] = {
        "run": run + 1,
        "killed": leader,
        "survivor": survivor_id,
        "loadavg": load,
        "seconds": stamps.seen,
        "scale_attempts": attempts,
        "scale_errors": errors,
        "from_the_survivors_log": {
            "leads": first_after(log, rf"INFO fleet\.store\.election: {survivor_id} leads", epoch),
            "replicas_written": first_after(
                log, rf"INFO fleet\.controlplane\.replicas: app {PROBE}: [1-9]\d* replica", epoch
            ),
        },
        "replicas_moved_meanwhile": moved,
    }
    # Back to the shape of the next run: the killed server serves again (a standby now),
    # the probe is down to 1 again.
    result["restart_seconds"] = round(bench.restart(leader), 3)
    bench.fleet.scale(PROBE, len(before))
    wait_until(
        lambda: (
            len(bench.view.replicas(PROBE)) == len(before)
            and sum(fleet_left(h, PROBE) for h in hosts) == len(before)
            and running(hosts, PROBE) == len(before)
        ),
        TIMEOUT,
        interval=0.1,
        what=f"{PROBE} back to {len(before)}",
    )
    return result


# ---------------------------------------------------------------------- 2. host death


def host_run(bench: Bench, run: int, silent: bool) -> dict[str, Any]:
    hosts = bench.pool.hosts
    bench.wait_steady()
    bench.apply_and_wait(APP, HOSTS, one_per_host=True)
    load = loadavg()
    victim = hosts[run % HOSTS]
    others = [h for h in hosts if h is not victim]
    live = bench.view.alive(victim.name) or {}
    lease = bench.view.alive_lease(victim.name)
    lingering: dict[str, Any] = {}
    leader = bench.view.leader() or ""
    agent = bench.agents[victim.name]
    epoch, t0 = time.time(), time.monotonic()
    stamps = Stamps(t0)
    if silent:
        assert agent.process.pid is not None
        os.kill(agent.process.pid, signal.SIGSTOP)  # silent, its connection open
        stamps.mark("agent_frozen")
    else:
        agent.kill()
        stamps.mark("agent_killed")
        victim.power_off()
        stamps.mark("powered_off")
    looks = 0
    while True:
        now = stamps.now()
        looks += 1
        if now > TIMEOUT:
            raise TimeoutError(f"run {run}: {victim.name}'s replica not moved: {stamps.seen}")
        bound = bench.view.alive_lease(victim.name)
        if bound is None:
            stamps.mark("liveness_key_gone", now)
        elif now >= LINGER and not lingering:
            # Still there well after the agent's stream closed: which lease holds it?
            lingering = {
                "at_seconds": round(now, 3),
                "lease": f"{bound:x}",
                "same_lease_as_before_the_kill": bound == lease,
                "lease_ttl_left_seconds": bench.view.lease_ttl(bound),
            }
        records = bench.view.replicas(APP)
        if len(records) == HOSTS and not any(
            victim.name in replica_hosts(r) for r in records.values()
        ):
            stamps.mark("replica_record_moved", now)
        if "replica_record_moved" in stamps and running(others, APP) == HOSTS:
            stamps.mark("docker_3_running_elsewhere")
        with contextlib.suppress(FleetError):
            [app] = bench.fleet.apps(APP)
            elsewhere = not any(c.host == victim.name for c in bench.fleet.containers(app=APP))
            if app.available == HOSTS and elsewhere:
                stamps.mark("api_3_available_elsewhere")
                # The cross-check, in the same look: Docker runs the 3 on the other hosts.
                if running(others, APP) == HOSTS:
                    stamps.mark("docker_3_running_elsewhere")
                    stamps.mark("all_available_elsewhere")
                    break
        time.sleep(HOST_POLL)
    placed = per_host(others, APP)
    result: dict[str, Any] = {
        "run": run + 1,
        "host": victim.name,
        "agent": "frozen (SIGSTOP)" if silent else "SIGKILL",
        "agent_was_connected_to": live.get("server", "?"),
        "liveness_lease": f"{lease:x}" if lease else None,
        "liveness_key_lingering": lingering or None,
        "leader": leader,
        "loadavg": load,
        "seconds": stamps.seen,
        "looks": looks,
        "running_after": placed,
        "from_the_logs": {
            "agent_disconnected": first_after(
                bench.servers[live["server"]].process.log_path
                if live.get("server") in bench.servers
                else Path("/nonexistent"),
                rf"INFO fleet\.controlplane\.agents: host {victim.name} disconnected",
                epoch,
            ),
            "leader_replicas_written": first_after(
                bench.servers[leader].process.log_path
                if leader in bench.servers
                else Path("/nonexistent"),
                rf"INFO fleet\.controlplane\.replicas: app {APP}: [1-9]\d* replica",
                epoch,
            ),
        },
    }
    if silent:
        agent.kill()
        victim.power_off()
    # The host boots: dockerd, a new agent; it must come back connected and fenced.
    driver = victim.storage_driver
    reaped = wait_reaped(victim)
    began = time.monotonic()
    back: dict[str, float] = {"dockerd_seconds": round(victim.start_daemon(), 3)}
    if victim.storage_driver != driver:
        raise RuntimeError(
            f"{victim.name}'s dockerd came back with {victim.storage_driver}, not {driver} "
            f"(an empty image store):\n{victim.log_tail(30)}"
        )
    back["waited_for_reaping_seconds"] = round(reaped, 3)
    bench.agents[victim.name] = bench.agent(victim).start()
    wait_until(
        lambda: victim.name in bench.connected(),
        TIMEOUT,
        interval=0.1,
        what=f"{victim.name}'s agent to connect",
        ignore=(FleetError,),
    )
    back["connected_seconds"] = round(time.monotonic() - began, 3)
    wait_until(
        lambda: fleet_left(victim) == 0,
        TIMEOUT,
        interval=0.1,
        what=f"{victim.name} fenced (its stale container removed)",
        ignore=(docker.errors.APIError,),
    )
    back["fenced_seconds"] = round(time.monotonic() - began, 3)
    if running(hosts, APP) != HOSTS:
        raise RuntimeError(f"{APP}: {per_host(hosts, APP)} running after {victim.name} came back")
    result["host_back"] = back
    bench.delete_and_wait(APP)
    return result


# ---------------------------------------------------------------------- figures


def figures(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [r["seconds"][key] for r in runs if key in r["seconds"]]
    if not values:
        return {"runs": 0}
    return {
        "median_seconds": round(statistics.median(values), 3),
        "max_seconds": round(max(values), 3),
        "min_seconds": round(min(values), 3),
        "runs": len(values),
    }


def log_figures(runs: Sequence[dict[str, Any]], group: str, key: str) -> dict[str, Any]:
    values = [r[group][key] for r in runs if r[group].get(key) is not None]
    if not values:
        return {"runs": 0}
    return {
        "median_seconds": round(statistics.median(values), 3),
        "max_seconds": round(max(values), 3),
        "runs": len(values),
    }


LEADER_ROWS = (
    ("leader_key_gone", "kill -> leader key gone", "the dead leader's lease expired"),
    ("survivor_leads", "kill -> survivor leads", "the leader key names the other replica"),
    ("scale_accepted", "kill -> scale accepted", "a plain API write through the survivor"),
    ("first_leader_write", "kill -> first leader write", "the new replica's record (controller)"),
    ("new_replica_running", "kill -> new replica runs", "Docker runs the probe's 2nd container"),
)
HOST_ROWS = (
    ("liveness_key_gone", "death -> liveness key gone", "alive/<host> deleted"),
    ("replica_record_moved", "death -> replica re-placed", "no replica record names the host"),
    ("docker_3_running_elsewhere", "death -> 3 running (Docker)", "on the other two hosts"),
    ("all_available_elsewhere", "death -> 3 available", ""),
)


def table(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    floor = s["host_down_after_seconds"] + s["reschedule_after_seconds"]
    rows: list[tuple[str, str, str, str, str]] = [("figure", "median", "max", "runs", "note")]

    def add(name: str, f: dict[str, Any], note: str) -> None:
        if f.get("runs"):
            rows.append(
                (
                    name,
                    f"{f['median_seconds']:.2f} s",
                    f"{f['max_seconds']:.2f} s",
                    str(f["runs"]),
                    note,
                )
            )

    if "leader" in result:
        figs = result["leader"]["figures"]
        for key, name, note in LEADER_ROWS:
            if key == "leader_key_gone":
                note += f" (--leader-ttl {s['leader_ttl_seconds']} s)"
            if key == "first_leader_write":
                name, note = "leader: " + name, note + "  <- the figure"
            add(name, figs[key], note)
    if "host" in result:
        figs = result["host"]["figures"]
        how = "agent frozen" if s["silent"] else "agent SIGKILLed"
        for key, name, note in HOST_ROWS:
            if key == "all_available_elsewhere":
                name = "host: " + name
                note = (
                    f"apps + Docker, none on the dead host  <- the figure; host_down_after "
                    f"{s['host_down_after_seconds']:g} s + reschedule_after "
                    f"{s['reschedule_after_seconds']:g} s = {floor:g} s"
                )
            if key == "liveness_key_gone":
                note += f" ({how})"
            add(name, figs[key], note)
        back = result["host"]["host_back"]
        add("host back -> connected", back["connected"], "dockerd booted, a new agent")
        add("host back -> fenced", back["fenced"], "its stale container removed")
    width = [max(len(row[i]) for row in rows) + 2 for i in range(4)]
    lines = [describe(m), ""]
    for i, row in enumerate(rows):
        lines.append(
            f"{row[0]:<{width[0]}}{row[1]:>{width[1]}}{row[2]:>{width[2]}}"
            f"{row[3]:>{width[3]}}  {row[4]}"
        )
        if i == 0:
            lines.append("-" * max(sum(width) + 2 + len(r[4]) for r in rows))
    return "\n".join(lines)


def run_lines(result: dict[str, Any]) -> str:
    """One line a run, as it went."""
    return ", ".join(f"{k} {v:.2f}" for k, v in result["seconds"].items())


# ---------------------------------------------------------------------- main


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds, e.g. 3 or 3s")
    return float(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement")
    parser.add_argument("--only", choices=("leader", "host"), help="one measurement only")
    parser.add_argument("--host-down-after", type=_seconds, default=3.0, metavar="SECONDS")
    parser.add_argument("--reschedule-after", type=_seconds, default=3.0, metavar="SECONDS")
    parser.add_argument("--leader-ttl", type=_seconds, default=3.0, metavar="SECONDS")
    parser.add_argument(
        "--silent", action="store_true", help="freeze the dead host's agent, do not kill it"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs' directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces and a dockerd per host")
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    stop_on_sigterm()

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-failover-"))
    prefix = f"/bench-failover-{os.getpid()}/"
    timing = [
        "--host-down-after",
        f"{args.host_down_after:g}s",
        "--reschedule-after",
        f"{args.reschedule_after:g}s",
        "--leader-ttl",
        f"{args.leader_ttl:g}s",
    ]
    pool: HostPool | None = None
    etcd: EtcdCluster | None = None
    bench: Bench | None = None
    ok = False
    try:
        pki = TestPKI(work / "pki")
        etcd = EtcdCluster(3).start()
        pool = HostPool(HOSTS, prefix=f"fo{os.getpid() % 100000}").start()
        for h in pool.hosts:  # straight into each daemon: no registry, no pulls
            ensure_image(h.client(), IMAGE_REPO, IMAGE_TAG, "fleet failover benchmark\n")
        view = EtcdView([m.url for m in etcd.members], prefix)
        bench = Bench(work, pki, pool, etcd, prefix, timing, view)
        result: dict[str, Any] = {
            "settings": {
                "runs": args.runs,
                "hosts": HOSTS,
                "etcd_members": len(etcd.members),
                "servers": list(SERVER_IDS),
                "server_args": timing,
                "host_down_after_seconds": args.host_down_after,
                "reschedule_after_seconds": args.reschedule_after,
                "leader_ttl_seconds": args.leader_ttl,
                "silent": args.silent,
                "image": IMAGE,
                "poll_seconds": {"leader": POLL, "host": HOST_POLL, "docker": DOCKER_POLL},
            },
            "machine": machine(pool.hosts[0].client()),
        }
        bench.start_servers()
        for h in pool.hosts:
            bench.agents[h.name] = bench.agent(h).start()
        print(f"hosts {', '.join(h.name for h in pool.hosts)} up; servers {', '.join(SERVER_IDS)}")
        bench.wait_steady()

        if args.only in (None, "leader"):
            bench.apply_and_wait(PROBE, 1, one_per_host=False)
            runs = []
            for run in range(args.runs):
                runs.append(leader_run(bench, run))
                r = runs[-1]
                print(f"  leader {run + 1}/{args.runs}: killed {r['killed']}: {run_lines(r)}")
            result["leader"] = {
                "app": PROBE,
                "write": f"scale {PROBE} 1 -> 2 through the survivor right after the kill",
                "figures": {key: figures(runs, key) for key, _, _ in LEADER_ROWS},
                "from_the_survivors_log": {
                    k: log_figures(runs, "from_the_survivors_log", k)
                    for k in ("leads", "replicas_written")
                },
                "runs": runs,
            }
            bench.delete_and_wait(PROBE)

        if args.only in (None, "host"):
            runs = []
            for run in range(args.runs):
                runs.append(host_run(bench, run, args.silent))
                r = runs[-1]
                print(f"  host {run + 1}/{args.runs}: {r['host']} died: {run_lines(r)}")
            result["host"] = {
                "app": APP,
                "replicas": HOSTS,
                "placement": "spread",
                "floor_seconds": args.host_down_after + args.reschedule_after,
                "figures": {key: figures(runs, key) for key, _, _ in HOST_ROWS},
                "from_the_logs": {
                    k: log_figures(runs, "from_the_logs", k)
                    for k in ("agent_disconnected", "leader_replicas_written")
                },
                "host_back": {
                    k: log_figures(runs, "host_back", f"{k}_seconds")
                    for k in ("dockerd", "connected", "fenced")
                },
                "runs": runs,
            }
        ended(result["machine"])
        result["run_seconds"] = round(time.monotonic() - began, 1)

        print()
        print(table(result))
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "failover.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {path} ({result['run_seconds']:.0f} s)")
        ok = True
    finally:
        if bench is not None:
            if not ok:
                for sid, server in bench.servers.items():
                    print(f"server {sid} log tail:\n" + server.process.log_tail(60))
                for name, agent in bench.agents.items():
                    print(f"agent {name} log tail:\n" + agent.process.log_tail(20))
                for h in bench.pool.hosts:
                    print(f"dockerd {h.name} ({h.storage_driver}) log tail:\n" + h.log_tail(15))
            if bench.client is not None:
                quietly("client", bench.client.close)
            for name, agent in bench.agents.items():
                if agent.process.pid is not None and agent.process.running:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(agent.process.pid, signal.SIGCONT)  # a frozen one, too
                quietly(f"agent {name}", agent.stop)
            for sid, server in bench.servers.items():
                quietly(f"server {sid}", server.stop)
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
