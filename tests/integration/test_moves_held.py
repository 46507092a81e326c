"""Most of a pool silent at once: a control plane cut off from its hosts (a partition, a
switch, its own stall) must not move every replica off hosts that are fine.

6 of 10 hollow hosts (the real agent over a simulated runtime) are stopped with SIGSTOP,
as a partition or a frozen machine leaves them: connected, saying nothing. The control
plane marks them down, yet their replicas stay where they are past `--reschedule-after`,
with a `moves-held` event saying why (and a warning below `fleet get hosts`); woken
again, the hosts come back, a `moves-resumed` event follows, and no replica has moved. A
real control plane and a real etcd; the hold's arithmetic is unit-tested in
tests/unit/controlplane.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, wait_until
from fleet.testing.fleetprocs import FleetServerProcess
from tests.helpers import etcd_prefix, hollow_hosts

KEPT, STOPPED = 4, 6  # 60% of the pool silent: at least the default 55%
REPLICAS = 30
PREFIX = "/t-moves-held/"
DOWN_AFTER, RESCHEDULE_AFTER = 3, 2  # seconds
CPUS, MEMORY = 4.0, 8 << 30


def placements(etcd: EtcdServer) -> dict[int, str]:
    """slot -> host of every replica record in etcd."""
    records = [json.loads(v) for k, v in etcd_prefix(etcd, PREFIX).items() if "/replicas/" in k]
    return {r["slot"]: r["host"] for r in records}


def kinds(client: FleetClient, since: float, kind: str) -> list[str]:
    """The hosts (or messages, for events of no host) of ``kind`` events since ``since``."""
    found = client.events(since_seconds=time.time() - since + 1)
    return [e.host or e.message for e in found if e.kind == kind]


def test_most_hosts_silent_at_once_are_marked_down_and_nothing_moves(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    server = FleetServerProcess(
        etcd_server.endpoint,
        PREFIX,
        tmp_path,
        None,
        extra_args=[
            *("--host-down-after", f"{DOWN_AFTER}s"),
            *("--reschedule-after", f"{RESCHEDULE_AFTER}s"),
        ],
    ).start()
    client = server.client()
    try:
        with (
            hollow_hosts(server.address, KEPT, "kept", tmp_path / "kept.log", CPUS, MEMORY),
            hollow_hosts(
                server.address, STOPPED, "stalled", tmp_path / "stalled.log", CPUS, MEMORY
            ) as stalled,
        ):
            wait_until(
                lambda: len([h for h in client.hosts() if h.connected]) == KEPT + STOPPED,
                60,
                what="10 hollow hosts connected",
            )
            app = f"name: web\nimage: img:v1\nreplicas: {REPLICAS}\nplacement: spread\n"
            client.apply(load_documents(app, "web.yaml"))
            wait_until(
                lambda: sum(a.running for a in client.apps()) == REPLICAS,
                60,
                what=f"{REPLICAS} replicas running",
            )
            before = placements(etcd_server)
            on_stalled = {s for s, host in before.items() if host.startswith("stalled")}
            assert len(on_stalled) >= STOPPED, "spread left the stalled hosts nearly empty"

            stopped_at = time.time()
            stalled.send_signal(signal.SIGSTOP)
            downs = wait_until(
                lambda: (
                    (d := set(kinds(client, stopped_at, "host-down")))
                    >= {f"stalled-{i:05d}" for i in range(STOPPED)}
                    and d
                ),
                60,
                what="the 6 stopped hosts marked down",
            )
            assert not {h for h in downs if h.startswith("kept")}, downs
            [held] = wait_until(
                lambda: kinds(client, stopped_at, "moves-held"), 30, what="a moves-held event"
            )
            assert held.startswith(f"{STOPPED} of {KEPT + STOPPED} hosts are down at once"), held
            # Until their replicas would long have moved (reschedule_after and a few
            # rounds after the last of them went down), every replica stays put.
            watched_until = time.monotonic() + RESCHEDULE_AFTER + 5
            while time.monotonic() < watched_until:
                moved = {s: h for s, h in placements(etcd_server).items() if before[s] != h}
                assert not moved, f"replicas moved while most hosts were silent: {moved}"
                time.sleep(0.5)  # the pace of the reads, not a wait for something
            silent = [h.host_id for h in client.hosts() if not h.connected]
            assert sorted(silent) == [f"stalled-{i:05d}" for i in range(STOPPED)], silent
            # Where an operator looks: `get hosts` says so below its table (stderr).
            listed = server.cli("get", "hosts")
            assert listed.returncode == 0, listed.stderr
            assert f"warning: {STOPPED} of {KEPT + STOPPED} hosts are down at once" in (
                listed.stderr
            ), listed.stderr
            assert "stalled-00000" in listed.stdout and "warning" not in listed.stdout

            stalled.send_signal(signal.SIGCONT)
            wait_until(
                lambda: len([h for h in client.hosts() if h.connected]) == KEPT + STOPPED,
                60,
                what="the stopped hosts back",
            )
            wait_until(
                lambda: kinds(client, stopped_at, "moves-resumed"),
                30,
                what="a moves-resumed event",
            )
            wait_until(
                lambda: sum(a.running for a in client.apps()) == REPLICAS,
                60,
                what=f"{REPLICAS} replicas running again",
            )
            assert placements(etcd_server) == before
            assert "warning" not in server.cli("get", "hosts").stderr
    finally:
        client.close()
        server.stop()
        print(server.process.log_tail(30))
