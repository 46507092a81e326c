"""Rollout benchmark: 20 replicas rolled from v1 to v2 on 2 hosts with ``max_surge: 25%``.

A real etcd, ``fleet server`` and two ``fleet agent`` processes (mutual TLS), and two
docker hosts in network namespaces with a dockerd each (``fleet.testing``). The images
``web:v1`` and ``web:v2`` (busybox httpd, different index.html) are imported straight
into both daemons: no registry, so no pull time on either side of the comparison.

1. The floor, first, on the same daemons through the Docker SDK with 8 threads per host
   (the agent's ``parallel_tasks``): 20 containers of v1 created and started, 10 per
   host, with the options fleet gives its replicas (port 8080 published on an ephemeral
   host port, cpu 0.1, 32Mi, restart ``no``, no-new-privileges); then, timed, 20 of v2
   created and started and the 20 of v1 stopped (the image stops at once on SIGTERM) and
   removed, all on the same thread pools. Repeated ``--runs`` times, v1 and v2 swapping.
2. fleet: an app of 20 replicas of v1 with ``update: {max_surge: 25%, max_unavailable:
   0, min_ready: --min-ready}`` (``placement: spread``; no health check unless
   ``--health``, then an http check every 0.5 s), and once it is complete, timed: from
   ``set_image(v2)`` until ``rollout status`` says revision 2 is complete with 20 updated
   and available; then, checked through the Docker SDK, exactly 20 running containers of
   the new revision and none of the old one (also timed: when the old ones are gone).
   ``--runs N`` rolls v1 -> v2 -> v1 ... and reports the median and the max.

Target (issue #5): fleet's rollout within 1.5 x the floor plus the configured min_ready.
Figures go to benchmarks/results/rollout-YYYYMMDD.json.

    .venv/bin/python benchmarks/rollout.py [--runs N] [--min-ready 0s] [--health]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from _harness import describe, ended, machine, quietly, stop_on_sigterm

from fleet.agent.dockerruntime import DockerRuntime
from fleet.client import FleetClient
from fleet.spec import AppSpec, load_documents
from fleet.testing import HTTP_PORT, DockerHost, EtcdServer, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image

APP = "web"
IMAGE_REPO = "fleet-bench/web"
VERSIONS = {"v1": "fleet rollout benchmark v1\n", "v2": "fleet rollout benchmark v2\n"}
HOSTS = 2
THREADS = 8  # the agent's parallel_tasks, per host
CPU = 0.1
MEMORY = 32 << 20
STOP_GRACE = 2  # seconds; the image's command exits at once on SIGTERM
FLOOR_LABEL = "fleet-bench.floor"
LABEL_APP, LABEL_REVISION = "fleet.app", "fleet.revision"
POLL = 0.1  # seconds between two looks; every wait has a deadline
TARGET_FACTOR = 1.5


def image(tag: str) -> str:
    return f"{IMAGE_REPO}:{tag}"


# ---------------------------------------------------------------------- the floor


def spread(replicas: int, hosts: int) -> list[int]:
    """Which host each of ``replicas`` goes to: as even as it gets (10/10 for 20 on 2)."""
    return [i % hosts for i in range(replicas)]


class Floor:
    """Docker alone, through the SDK, on the hosts fleet uses: one pool of 8 threads per
    host, as each agent has its own 8."""

    def __init__(self, hosts: Sequence[DockerHost], replicas: int) -> None:
        self.hosts = list(hosts)
        self.replicas = replicas
        self.pools = [ThreadPoolExecutor(THREADS, f"floor-{h.name}") for h in self.hosts]
        self.running: list[tuple[int, str]] = []  # (host index, container id)
        self.serial = 0

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=True)

    def _create_start(self, host: int, tag: str, name: str) -> tuple[int, str]:
        api = self.hosts[host].client().api
        host_config = api.create_host_config(
            port_bindings={f"{HTTP_PORT}/tcp": None},  # an ephemeral host port, like fleet's
            restart_policy={"Name": "no"},
            security_opt=["no-new-privileges"],
            nano_cpus=int(CPU * 1e9),
            mem_limit=MEMORY,
        )
        created = api.create_container(
            image(tag),
            name=name,
            labels={FLOOR_LABEL: tag},
            ports=[(HTTP_PORT, "tcp")],
            host_config=host_config,
            stop_timeout=STOP_GRACE,
        )
        api.start(created["Id"])
        return host, str(created["Id"])

    def _stop_remove(self, host: int, container_id: str) -> float:
        """Stop and remove a container; returns when it was done (perf_counter)."""
        api = self.hosts[host].client().api
        api.stop(container_id, timeout=STOP_GRACE)
        api.remove_container(container_id, force=True)
        return time.perf_counter()

    def create(self, tag: str) -> float:
        """Create and start ``replicas`` of ``tag`` (nothing else to do): seconds."""
        began = time.perf_counter()
        futures = [self._new(host, tag) for host in spread(self.replicas, len(self.hosts))]
        self.running = [f.result() for f in futures]
        return time.perf_counter() - began

    def _new(self, host: int, tag: str) -> Future[tuple[int, str]]:
        self.serial += 1
        name = f"floor-{tag}-{self.serial}"
        return self.pools[host].submit(self._create_start, host, tag, name)

    def swap(self, tag: str) -> dict[str, float]:
        """Create and start ``replicas`` of ``tag`` and stop and remove the running ones,
        all queued at once (the new first) on each host's 8 threads: seconds until the
        new ones all run, the old ones are all gone, and both."""
        old = self.running
        began = time.perf_counter()
        new = [self._new(host, tag) for host in spread(self.replicas, len(self.hosts))]
        gone = [self.pools[h].submit(self._stop_remove, h, cid) for h, cid in old]
        self.running = [f.result() for f in new]
        new_done = time.perf_counter() - began  # the last one seen done
        removed = [f.result() for f in gone]  # raises if a stop or remove failed
        seconds = time.perf_counter() - began
        for h in self.hosts:
            left = h.client().api.containers(all=True, filters={"label": FLOOR_LABEL})
            assert all(c["Labels"].get(FLOOR_LABEL) == tag for c in left), "an old one is left"
            assert all(c["State"] == "running" for c in left), "a new one is not running"
        assert sum(running_count(h, FLOOR_LABEL) for h in self.hosts) == self.replicas
        return {
            "seconds": round(seconds, 3),
            "new_all_running_seconds": round(new_done, 3),
            "old_all_removed_seconds": round(max(removed, default=began) - began, 3),
        }

    def remove_all(self) -> None:
        futures = [self.pools[h].submit(self._stop_remove, h, cid) for h, cid in self.running]
        for future in futures:
            future.result()
        self.running = []
        for h in self.hosts:
            h.remove_all_containers(FLOOR_LABEL)  # anything a failed step left


def running_count(host: DockerHost, label: str) -> int:
    api = host.client().api
    return len(api.containers(filters={"label": label, "status": "running"}))


# ---------------------------------------------------------------------- fleet


def app_spec(replicas: int, tag: str, min_ready: str, health: bool) -> AppSpec:
    text = f"""
