"""Agent benchmark: one fleet agent keeping 50 containers on one Docker host.

A real etcd, ``fleet server`` and ``fleet agent`` (processes, mutual TLS) and one docker
host in a network namespace with its own dockerd (``fleet.testing``). In one run:

1. an app of 50 replicas (busybox, ``sleep 3600 & wait``) from ``apply`` to 50 running,
   beside the floor: Docker SDK create+start of 50 alike containers on the same daemon,
   sequentially and with 8 threads (the agent's parallelism);
2. the agent at rest with those 50 for 10 s: resident memory (VmRSS) and cpu share
   (utime+stime over wall time, % of one core), dockerd's share in the same window;
3. one live-usage round (``UsageSampler.sample``, ``one_shot`` stats, 8 threads) over
   the 50, median and max of 5 rounds after one warm-up, beside Docker's plain
   ``stats(stream=False)`` timed on 3 containers and extrapolated to 50;
4. exit to restart of a ``restart: always`` replica whose command fails after 1 s:
   the first restart only, from Docker's own ``die`` and ``start`` events, over 5 fresh
   containers, raw and less the agent's first backoff (1 s), beside Docker's own
   ``--restart always`` measured the same way (its first delay is 100 ms).

Figures go to benchmarks/results/agent.json.

    .venv/bin/python benchmarks/agent.py [--replicas N] [--rest SECONDS] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker.errors
from _harness import describe, machine, quietly

from fleet.agent.restarts import Backoff
from fleet.agent.stats import UsageSampler
from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image

IMAGE_REPO, IMAGE_TAG = "fleet-bench/busybox", "v1"
IMAGE = f"{IMAGE_REPO}:{IMAGE_TAG}"
SLEEP_CMD = ["sh", "-c", "sleep 3600 & wait"]
CRASH_CMD = ["sh", "-c", "sleep 1; exit 1"]
REST_APP, CRASH_APP = "rest", "crash"
FLOOR_LABEL = "fleet-bench.floor"
THREADS = 8  # the agent's parallel_tasks and the sampler's threads
STATS_ROUNDS = 5
PLAIN_STATS = 3  # containers timed with Docker's plain (not one_shot) stats
RESTART_ROUNDS = 5
FLEET_FIRST_DELAY = Backoff().delay(0)  # the agent's first backoff, 1 s
DOCKER_FIRST_DELAY = 0.1  # dockerd's restart manager starts at 100 ms
MiB = 1 << 20


# ---------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_bytes(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def at_rest(pids: dict[str, int], seconds: float) -> dict[str, dict[str, float]]:
    """cpu share (% of one core) of each process over ``seconds`` of wall time, with its
    resident memory sampled every second (mean, last, and the kernel's peak)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    rss: dict[str, list[int]] = {name: [] for name in pids}
    started = time.monotonic()
    end = started + seconds
    while (now := time.monotonic()) < end:
        for name, pid in pids.items():
            rss[name].append(status_bytes(pid, "VmRSS"))
        time.sleep(min(1.0, end - now))
    wall = time.monotonic() - started
    result = {}
    for name, pid in pids.items():
        rss[name].append(status_bytes(pid, "VmRSS"))
        result[name] = {
            "cpu_percent": round(100 * (cpu_seconds(pid) - before[name]) / wall, 3),
            "rss_mean_bytes": round(statistics.fmean(rss[name])),
            "rss_last_bytes": rss[name][-1],
            "rss_peak_bytes": status_bytes(pid, "VmHWM"),
            "seconds": round(wall, 2),
        }
    return result


# ---------------------------------------------------------------------- docker helpers


def running(docker_client: Any, label: str) -> int:
    return len(docker_client.api.containers(filters={"label": label, "status": "running"}))


def fleet_ids(docker_client: Any, app: str) -> list[str]:
    found = docker_client.api.containers(all=True, filters={"label": f"fleet.app={app}"})
    return [c["Id"] for c in found]


def docker_floor(docker_client: Any, count: int, threads: int) -> float:
    """Seconds for the Docker SDK alone to create and start ``count`` containers like the
    agent's (a name, labels, restart ``no``, no-new-privileges), then removes them."""
    api = docker_client.api
    tag = f"{FLOOR_LABEL}={threads}"

    def one(i: int) -> str:
        host_config = api.create_host_config(
            restart_policy={"Name": "no"}, security_opt=["no-new-privileges"]
        )
        created = api.create_container(
            IMAGE,
            command=SLEEP_CMD,
            name=f"floor-{threads}-{i}",
            labels={FLOOR_LABEL: str(threads)},
            host_config=host_config,
        )
        api.start(created["Id"])
        return str(created["Id"])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        ids = list(pool.map(one, range(count)))
    seconds = time.perf_counter() - started
    assert running(docker_client, tag) == count, "the floor's containers are not all running"
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(lambda cid: api.remove_container(cid, force=True), ids))
    return seconds


