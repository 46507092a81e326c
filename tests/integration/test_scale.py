"""Scale, small enough for the suite: 200 hollow hosts (the real agent over a simulated
runtime, ``fleet.testing.hollow``) and 5,000 replicas through a real control plane and
a real etcd. Fails when the control plane's behaviour breaks at size (counts and
order, never timings: those are ``benchmarks/scale.py``'s):

- every replica placed exactly once, no host over-committed, all reported running;
- reads answer while the apply is placed and started (#24 item 4: they must not queue
  behind the controller's rounds or the report writes);
- 20 hosts killed at once: exactly their replicas run elsewhere, each once, and no
  other replica moves (#24 item 2);
- the control plane killed and started again with every host connected: every agent
  reconnects, no host is announced down and no replica moves (#24 item 6).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from fleet.client import FleetClient
from fleet.controlplane.server import AGENTS_BACK_WITHIN
from fleet.errors import FleetError
from fleet.spec import load_documents
from fleet.testing import EtcdServer, wait_until
from fleet.testing.fleetprocs import FleetServerProcess
from tests.helpers import etcd_prefix, hollow_hosts, tcp_peers

HOSTS, VICTIMS = 180, 20  # hollow hosts: kept / killed at once
APPS, PER_APP = 5, 1000  # 5,000 replicas
CPUS, MEMORY = 4.0, 8 << 30  # each hollow host
PREFIX = "/t-scale/"
RESCHEDULE_AFTER = 2  # seconds a down host's replicas wait before they move


class ReadSampler:
    """`get apps`, `get hosts` and `endpoints` over and over in a thread of their own,
    each with a deadline: what answered and what failed."""

    def __init__(self, client: FleetClient) -> None:
        self.client = client
        self.answered: Counter[str] = Counter()
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        reads: dict[str, Callable[[], object]] = {
            "apps": self.client.apps,
            "hosts": self.client.hosts,
            "endpoints": lambda: self.client.endpoints("app0"),
        }
        while not self._stop.is_set():
            for what, read in reads.items():
                try:
                    read()
                    self.answered[what] += 1
                except FleetError as error:
                    self.failed.append(f"{what}: {error}")
            self._stop.wait(0.2)


def placements(etcd: EtcdServer) -> dict[tuple[str, int], dict[str, object]]:
    """Every replica record in etcd by (app, slot)."""
    keys = etcd_prefix(etcd, PREFIX)
    found = [json.loads(v) for k, v in keys.items() if "/replicas/" in k]
    return {(r["app"], r["slot"]): r for r in found}


def running_reports(etcd: EtcdServer) -> Counter[tuple[str, int, str]]:
    """(app, slot, host) of every container an agent reports running, counted."""
    found: Counter[tuple[str, int, str]] = Counter()
    for key, value in etcd_prefix(etcd, PREFIX).items():
        if "/reports/" not in key:
            continue  # reports/<host>/<app>/<slot>/<revision>: one container each
        container = json.loads(value)
        if container["state"] == "running":
            host = key.split("/reports/")[1].split("/")[0]
            found[(container["app"], container["slot"], host)] += 1
    return found


def assert_each_runs_once_where_placed(
    etcd: EtcdServer,
) -> dict[tuple[str, int], dict[str, object]]:
    placed = placements(etcd)
    assert len(placed) == APPS * PER_APP
    reported = running_reports(etcd)
    assert set(reported.values()) == {1}, "a replica's container is reported twice on a host"
    where: Counter[tuple[str, int]] = Counter((app, slot) for app, slot, _ in reported)
    assert set(where.values()) == {1}, "a replica runs on two hosts"
    for (app, slot, host), _ in reported.items():
        assert placed[(app, slot)]["host"] == host, (app, slot, host)
    assert len(where) == APPS * PER_APP
    return placed


def test_200_hollow_hosts_place_5000_replicas_lose_20_hosts_and_a_control_plane(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    # Hosts down after 3 s without their agent, their replicas moved 2 s later.
    server = FleetServerProcess(
        etcd_server.endpoint,
        PREFIX,
        tmp_path,
        None,
        extra_args=["--host-down-after", "3s", "--reschedule-after", f"{RESCHEDULE_AFTER}s"],
    ).start()
    client = server.client()
    try:
        with (
            hollow_hosts(server.address, HOSTS, "hollow", tmp_path / "hollow.log", CPUS, MEMORY),
            hollow_hosts(
                server.address, VICTIMS, "victim", tmp_path / "victims.log", CPUS, MEMORY
            ) as victims,
        ):
            wait_until(
                lambda: len([h for h in client.hosts() if h.connected]) == HOSTS + VICTIMS,
                60,
                what=f"{HOSTS + VICTIMS} hollow hosts",
            )
            # Each on a connection of its own, as real hosts are (gRPC would have the
            # hosts of one process share one): the server's peers, etcd aside.
            agents = {p for p in tcp_peers(server.process.pid) if p[1] != etcd_server.client_port}
            assert len(agents) >= HOSTS + VICTIMS, f"{len(agents)} connections"
            # Spread, so that the victims hold their share (packing would fill the
            # other hosts first).
            docs = "---\n".join(
                f"name: app{i}\nimage: img:v1\nreplicas: {PER_APP}\nplacement: spread\n"
                f"resources: {{cpu: 0.1, memory: 64Mi}}\n"
                for i in range(APPS)
            )
            began = time.monotonic()
            client.apply(load_documents(docs, "apps.yaml"))  # (returns once stored)
            with ReadSampler(server.client(timeout=10)) as reads:
                wait_until(
                    lambda: sum(a.running for a in client.apps()) == APPS * PER_APP,
                    180,
                    interval=0.5,
                    what="5,000 replicas reported running",
                )
            print(f"5,000 replicas running {time.monotonic() - began:.1f}s after the apply")
            print(f"reads during the apply: {dict(reads.answered)}")
            assert not reads.failed, reads.failed[:5]
            assert all(reads.answered[what] >= 3 for what in ("apps", "hosts", "endpoints"))

            # Read back from etcd: each slot once, on a known host, within its capacity.
            placed = assert_each_runs_once_where_placed(etcd_server)
            cpu: dict[str, float] = defaultdict(float)
            memory: dict[str, int] = defaultdict(int)
            for replica in placed.values():
                resources = replica["resources"]
                assert isinstance(resources, dict)
                cpu[str(replica["host"])] += resources["cpu"]
                memory[str(replica["host"])] += resources["memory"]
            assert all(c <= CPUS + 1e-9 for c in cpu.values()), max(cpu.values())
            assert all(m <= MEMORY for m in memory.values()), max(memory.values())

            # ------------------------------------------------ 20 hosts lost at once
            on_victims = {k for k, r in placed.items() if str(r["host"]).startswith("victim")}
            assert len(on_victims) >= VICTIMS * 10, "spread left the victims nearly empty"
            killed = time.monotonic()
            victims.send_signal(signal.SIGKILL)

            def moved() -> bool:
                now = placements(etcd_server)
                if any(str(now[k]["host"]).startswith("victim") for k in on_victims):
                    return False
                running = running_reports(etcd_server)
                return all(
                    (app, slot, str(now[(app, slot)]["host"])) in running
                    for app, slot in on_victims
                )

            wait_until(moved, 120, interval=1, what="the lost hosts' replicas running elsewhere")
            print(
                f"{len(on_victims)} replicas of {VICTIMS} lost hosts running elsewhere "
                f"{time.monotonic() - killed:.1f}s after the kill"
            )
            after = assert_each_runs_once_where_placed(etcd_server)
            unmoved = [
                k for k in placed if k not in on_victims and after[k]["host"] != placed[k]["host"]
            ]
            assert not unmoved, f"replicas of hosts that stayed were moved: {unmoved[:5]}"

            # ------------------------------- the control plane lost and started again
            before_restart = {k: r["host"] for k, r in after.items()}
            server.kill()
            restarted_at, restarted = time.time(), time.monotonic()
            server = server.again("server-again.log").start(timeout=60)
            client.close()
            client = server.client()
            wait_until(
                lambda: len([h for h in client.hosts() if h.connected]) == HOSTS,
                60,
                what="every kept host connected to the new control plane",
            )
            wait_until(
                lambda: sum(a.running for a in client.apps()) == APPS * PER_APP,
                60,
                what="5,000 replicas running after the restart",
            )
            # Then until a host the new leader took for lost would have been moved (its
            # grace for reconnecting agents, then the reschedule time, and a round),
            # placements stay as they were.
            watched_until = restarted + AGENTS_BACK_WITHIN + RESCHEDULE_AFTER + 3
            while time.monotonic() < watched_until:
                now = {k: r["host"] for k, r in placements(etcd_server).items()}
                moved_by_restart = [k for k in before_restart if now.get(k) != before_restart[k]]
                assert not moved_by_restart, f"the restart moved replicas: {moved_by_restart[:5]}"
                time.sleep(0.5)  # the pace of the reads, not a wait for something
            downs = [
                e.host
                for e in client.events(since_seconds=time.time() - restarted_at + 1)
                if e.kind == "host-down" and e.host.startswith("hollow")
            ]
            assert not downs, f"hosts announced down after the restart: {downs[:5]}"
    finally:
        client.close()
        server.stop()
        print(server.process.log_tail(20))
