"""Scale, small enough for the suite: 200 hollow hosts (the real agent over a simulated
runtime, ``fleet.testing.hollow``) and 5,000 replicas through a real control plane and
a real etcd. Fails when the control plane's behaviour breaks at size: every replica
placed exactly once, no host over-committed, all of them reported running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from fleet.spec import load_documents
from fleet.testing import EtcdServer, wait_until
from fleet.testing.fleetprocs import FleetServerProcess
from tests.helpers import etcd_prefix

HOSTS, APPS, PER_APP = 200, 5, 1000  # 5,000 replicas
CPUS, MEMORY = 4.0, 8 << 30  # each hollow host


def test_200_hollow_hosts_run_5000_replicas_each_placed_once(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    prefix = "/t-scale/"
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, None).start()
    hollow_log = (tmp_path / "hollow.log").open("w")
    hollow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet.testing.hollow",
            "--server",
            server.address,
            "--hosts",
            str(HOSTS),
            "--insecure",
            "--cpus",
            str(CPUS),
            "--memory-gib",
            str(MEMORY >> 30),
            "--spread",
            "2",
        ],
        stdout=hollow_log,
        stderr=subprocess.STDOUT,
    )
    client = server.client()
    try:
        wait_until(
            lambda: len([h for h in client.hosts() if h.connected]) == HOSTS,
            60,
            what=f"{HOSTS} hollow hosts",
        )
        docs = "---\n".join(
            f"name: app{i}\nimage: img:v1\nreplicas: {PER_APP}\n"
            f"resources: {{cpu: 0.1, memory: 64Mi}}\n"
            for i in range(APPS)
        )
        began = time.monotonic()
        client.apply(load_documents(docs, "apps.yaml"))

        def all_running() -> bool:
            return sum(a.running for a in client.apps()) == APPS * PER_APP

        wait_until(all_running, 180, interval=0.5, what="5,000 replicas reported running")
        print(f"5,000 replicas running {time.monotonic() - began:.1f}s after the apply")

        # Read back from etcd: each slot once, on a known host, within its capacity.
        keys = etcd_prefix(etcd_server, prefix)
        replicas = [json.loads(v) for k, v in keys.items() if "/replicas/" in k]
        assert len(replicas) == APPS * PER_APP
        assert len({(r["app"], r["slot"]) for r in replicas}) == APPS * PER_APP
        cpu: dict[str, float] = defaultdict(float)
        memory: dict[str, int] = defaultdict(int)
        for replica in replicas:
            cpu[replica["host"]] += replica["resources"]["cpu"]
            memory[replica["host"]] += replica["resources"]["memory"]
        assert all(c <= CPUS + 1e-9 for c in cpu.values()), max(cpu.values())
        assert all(m <= MEMORY for m in memory.values()), max(memory.values())
        # What the agents report: each replica runs on exactly one host, the one placed.
        placed = {(r["app"], r["slot"]): r["host"] for r in replicas}
        reported: Counter[tuple[str, int]] = Counter()
        for key, value in keys.items():
            if "/reports/" not in key:
                continue  # reports/<host>/<app>/<slot>/<revision>: one container each
            container = json.loads(value)
            host = key.split("/reports/")[1].split("/")[0]
            if container["state"] == "running":
                where = (container["app"], container["slot"])
                reported[where] += 1
                assert placed[where] == host, where
        assert len(reported) == APPS * PER_APP
        assert set(reported.values()) == {1}, "a replica runs twice"
    finally:
        hollow.terminate()
        hollow.wait(30)
        hollow_log.close()
        client.close()
        server.stop()
        print(server.process.log_tail(20))
