"""Host lifecycle (issue #17): `fleet hosts remove` ends a host's access at once, on
every control plane replica, and a certificate renewed while the agent runs is taken up
without a restart. A real `fleet server` (two, on one etcd prefix) on real etcd, a real
`fleet agent` on a real namespaced dockerd, the real CLI."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from fleet.errors import PermissionDenied
from fleet.pki.issuing import issue
from fleet.pki.subjects import Kind, serial_of
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.testing import wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.transport import TlsFiles, Transport
from tests.integration.conftest import Fleet, wait_containers

APP = """\
name: rm
image: {image}
command: [sleep, "3600"]
resources: {{cpu: 0.1, memory: 16Mi}}
stop_grace_period: 1s
"""


def _cli(server: FleetServerProcess, *args: str) -> tuple[int, str, str]:
    done = server.cli(*args, timeout=60)
    return done.returncode, done.stdout, " ".join(done.stderr.split())


def _hosts(server: FleetServerProcess) -> list[dict[str, Any]]:
    code, out, err = _cli(server, "get", "hosts", "-o", "json")
    assert code == 0, err
    hosts: list[dict[str, Any]] = json.loads(out)
    return hosts


def _host(server: FleetServerProcess, host_id: str) -> dict[str, Any] | None:
    return next((h for h in _hosts(server) if h["host_id"] == host_id), None)


def _new_certificate(pki: TestPKI, host_id: str, into: Path) -> TlsFiles:
    """A new agent certificate for ``host_id`` from the same CA (issued in a directory
    of its own, so the session's shared PKI keeps its files)."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "ca.key"):
        shutil.copy(pki.dir / name, into / name)
    paths = issue(into, Kind.agent, host_id, force=True)
    return TlsFiles(into / "ca.crt", paths.cert, paths.key)


def _raw_register(address: str, files: TlsFiles, host_id: str) -> grpc.RpcError | None:
    """Open an agent stream with ``files`` and register; the error it ends with."""
    register = pb.AgentMessage(
        register=pb.Register(host_id=host_id, capacity=pb.Resources(cpu=1, memory_bytes=1 << 30))
    )
    with Transport(files).channel(address) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        try:
            for _ in stub.Connect(iter([register]), timeout=10):
                pass
        except grpc.RpcError as error:
            return error
    return None


def test_a_removed_host_loses_its_stream_everywhere_and_rejoins_only_with_a_new_certificate(
    fleet: Fleet, tmp_path: Path
) -> None:
    host = fleet.host.name
    second = FleetServerProcess(
        fleet.etcd.endpoint, fleet.prefix, tmp_path, fleet.pki, log_name="second.log"
    ).start()
    try:
        old_files = fleet.pki.agent(host)
        old_serial = serial_of(old_files.cert.read_bytes())
        listed = _host(fleet.server, host)
        assert listed is not None and listed["cert_serial"] == old_serial  # as registered

        app_file = tmp_path / "rm.yaml"
        app_file.write_text(APP.format(image=fleet.image))
        code, _, err = _cli(fleet.server, "apply", "-f", str(app_file))
        assert code == 0, err
        wait_containers(fleet, "rm", 1)

        # Replicas still on it: refused, saying what to do.
        code, _, err = _cli(fleet.server, "hosts", "remove", host)
        assert code == 1
        assert (
            f"host {host} still has 1 replica(s): drain it first (`fleet drain {host} --wait`)"
            in err
        )
        assert "--force" in err

        removed_at = time.monotonic()
        code, out, err = _cli(fleet.server, "hosts", "remove", host, "--force", "-o", "json")
        assert code == 0, err
        answer = json.loads(out)
        assert answer["denied_serials"] == [old_serial]
        assert answer["replicas"] == 1 and answer["was_connected"] is True
        assert answer["removed_by"] == "admin"

        # Its agent's stream ends at once, and the agent stops with the reason.
        agent = fleet.agent
        wait_until(lambda: not agent.process.running, 15, what="the removed host's agent to stop")
        assert time.monotonic() - removed_at < 15
        said = " ".join(agent.process.log_tail(40).split())
        assert agent.process.returncode == 1, said
        assert (
            f"certificate serial {old_serial} of host {host} was removed from the pool by admin"
            in said
        )
        assert f"fleet certs issue agent {host} --force" in said
        agent.stop()  # reaped, its log closed

        # Gone from both replicas' lists; its replica waits for a host, saying why.
        assert _host(fleet.server, host) is None
        assert _host(second, host) is None

        def pending(server: FleetServerProcess = fleet.server) -> str:
            with server.client() as client:
                [info] = client.apps("rm")
            return info.pending[0].reason if info.pending else ""

        # The leader's controller says why; the other replica plans it the same way.
        said_by_leader = wait_until(pending, 30, what="the removed host's replica to be pending")
        said_by_other = wait_until(lambda: pending(second), 30, what="the follower to say so")
        assert said_by_leader == said_by_other == "0/0 hosts fit"  # the pool is empty now

        # The removed certificate is refused on every replica, naming why.
        for server in (fleet.server, second):
            error = _raw_register(server.address, old_files, host)
            assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
            assert f"certificate serial {old_serial} of host {host} was removed" in (
                error.details() or ""
            )
        assert "was removed from the pool" in second.process.log_tail(200)

        # A new certificate for the same host id joins again, as a new host.
        new_files = _new_certificate(fleet.pki, host, tmp_path / "renewed-pki")
        new_serial = serial_of(new_files.cert.read_bytes())
        fleet.agent = FleetAgentProcess(
            [second.address], host, fleet.host.docker_url, tmp_path, fleet.pki, tls=new_files
        ).start()

        def rejoined() -> bool:
            return any(h.host_id == host and h.connected for h in fleet.client.hosts())

        wait_until(rejoined, 30, what="the host to join again with a new certificate")
        joined = _host(fleet.server, host)  # as `fleet get hosts` shows it
        assert joined is not None and joined["cert_serial"] == new_serial
        # Its app's replica is placed on it again (the container that ran on is kept).
        wait_until(lambda: not pending(), 30, what="the replica to be placed again")
        wait_containers(fleet, "rm", 1)
    finally:
        second.stop()
        print(second.process.log_tail(60))


def test_removing_an_unknown_host_or_as_a_viewer_is_refused(fleet: Fleet) -> None:
    code, _, err = _cli(fleet.server, "hosts", "remove", "nosuchhost")
    assert code == 1
    assert "host 'nosuchhost' not found" in err
    with fleet.server.client("vera", "viewer") as client, pytest.raises(PermissionDenied) as raised:
        client.remove_host(fleet.host.name)
    assert "viewer 'vera' may not change hosts" in str(raised.value)
    assert _host(fleet.server, fleet.host.name) is not None


def test_a_renewed_certificate_is_taken_up_without_restarting_the_agent(
    fleet: Fleet, tmp_path: Path
) -> None:
    host = fleet.host.name
    # The agent gets a copy of its certificate files, which are then rewritten in place.
    files = fleet.pki.agent(host)
    own = tmp_path / "agent-tls"
    own.mkdir()
    mine = TlsFiles(own / "ca.crt", own / f"agent-{host}.crt", own / f"agent-{host}.key")
    for source, target in ((files.ca, mine.ca), (files.cert, mine.cert), (files.key, mine.key)):
        shutil.copy(source, target)
    fleet.agent.stop()
    fleet.agent = FleetAgentProcess(
        [fleet.server.address], host, fleet.host.docker_url, tmp_path, fleet.pki, tls=mine
    ).start()
    old_serial = serial_of(mine.cert.read_bytes())

    def registered_with(serial: str) -> bool:
        found = [h for h in fleet.client.hosts() if h.host_id == host]
        return bool(found and found[0].connected and found[0].cert_serial == serial)

    def this_agent_registered() -> bool:
        # The host record says the old serial from the fixture's agent too (the same
        # certificate) until the server notices it left: wait for this process's own
        # registration, or the files could be renewed before it first reads them.
        own_log = fleet.agent.process.log_tail(200).rsplit("--- start:", 1)[-1]
        return "registered with" in own_log and registered_with(old_serial)

    wait_until(this_agent_registered, 30, what="the agent to connect")
    pid = fleet.agent.process.pid

    renewed = _new_certificate(fleet.pki, host, tmp_path / "renewed-pki")
    new_serial = serial_of(renewed.cert.read_bytes())
    assert new_serial != old_serial
    shutil.copy(renewed.key, mine.key)
    shutil.copy(renewed.cert, mine.cert)

    wait_until(lambda: registered_with(new_serial), 30, what="the agent to reconnect renewed")
    assert fleet.agent.process.running and fleet.agent.process.pid == pid  # no restart
    code, out, err = _cli(fleet.server, "describe", "host", host)
    assert code == 0, err
    said = " ".join(out.split())
    assert f"certificate serial (its agent's, last registration): {new_serial}" in said
    said = " ".join(fleet.agent.process.log_tail(80).split())
    assert f"changed (serial {new_serial}): reconnecting with it" in said
    # The old certificate is remembered: removing the host denies both.
    code, out, err = _cli(fleet.server, "hosts", "remove", host, "-o", "json")
    assert code == 0, err
    assert sorted(json.loads(out)["denied_serials"]) == sorted([old_serial, new_serial])