name: {APP}
image: {image(tag)}
replicas: {replicas}
ports: ["{HTTP_PORT}"]
resources: {{cpu: {CPU}, memory: 32Mi}}
stop_grace_period: {STOP_GRACE}s
placement: spread
update:
  max_surge: 25%
  max_unavailable: 0
  min_ready: {min_ready}
"""
    if health:
        text += f"health:\n  http: http://:{HTTP_PORT}/index.html\n  interval: 500ms\n"
    [spec] = load_documents(text, f"{APP}.yaml")
    return spec


def fleet_containers(hosts: Sequence[DockerHost]) -> list[tuple[str, dict[str, Any]]]:
    """(host, Docker's summary) of every container of the app, running or not."""
    found = []
    for h in hosts:
        for c in h.client().api.containers(all=True, filters={"label": f"{LABEL_APP}={APP}"}):
            found.append((h.name, c))
    return found


def settled(hosts: Sequence[DockerHost], revision: int, tag: str, replicas: int) -> bool:
    """Exactly ``replicas`` containers of the app run ``revision`` (image ``tag``), and
    no other container of the app is left, in any state."""
    found = fleet_containers(hosts)
    ours = [
        c
        for _, c in found
        if c["Labels"].get(LABEL_REVISION) == str(revision) and c["State"] == "running"
    ]
    return len(ours) == len(found) == replicas and all(c["Image"] == image(tag) for c in ours)


def per_host(hosts: Sequence[DockerHost]) -> dict[str, int]:
    counts = dict.fromkeys((h.name for h in hosts), 0)
    for name, c in fleet_containers(hosts):
        counts[name] += c["State"] == "running"
    return counts


def complete(client: FleetClient, revision: int, replicas: int) -> bool:
    info = client.rollout_status(APP)
    if info.revision == revision and info.state == "failed":
        raise RuntimeError(f"the rollout of revision {revision} failed: {info.message}")
    return (
        info.revision == revision
        and info.state == "complete"
        and info.updated_available >= replicas
        and info.available >= replicas
    )


def docker_events(host: DockerHost, since: float, until: float) -> list[dict[str, Any]]:
    """The app's container events on one daemon between two epoch times (dockerd's own
    timestamps), as (seconds, action, revision, name)."""
    stream = host.client().api.events(
        since=f"{since:.9f}",
        until=f"{until:.9f}",  # in the past: the answer ends at once
        decode=True,
        filters={"type": "container", "label": f"{LABEL_APP}={APP}"},
    )
    try:
        raw = list(stream)
    finally:
        stream.close()
    events = []
    for e in raw:
        action = str(e.get("Action") or e.get("status") or "")
        if action not in ("create", "start", "die", "destroy"):
            continue
        attributes = (e.get("Actor") or {}).get("Attributes") or {}
        events.append(
            {
                "t": int(e["timeNano"]) / 1e9,
                "host": host.name,
                "action": action,
                "revision": int(attributes.get(LABEL_REVISION, 0)),
                "name": attributes.get("name", ""),
            }
        )
    return events


_WRITE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO fleet\.controlplane\.replicas: "
    rf"app {APP}: (\d+) replica\(s\) written"
)