def first_restart(docker_client: Any, container_id: str, since: float, timeout: float) -> float:
    """Seconds from the container's first ``die`` to the ``start`` after it, both stamped
    by dockerd (``timeNano`` of its events)."""
    deadline = time.monotonic() + timeout
    while True:
        stream = docker_client.api.events(
            since=f"{since:.9f}",
            until=f"{time.time():.9f}",  # in the past: the answer ends at once
            decode=True,
            filters={"container": container_id},
        )
        try:
            events = [(e.get("Action") or e.get("status"), int(e["timeNano"])) for e in stream]
        finally:
            stream.close()
        died = next((t for action, t in events if action == "die"), None)
        if died is not None:
            start = next((t for action, t in events if action == "start" and t > died), None)
            if start is not None:
                return (start - died) / 1e9
        if time.monotonic() > deadline:
            raise TimeoutError(f"no restart of {container_id[:12]} after {timeout}s: {events}")
        time.sleep(0.2)


# ---------------------------------------------------------------------- the measurements


def apply_and_wait(client: FleetClient, docker_client: Any, replicas: int) -> float:
    text = (
        f"name: {REST_APP}\nimage: {IMAGE}\nreplicas: {replicas}\n"
        f"command: {json.dumps(SLEEP_CMD)}\nrestart: always\nstop_grace_period: 1s\n"
    )
    specs = load_documents(text, f"{REST_APP}.yaml")
    label = f"fleet.app={REST_APP}"
    started = time.perf_counter()
    client.apply(specs)
    wait_until(
        lambda: running(docker_client, label) >= replicas,
        120,
        interval=0.1,
        what=f"{replicas} running replicas",
    )
    return time.perf_counter() - started


def stats_rounds(docker_client: Any, expected: int) -> dict[str, Any]:
    sampler = UsageSampler(lambda: docker_client, threads=THREADS)
    sampler.sample()  # warm-up: connections, the first cpu counters
    rounds = [sampler.sample() for _ in range(STATS_ROUNDS)]
    assert all(r.containers >= expected for r in rounds), [r.containers for r in rounds]
    seconds = [r.seconds for r in rounds]
    ids = fleet_ids(docker_client, REST_APP)[:PLAIN_STATS]
    plain, one_shot = [], []
    for container_id in ids:
        began = time.perf_counter()
        docker_client.api.stats(container_id, stream=False, one_shot=True)
        one_shot.append(time.perf_counter() - began)
        began = time.perf_counter()
        docker_client.api.stats(container_id, stream=False)
        plain.append(time.perf_counter() - began)
    each = statistics.fmean(plain)
    return {
        "containers": rounds[-1].containers,
        "rounds_seconds": [round(s, 4) for s in seconds],
        "median_seconds": round(statistics.median(seconds), 4),
        "max_seconds": round(max(seconds), 4),
        # One one_shot call alone, on the same containers: what a sampler thread waits.
        "one_shot_per_container_seconds": round(statistics.fmean(one_shot), 4),
        "plain_stats_seconds": [round(s, 4) for s in plain],
        "plain_per_container_seconds": round(each, 4),
        # Extrapolated, not measured: the per-container cost times the containers.
        "plain_extrapolated_sequential_seconds": round(each * expected, 2),
        "plain_extrapolated_8_threads_seconds": round(each * math.ceil(expected / THREADS), 2),
    }


