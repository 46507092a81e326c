"""SIGTERM stops `fleet server` and `fleet agent` cleanly, with exit status 0: a
leader resigns and the standby leads at once (not a lease TTL later, as after a
kill -9), and an agent leaves so its host shows disconnected at once while its
containers keep running. The figures are printed (pytest -s shows them)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from fleet.spec import load_documents
from fleet.testing import EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.testing.procs import ManagedProcess
from tests.helpers import etcd_json
from tests.integration.conftest import Fleet, wait_containers

LEADER_TTL = 4.0


def leader_of(etcd: EtcdServer, prefix: str) -> str | None:
    found = etcd_json(etcd, f"{prefix}leader")
    return str(found["candidate"]) if found else None


def exit_status(process: ManagedProcess, timeout: float = 15) -> int | None:
    """The status ``process`` exits with by itself (``stop()`` would signal it again)."""
    wait_until(lambda: not process.running, timeout, what=f"{process.name} to exit")
    return process.returncode


def takeover_after(
    etcd: EtcdServer, pki: TestPKI, tmp_path: Path, signum: signal.Signals
) -> tuple[float, int | None, str]:
    """Two servers; ``signum`` to the leader. Returns the seconds until the standby
    leads, the stopped leader's exit status and its log."""
    prefix = f"/t-stop-{signum.name.lower()}/"
    servers = {
        f"{signum.name}-cp{i}": FleetServerProcess(
            etcd.endpoint,
            prefix,
            tmp_path,
            pki,
            log_name=f"{signum.name}-cp{i}.log",
            extra_args=["--server-id", f"{signum.name}-cp{i}", "--leader-ttl", f"{LEADER_TTL:g}s"],
        )
        for i in (1, 2)
    }
    try:
        for server in servers.values():
            server.start()
        leader = wait_until(lambda: leader_of(etcd, prefix), 10, what="a leader")
        [standby] = [name for name in servers if name != leader]
        pid = servers[leader].process.pid
        assert pid is not None
        sent = time.monotonic()
        os.kill(pid, signum)
        wait_until(
            lambda: leader_of(etcd, prefix) == standby,
            3 * LEADER_TTL,
            interval=0.01,
            what=f"{standby} to lead",
        )
        took = time.monotonic() - sent
        code = exit_status(servers[leader].process)
        # The standby serves on: it answers and leads.
        with servers[standby].client() as client:
            client.hosts()
        return took, code, servers[leader].process.log_tail(20)
    finally:
        for server in servers.values():
            server.stop()


def test_a_leader_stopped_by_sigterm_hands_over_at_once(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    by_term, code, log = takeover_after(etcd_server, pki, tmp_path, signal.SIGTERM)
    by_kill, _, _ = takeover_after(etcd_server, pki, tmp_path, signal.SIGKILL)
    print(
        f"\nstandby leading after the leader's SIGTERM: {by_term:.3f}s; after its kill -9: "
        f"{by_kill:.3f}s (leader TTL {LEADER_TTL:g}s)"
    )
    assert code == 0, log
    assert "resigned" in log and "stopped" in log, log
    assert by_term < 1.0, f"the standby led {by_term:.2f}s after the SIGTERM"
    # After a kill -9 the lease must expire first: the TTL, give or take a renewal.
    assert by_kill > LEADER_TTL / 2


def test_an_agent_stopped_by_sigterm_leaves_its_containers_running(fleet: Fleet) -> None:

    fleet.client.apply(load_documents(f"name: web\nimage: {fleet.image}\nreplicas: 2\n", "w"))
    before = {c.id for c in wait_containers(fleet, "web", 2)}
    host = fleet.host.name

    def disconnected() -> bool:
        return not any(h.connected for h in fleet.client.hosts(host))

    figures = {}
    for signum in (signal.SIGTERM, signal.SIGKILL):
        fleet.wait_connected()
        pid = fleet.agent.process.pid
        assert pid is not None
        sent = time.monotonic()
        os.kill(pid, signum)
        wait_until(disconnected, 15, interval=0.02, what=f"{host} to show disconnected")
        figures[signum.name] = time.monotonic() - sent
        code = exit_status(fleet.agent.process)
        if signum == signal.SIGTERM:
            assert code == 0, fleet.agent.process.log_tail()
            # The containers run on, untouched.
            running = fleet.docker.containers.list(filters={"label": "fleet.app=web"})
            assert {c.id for c in running} == before
            assert all(c.status == "running" for c in running)
            # The control plane heard it leave: the agent's event, the server's log.
            wait_until(
                lambda: any(e.kind == "agent-stopped" for e in fleet.client.events(host=host)),
                10,
                what="the agent-stopped event",
            )
            assert f"host {host} disconnected: its agent closed the stream" in (
                fleet.server.process.log_tail(200)
            )
        fleet.agent.process.start()
    print(
        f"\n{host} disconnected {figures['SIGTERM']:.3f}s after the agent's SIGTERM, "
        f"{figures['SIGKILL']:.3f}s after its kill -9"
    )
    assert figures["SIGTERM"] < 1.0
    # The restarted agent adopts the same containers.
    fleet.wait_connected()
    assert {c.id for c in wait_containers(fleet, "web", 2)} == before