def controller_writes(log: Path, since: float, until: float) -> list[tuple[float, int]]:
    """(epoch seconds, replicas written) of the replica controller's commits for the app,
    from the server's log (local time, millisecond resolution)."""
    found = []
    with contextlib.suppress(OSError), open(log, errors="replace") as f:
        for line in f:
            match = _WRITE.match(line)
            if match:
                at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if since <= at <= until:
                    found.append((at, int(match[2])))
    return found


def timeline(
    events: list[dict[str, Any]], writes: list[tuple[float, int]], t0: float, revision: int
) -> tuple[list[dict[str, Any]], list[float]]:
    """The rollout step by step: each commit of the controller, then, until the next one,
    the containers of the new revision created (and when they started) and those of the
    old one stopped and removed, per host (seconds since ``set_image``); and for each new
    container, the seconds from its start to the controller's next commit (its report,
    the status write, min_ready and the controller's look: exact when that commit is the
    one that counts it available, else a lower bound)."""
    created: dict[tuple[str, str], float] = {}
    started: dict[tuple[str, str], float] = {}
    for e in events:
        if e["revision"] == revision and e["action"] in ("create", "start"):
            book = created if e["action"] == "create" else started
            book.setdefault((e["host"], e["name"]), e["t"] - t0)
    commits = sorted(at - t0 for at, _ in writes)
    waits = [
        next(c for c in commits if c > t) - t
        for t in started.values()
        if any(c > t for c in commits)
    ]
    steps = []
    for i, (at, count) in enumerate(writes):
        begin, end = at - t0, (writes[i + 1][0] - t0 if i + 1 < len(writes) else math.inf)
        step: dict[str, Any] = {"controller_commit": round(begin, 3), "replicas_written": count}
        hosts: dict[str, dict[str, Any]] = {}
        news = [k for k, t in created.items() if begin <= t < end]
        for host in sorted({h for h, _ in news} | {e["host"] for e in events}):
            mine = [created[k] for k in news if k[0] == host]
            starts = [started[k] for k in news if k[0] == host and k in started]
            died = [
                e["t"] - t0
                for e in events
                if e["host"] == host
                and e["revision"] != revision
                and e["action"] == "die"
                and begin <= e["t"] - t0 < end
            ]
            gone = [
                e["t"] - t0
                for e in events
                if e["host"] == host
                and e["revision"] != revision
                and e["action"] == "destroy"
                and begin <= e["t"] - t0 < end
            ]
            if not (mine or died or gone):
                continue
            hosts[host] = {
                "new": len(mine),
                "created_from": round(min(mine), 3) if mine else None,
                "started_to": round(max(starts), 3) if starts else None,
                "old_stopped_from": round(min(died), 3) if died else None,
                "old_removed": len(gone),
                "old_removed_to": round(max(gone), 3) if gone else None,
            }
        step["hosts"] = hosts
        firsts = [h["created_from"] for h in hosts.values() if h["new"]]
        lasts = [h["started_to"] for h in hosts.values() if h["started_to"] is not None]
        if firsts and lasts:
            # the push, the agent's look at Docker, its image check and the removals it
            # runs first, before its first create:
            step["commit_to_create_seconds"] = round(min(firsts) - begin, 3)
            # Docker creating and starting them (8 threads per host):
            step["create_to_last_start_seconds"] = round(max(lasts) - min(firsts), 3)
        steps.append(step)
    return steps, waits