def fleet_restart(client: FleetClient, docker_client: Any) -> float:
    """Apply a fresh one-replica app that fails after 1 s; the gap of its first restart;
    then delete the app and wait for its container to go."""
    text = (
        f"name: {CRASH_APP}\nimage: {IMAGE}\ncommand: {json.dumps(CRASH_CMD)}\n"
        "restart: always\nstop_grace_period: 1s\n"
    )
    since = time.time() - 1
    client.apply(load_documents(text, f"{CRASH_APP}.yaml"))
    [container_id] = wait_until(
        lambda: fleet_ids(docker_client, CRASH_APP), 30, interval=0.1, what="the crash replica"
    )
    gap = first_restart(docker_client, container_id, since, 30)
    client.delete_app(CRASH_APP)
    wait_until(lambda: not fleet_ids(docker_client, CRASH_APP), 30, what="the crash replica to go")
    return gap


def docker_restart(docker_client: Any) -> float:
    since = time.time() - 1
    container = docker_client.containers.run(
        IMAGE,
        CRASH_CMD,
        restart_policy={"Name": "always"},
        detach=True,
        labels={FLOOR_LABEL: "restart"},
    )
    try:
        return first_restart(docker_client, container.id, since, 30)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def summary(gaps: Sequence[float], delay: float) -> dict[str, Any]:
    return {
        "gaps_seconds": [round(g, 4) for g in gaps],
        "median_seconds": round(statistics.median(gaps), 4),
        "min_seconds": round(min(gaps), 4),
        "max_seconds": round(max(gaps), 4),
        "first_delay_seconds": delay,
        "median_minus_delay_seconds": round(statistics.median(gaps) - delay, 4),
        "max_minus_delay_seconds": round(max(gaps) - delay, 4),
    }


# ---------------------------------------------------------------------- output


