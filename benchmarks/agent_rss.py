"""Agent memory at rest, plain and in its container: 50 containers on one Docker host.

A real etcd and ``fleet server`` and one docker host in a network namespace with its
own dockerd (``fleet.testing``). An app of 50 replicas (busybox, ``sleep 3600 & wait``)
runs there, kept first by the plain agent (``python -m fleet agent`` from this
virtualenv, a process on the machine), then by the agent from fleet's image (the
README's run line, ``fleet.testing.agentcontainer``), which takes the same 50 over.
Each rests for a while with them; its resident memory (VmRSS of its process, sampled
every second) and cpu share are measured alike, and the container's cgroup memory (what
``docker stats`` shows: the process and the page cache it caused) beside them.

Figures go to benchmarks/results/agent-rss.json.

    .venv/bin/python benchmarks/agent_rss.py [--replicas N] [--rest SECONDS] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import describe, ended, machine, quietly
from agent import MiB, at_rest, running

from fleet.agent.stats import memory_in_use
from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, wait_until
from fleet.testing.agentcontainer import AgentFiles, agent_container, gateway_pki
from fleet.testing.fleetimage import ensure_fleet_image
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from fleet.testing.procs import free_port

IMAGE_REPO, IMAGE_TAG = "fleet-bench/busybox", "v1"
IMAGE = f"{IMAGE_REPO}:{IMAGE_TAG}"
SLEEP_CMD = ["sh", "-c", "sleep 3600 & wait"]
APP = "rest"
SETTLE = 5.0  # seconds for reports and the first stats rounds before measuring


def _spec(replicas: int) -> str:
    return (
        f"name: {APP}\nimage: {IMAGE}\nreplicas: {replicas}\n"
        "resources: {cpu: 0.01, memory: 8Mi}\n"
    )


def _connected(client: FleetClient, host_id: str) -> bool:
    return any(h.host_id == host_id and h.connected for h in client.hosts())


def table(result: dict[str, Any]) -> str:
    plain, boxed = result["plain"], result["container"]
    lines = [
        describe(result["machine"]),
        f"{result['input']['replicas']} containers on the host, "
        f"{plain['seconds']:.0f} s at rest each",
        "",
        "| agent | RSS mean (peak) | cpu at rest | cgroup memory |",
        "|---|---|---|---|",
        f"| plain (venv, Python {result['machine']['python']}) | "
        f"{plain['rss_mean_bytes'] / MiB:.1f} MiB ({plain['rss_peak_bytes'] / MiB:.1f}) | "
        f"{plain['cpu_percent']:.1f}% | - |",
        f"| container ({result['image']}) | "
        f"{boxed['rss_mean_bytes'] / MiB:.1f} MiB ({boxed['rss_peak_bytes'] / MiB:.1f}) | "
        f"{boxed['cpu_percent']:.1f}% | {boxed['cgroup_memory_bytes'] / MiB:.1f} MiB |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=50)
    parser.add_argument("--rest", type=float, default=20.0, help="seconds at rest, each")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces and a dockerd of its own")

    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-agent-rss-"))
    pool: HostPool | None = None
    etcd: EtcdServer | None = None
    server: FleetServerProcess | None = None
    plain: FleetAgentProcess | None = None
    client: FleetClient | None = None
    boxed: Any = None
    ok = False
    try:
        etcd = EtcdServer().start()
        pool = HostPool(1).start()
        host = pool.hosts[0]
        dock = host.client()
        print("fleet's image (built once, from this tree) ...")
        image = ensure_fleet_image(host.docker_url)
        ensure_image(dock, IMAGE_REPO, IMAGE_TAG, "fleet agent rss\n", SLEEP_CMD)
        pki = gateway_pki(work / "pki", pool.gateway)
        listen = f"{pool.gateway}:{free_port(pool.gateway)}"
        server = FleetServerProcess(etcd.endpoint, "/bench-rss/", work, pki, listen=listen)
        server.start()
        client = server.client()
        fleet = client
        n = args.replicas
        result: dict[str, Any] = {
            "input": {"replicas": n, "image": IMAGE, "command": SLEEP_CMD, "rest": args.rest},
            "machine": machine(dock),
            "image": image,
        }

        print(f"plain agent: {n} replicas ...")
        plain = FleetAgentProcess([listen], host.name, host.docker_url, work, pki).start()
        plain.process.wait_ready(
            lambda: _connected(fleet, host.name), 30, what="the plain agent to connect"
        )
        client.apply(load_documents(_spec(n), "rest.yaml"))
        wait_until(lambda: running(dock, f"fleet.app={APP}") == n, 180, what=f"{n} running")
        time.sleep(SETTLE)
        assert plain.process.pid is not None
        result["plain"] = at_rest({"agent": plain.process.pid}, args.rest)["agent"]
        plain.stop()

        print("the agent in its container takes them over ...")
        files = AgentFiles.make(work, host.name, pki, listen)
        boxed = agent_container(host, image, files)
        wait_until(lambda: b"registered with" in boxed.logs(), 60, what="the agent's container")
        time.sleep(SETTLE)
        assert running(dock, f"fleet.app={APP}") == n, "the container agent changed the 50"
        boxed.reload()
        pid = int(boxed.attrs["State"]["Pid"])
        measured = at_rest({"agent": pid}, args.rest)["agent"]
        stats = dock.api.stats(boxed.id, stream=False)
        measured["cgroup_memory_bytes"] = memory_in_use(stats)
        measured["processes"] = len(dock.api.top(boxed.id)["Processes"])
        result["container"] = measured
        assert running(dock, f"fleet.app={APP}") == n, "a replica stopped while at rest"
        ended(result["machine"])
        result["run_seconds"] = round(time.monotonic() - began, 1)

        print()
        print(table(result))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "agent-rss.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.out / 'agent-rss.json'} ({result['run_seconds']:.0f} s)")
        ok = True
    finally:
        if client is not None:
            quietly("client", client.close)
        if boxed is not None:
            quietly("agent container", lambda: boxed.remove(force=True))
        if plain is not None:
            quietly("plain agent", plain.stop)
        if server is not None:
            quietly("server", server.stop)
        if pool is not None:
            quietly("pool", pool.close)
        if etcd is not None:
            quietly("etcd", etcd.close)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"left {work} for a look")


if __name__ == "__main__":
    main()