def phases(steps: Sequence[dict[str, Any]], waits: Sequence[float]) -> dict[str, float]:
    """Medians of where a step's time goes, over the steps that created containers."""
    found = {
        k: [s[k] for s in steps if k in s]
        for k in ("commit_to_create_seconds", "create_to_last_start_seconds")
    }
    found["start_to_next_commit_seconds"] = list(waits)
    return {f"median_{k}": round(statistics.median(v), 3) for k, v in found.items() if v}


def rollout(
    client: FleetClient,
    hosts: Sequence[DockerHost],
    server_log: Path,
    tag: str,
    replicas: int,
    timeout: float,
) -> dict[str, Any]:
    """One timed rollout to ``tag``, checked through Docker."""
    began_epoch = time.time()
    began = time.perf_counter()
    change = client.set_image(APP, image(tag))
    revision = int(change.revision)
    wait_until(
        lambda: complete(client, revision, replicas),
        timeout,
        interval=POLL,
        what=f"revision {revision} ({tag}) complete with {replicas} available",
    )
    seconds = time.perf_counter() - began
    wait_until(
        lambda: settled(hosts, revision, tag, replicas),
        60,
        interval=POLL,
        what=f"exactly {replicas} running containers of revision {revision} and no other",
    )
    clean = time.perf_counter() - began
    ended_epoch = time.time()
    events = [e for h in hosts for e in docker_events(h, began_epoch - 1, ended_epoch + 0.1)]
    events.sort(key=lambda e: e["t"])
    writes = controller_writes(server_log, began_epoch - 0.01, ended_epoch)
    starts = [e["t"] for e in events if e["action"] == "start" and e["revision"] == revision]
    steps, waits = timeline(events, writes, began_epoch, revision)
    return {
        "image": image(tag),
        "revision": revision,
        "seconds": round(seconds, 3),
        "docker_settled_seconds": round(clean, 3),
        "first_new_start_seconds": round(min(starts) - began_epoch, 3) if starts else None,
        "last_new_start_seconds": round(max(starts) - began_epoch, 3) if starts else None,
        "per_host": per_host(hosts),
        "events": [
            [round(e["t"] - began_epoch, 3), e["host"], e["action"], e["revision"], e["name"]]
            for e in events
        ],
        "steps": steps,
        "phases": phases(steps, waits),
    }


def observe_seconds(host: DockerHost, rounds: int = 5) -> dict[str, Any]:
    """What one look of the agent at Docker costs: ``DockerRuntime.list_containers`` (a
    list, then an inspect per fleet container, one after the other), median of rounds."""
    runtime = DockerRuntime(host.docker_url)
    try:
        took, count = [], 0
        for _ in range(rounds):
            began = time.perf_counter()
            count = len(runtime.list_containers())
            took.append(time.perf_counter() - began)
    finally:
        runtime.client.close()
    return {
        "host": host.name,
        "containers": count,
        "median_seconds": round(statistics.median(took), 4),
        "max_seconds": round(max(took), 4),
    }


# ---------------------------------------------------------------------- output