def table(result: dict[str, Any]) -> str:
    m, n = result["machine"], result["input"]["replicas"]
    apply, rest, stats = result["apply"], result["at_rest"], result["stats_round"]
    fleet_r, docker_r = result["restart"]["fleet"], result["restart"]["docker"]
    agent, dockerd = rest["agent"], rest["dockerd"]

    def ms(seconds: float) -> str:
        return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:,.0f} ms"

    rows = [
        ("figure", "fleet agent", "Docker, same run and daemon"),
        (
            f"apply -> {n} running",
            f"{apply['fleet_seconds']:.2f} s",
            f"{apply['docker_sequential_seconds']:.2f} s create+start sequential; "
            f"{apply['docker_8_threads_seconds']:.2f} s with 8 threads",
        ),
        (
            f"agent RSS at rest ({n} ctrs)",
            f"{agent['rss_mean_bytes'] / MiB:.1f} MiB (peak {agent['rss_peak_bytes'] / MiB:.1f})",
            f"with 0 containers: {rest['agent_rss_empty_bytes'] / MiB:.1f} MiB",
        ),
        (
            f"cpu at rest ({agent['seconds']:.0f} s)",
            f"{agent['cpu_percent']:.2f}% of one core",
            f"dockerd in the same window: {dockerd['cpu_percent']:.2f}%",
        ),
        (
            f"one stats round ({stats['containers']} ctrs)",
            f"median {ms(stats['median_seconds'])}, max {ms(stats['max_seconds'])}",
            f"one_shot alone {ms(stats['one_shot_per_container_seconds'])} each; plain stats "
            f"{ms(stats['plain_per_container_seconds'])} each (n={PLAIN_STATS}), "
            f"~{stats['plain_extrapolated_sequential_seconds']:.0f} s for {n} sequentially "
            f"(extrapolated)",
        ),
        (
            f"exit -> restart, raw (n={len(fleet_r['gaps_seconds'])})",
            f"median {ms(fleet_r['median_seconds'])}, max {ms(fleet_r['max_seconds'])}",
            f"--restart always: median {ms(docker_r['median_seconds'])}, "
            f"max {ms(docker_r['max_seconds'])}",
        ),
        (
            "  less the first backoff",
            f"median {ms(fleet_r['median_minus_delay_seconds'])} (1 s backoff)",
            f"median {ms(docker_r['median_minus_delay_seconds'])} (100 ms delay)",
        ),
    ]
    width = [max(len(row[i]) for row in rows) + 2 for i in range(2)]
    lines = [describe(m), ""]
    for i, row in enumerate(rows):
        lines.append(f"{row[0]:<{width[0]}}{row[1]:<{width[1]}}{row[2]}")
        if i == 0:
            lines.append("-" * (sum(width) + len(rows[0][2])))
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--rest", type=float, default=10.0, help="seconds at rest")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces and a dockerd of its own")

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-agent-"))
    pool: HostPool | None = None
    etcd: EtcdServer | None = None
    server: FleetServerProcess | None = None
    agent: FleetAgentProcess | None = None
    client: FleetClient | None = None
    ok = False
    try:
        pki = TestPKI(work / "pki")
        etcd = EtcdServer().start()
        pool = HostPool(1).start()
        host = pool.hosts[0]
        dock = host.client()
        ensure_image(dock, IMAGE_REPO, IMAGE_TAG, "fleet agent benchmark\n", SLEEP_CMD)
        n = args.replicas
        result: dict[str, Any] = {
            "input": {"replicas": n, "image": IMAGE, "command": SLEEP_CMD},
            "machine": machine(dock),
        }
        print(f"host {host.name} up ({host.docker_url}); Docker alone: {n} create+start ...")
        sequential = docker_floor(dock, n, 1)
        parallel = docker_floor(dock, n, THREADS)

        server = FleetServerProcess(etcd.endpoint, "/bench/", work, pki).start()
        agent = FleetAgentProcess([server.address], host.name, host.docker_url, work, pki)
        agent.start()
        client = server.client()
        fleet = client

        def connected() -> bool:
            return any(h.connected for h in fleet.hosts() if h.host_id == host.name)

        agent.process.wait_ready(connected, 30, what="the agent to connect")
        agent_pid = agent.process.pid
        dockerd_pid = host.daemon_pid
        assert agent_pid is not None and dockerd_pid is not None
        time.sleep(3)  # a few stats rounds of an empty host
        rss_empty = status_bytes(agent_pid, "VmRSS")

        print(f"fleet: apply {n} replicas ...")
        result["apply"] = {
            "fleet_seconds": round(apply_and_wait(client, dock, n), 3),
            "docker_sequential_seconds": round(sequential, 3),
            "docker_8_threads_seconds": round(parallel, 3),
        }
        time.sleep(5)  # let the agent's reports and the first stats rounds settle
        print(f"at rest for {args.rest:g} s ...")
        rest: dict[str, Any] = at_rest({"agent": agent_pid, "dockerd": dockerd_pid}, args.rest)
        rest["agent_rss_empty_bytes"] = rss_empty
        result["at_rest"] = rest
        assert running(dock, f"fleet.app={REST_APP}") == n, "a replica stopped while at rest"

        print("stats rounds ...")
        result["stats_round"] = stats_rounds(dock, n)

        print(f"first restarts, {RESTART_ROUNDS} fresh containers each ...")
        fleet_gaps, docker_gaps = [], []
        for _ in range(RESTART_ROUNDS):  # interleaved, so drift hits both alike
            fleet_gaps.append(fleet_restart(client, dock))
            docker_gaps.append(docker_restart(dock))
        result["restart"] = {
            "fleet": summary(fleet_gaps, FLEET_FIRST_DELAY),
            "docker": summary(docker_gaps, DOCKER_FIRST_DELAY),
            "containers_running_meanwhile": n,
        }
        result["run_seconds"] = round(time.monotonic() - began, 1)

        print()
        print(table(result))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "agent.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.out / 'agent.json'} ({result['run_seconds']:.0f} s)")
        ok = True
    finally:
        if not ok and agent is not None:
            print("agent log tail:\n" + agent.process.log_tail(40))
        if client is not None:
            quietly("client", client.close)
        if agent is not None:
            quietly("agent", agent.stop)
        if server is not None:
            quietly("server", server.stop)
        if pool is not None:
            quietly("host pool", pool.close)
        if etcd is not None:
            quietly("etcd", etcd.close)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