def table(result: dict[str, Any]) -> str:
    m, floor, fleet = result["machine"], result["floor"], result["fleet"]
    target = result["target"]
    rows = [
        ("figure", "seconds", "note"),
        (
            "floor: Docker swap",
            f"{floor['median_seconds']:.2f}",
            f"create+start {result['input']['replicas']} new, stop+remove "
            f"{result['input']['replicas']} old, 8 threads/host (median of "
            f"{len(floor['swaps'])}, max {floor['max_seconds']:.2f})",
        ),
        (
            "fleet rollout",
            f"{fleet['median_seconds']:.2f}",
            f"set_image -> complete, {fleet['replicas']} updated+available (median of "
            f"{len(fleet['runs'])}, max {fleet['max_seconds']:.2f})",
        ),
        (
            "  Docker settled",
            f"{fleet['docker_settled_median_seconds']:.2f}",
            "set_image -> only new containers left (median)",
        ),
        (
            "  agent's look",
            f"{fleet['agent_observe_after']['median_seconds']:.2f}",
            f"list + {fleet['agent_observe_after']['containers']} inspects one by one on "
            f"{fleet['agent_observe_after']['host']} (after the runs; median of 5)",
        ),
        ("ratio", f"{result['ratio']:.2f}x", "fleet median / floor median"),
        (
            "target",
            f"{target['seconds']:.2f}",
            f"{TARGET_FACTOR} x floor + min_ready {target['min_ready_seconds']:g} s: "
            + ("PASS" if target["met"] else "FAIL")
            + f" (max: {'PASS' if target['met_by_max'] else 'FAIL'})",
        ),
    ]
    width = [max(len(row[i]) for row in rows) + 2 for i in range(2)]
    lines = [describe(m), ""]
    for i, row in enumerate(rows):
        lines.append(f"{row[0]:<{width[0]}}{row[1]:>{width[1] - 2}}  {row[2]}")
        if i == 0:
            lines.append("-" * max(len(r[2]) + sum(width) for r in rows))
    return "\n".join(lines)


def _at(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.2f}"


def steps_text(run: dict[str, Any]) -> str:
    lines = [
        f"  run to {run['image']} (revision {run['revision']}): complete at "
        f"{run['seconds']:.2f} s, Docker settled at {run['docker_settled_seconds']:.2f} s"
    ]
    for s in run["steps"]:
        parts = []
        for host, h in s["hosts"].items():
            what = []
            if h["new"]:
                what.append(f"{h['new']} new {_at(h['created_from'])}-{_at(h['started_to'])}")
            if h["old_stopped_from"] is not None and not h["old_removed"]:
                what.append(f"old stopping from {_at(h['old_stopped_from'])}")
            if h["old_removed"]:
                what.append(
                    f"{h['old_removed']} old stopped from {_at(h['old_stopped_from'])}, "
                    f"removed by {_at(h['old_removed_to'])}"
                )
            parts.append(f"{host}: {', '.join(what)}")
        lines.append(
            f"    {s['controller_commit']:6.2f} s commit ({s['replicas_written']} replicas)"
            + (f"; {'; '.join(parts)}" if parts else "")
        )
    p = run["phases"]
    if p:
        lines.append(
            "    medians per step: commit -> first create "
            f"{p.get('median_commit_to_create_seconds', math.nan):.2f} s, first create -> "
            f"last start {p.get('median_create_to_last_start_seconds', math.nan):.2f} s, "
            "a start -> the next commit "
            f"{p.get('median_start_to_next_commit_seconds', math.nan):.2f} s"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1, help="rollouts (v1 -> v2 -> v1 ...)")
    parser.add_argument("--min-ready", default="0s", help="update.min_ready, e.g. 0s or 1s")
    parser.add_argument("--health", action="store_true", help="an http check every 0.5 s")
    parser.add_argument("--timeout", type=float, default=300.0, help="per rollout, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs' directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces and a dockerd per host")
    if args.runs < 1 or args.replicas < 1:
        raise SystemExit("--runs and --replicas must be at least 1")
    spec = app_spec(args.replicas, "v1", args.min_ready, args.health)  # validates the options
    stop_on_sigterm()

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-rollout-"))
    pool: HostPool | None = None
    etcd: EtcdServer | None = None
    server: FleetServerProcess | None = None
    agents: list[FleetAgentProcess] = []
    client: FleetClient | None = None
    floor: Floor | None = None
    ok = False
    try:
        pki = TestPKI(work / "pki")
        etcd = EtcdServer().start()
        pool = HostPool(HOSTS, prefix=f"rb{os.getpid() % 100000}").start()
        hosts = pool.hosts
        for h in hosts:  # straight into each daemon: no registry, no pulls
            for tag, index in VERSIONS.items():
                ensure_image(h.client(), IMAGE_REPO, tag, index)
        result: dict[str, Any] = {
            "input": {
                "replicas": args.replicas,
                "hosts": HOSTS,
                "images": [image(t) for t in VERSIONS],
                "images_loaded": "imported into both daemons (no registry, no pulls)",
                "resources": {"cpu": CPU, "memory_bytes": MEMORY},
                "port": f"{HTTP_PORT}/tcp on an ephemeral host port",
                "stop_grace_seconds": STOP_GRACE,
                "threads_per_host": THREADS,
                "update": spec.update.model_dump(mode="json"),
                "placement": spec.placement,
                "health": spec.health.model_dump(mode="json") if spec.health else None,
                "shutdown_delay_seconds": spec.shutdown_delay,
                "runs": args.runs,
            },
            "machine": machine(hosts[0].client()),
        }

        n = args.replicas
        print(f"hosts {', '.join(h.name for h in hosts)} up; floor: Docker alone, {n} ...")
        floor = Floor(hosts, n)
        created = floor.create("v1")
        swaps = [floor.swap("v2" if run % 2 == 0 else "v1") for run in range(args.runs)]
        floor.remove_all()
        floor.close()
        floor = None
        floor_seconds = [s["seconds"] for s in swaps]
        result["floor"] = {
            "create_start_v1_seconds": round(created, 3),
            "swaps": swaps,
            "median_seconds": round(statistics.median(floor_seconds), 3),
            "max_seconds": round(max(floor_seconds), 3),
        }
        print(f"  swap: {', '.join(f'{s:.2f} s' for s in floor_seconds)}")

        server = FleetServerProcess(etcd.endpoint, f"/bench-rollout-{os.getpid()}/", work, pki)
        server.start()
        for h in hosts:
            agent = FleetAgentProcess(
                [server.address],
                h.name,
                h.docker_url,
                work,
                pki,
                extra_args=["--advertise-address", h.address],
            )
            agents.append(agent.start())
        client = server.client()
        fleet = client
        server.process.wait_ready(
            lambda: len([h for h in fleet.hosts() if h.connected]) == HOSTS,
            30,
            what="both agents",
        )

        print(f"fleet: apply {n} replicas of v1 ...")
        applied = time.perf_counter()
        client.apply([spec])
        wait_until(lambda: complete(fleet, 1, n), args.timeout, interval=POLL, what="v1 complete")
        apply_seconds = time.perf_counter() - applied
        wait_until(lambda: settled(hosts, 1, "v1", n), 60, interval=POLL, what=f"{n} running of v1")
        runs = []
        for run in range(args.runs):
            tag = "v2" if run % 2 == 0 else "v1"
            print(f"  rollout {run + 1}/{args.runs} to {tag} ...")
            runs.append(rollout(client, hosts, server.process.log_path, tag, n, args.timeout))
            print(steps_text(runs[-1]))
        fleet_seconds = [r["seconds"] for r in runs]
        observe = observe_seconds(hosts[0])
        result["fleet"] = {
            "replicas": n,
            "apply_v1_seconds": round(apply_seconds, 3),
            "runs": runs,
            "median_seconds": round(statistics.median(fleet_seconds), 3),
            "max_seconds": round(max(fleet_seconds), 3),
            "docker_settled_median_seconds": round(
                statistics.median(r["docker_settled_seconds"] for r in runs), 3
            ),
            "agent_observe_after": observe,
        }
        floor_median = result["floor"]["median_seconds"]
        target = TARGET_FACTOR * floor_median + spec.update.min_ready
        result["ratio"] = round(result["fleet"]["median_seconds"] / floor_median, 3)
        result["target"] = {
            "seconds": round(target, 3),
            "rule": f"fleet median <= {TARGET_FACTOR} x floor median + update.min_ready",
            "min_ready_seconds": spec.update.min_ready,
            "met": result["fleet"]["median_seconds"] <= target,
            "met_by_max": result["fleet"]["max_seconds"] <= target,
        }
        ended(result["machine"])
        result["run_seconds"] = round(time.monotonic() - began, 1)

        print()
        print(table(result))
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"rollout-{datetime.now():%Y%m%d}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {path} ({result['run_seconds']:.0f} s)")
        ok = True
    finally:
        if not ok and server is not None:
            print("server log tail:\n" + server.process.log_tail(60))
            for agent in agents:
                print(f"agent {agent.host_id} log tail:\n" + agent.process.log_tail(30))
        if floor is not None:
            quietly("floor threads", floor.close)
        if client is not None:
            quietly("client", client.close)
        for agent in agents:
            quietly(f"agent {agent.host_id}", agent.stop)
        if server is not None:
            quietly("server", server.stop)
        if pool is not None:
            quietly("host pool", pool.close)
        if etcd is not None:
            quietly("etcd", etcd.close)
        if args.keep_logs:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
