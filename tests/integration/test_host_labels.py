"""A compromised host chooses no work of its own (issue #17): against a real ``fleet
server`` on real etcd, a raw agent stream with a real agent certificate registers
claiming ``tier=secure`` and 1,000 cpus / 1 TiB, as an attacker with the host's key
would. Labels that steer placement come from admins (``fleet label host``, the real
CLI); the claimed capacity counts only up to ``--max-host-cpus/--max-host-memory``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fleet.client import FleetClient
from fleet.errors import PermissionDenied
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.spec import load_documents
from fleet.store import KeyLayout
from fleet.testing import EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.transport import Transport
from tests.helpers import b64, etcd_post

HOST = "sechost"
Gi = 1 << 30
Ti = 1 << 40
SECURE_APP = """\
name: vault
image: fleet-test/vault:v1
env: {MARKER: only-for-trusted-hosts}
constraints: [tier=secure]
"""
BIG_APP = "name: big\nimage: fleet-test/big:v1\nresources: {cpu: 500}\n"


class RawAgent:
    """The host's agent as an attacker with its key runs it: a raw stream that claims
    what it likes, beats, and keeps every desired set it is sent."""

    def __init__(self, server: FleetServerProcess, pki: TestPKI, labels: dict[str, str]) -> None:
        self.channel = Transport(pki.agent(HOST)).channel(server.address)
        self.labels = labels
        self.stop = threading.Event()
        self.desired: list[pb.DesiredSet] = []
        self.error: grpc.RpcError | None = None
        stub = pb_grpc.AgentServiceStub(self.channel)
        self.call = stub.Connect(self._messages())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _messages(self) -> Iterator[pb.AgentMessage]:
        yield pb.AgentMessage(
            register=pb.Register(
                host_id=HOST,
                capacity=pb.Resources(cpu=1000, memory_bytes=Ti),
                labels=self.labels,
                facts={"os": "linux", "arch": "x86_64", "tier": "secure"},
                address="127.0.0.1",
            )
        )
        while not self.stop.wait(0.5):
            yield pb.AgentMessage(heartbeat=pb.Heartbeat(usage=pb.Resources()))

    def _read(self) -> None:
        try:
            for message in self.call:
                if message.WhichOneof("kind") == "desired":
                    self.desired.append(message.desired)
        except grpc.RpcError as error:
            if not self.stop.is_set():
                self.error = error

    def apps_sent(self) -> set[str]:
        """The apps of the last desired set this host was sent."""
        return {c.app for c in self.desired[-1].containers} if self.desired else set()

    def close(self) -> None:
        self.stop.set()
        self.call.cancel()
        self.thread.join(10)
        self.channel.close()


@pytest.fixture
def server(etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path) -> Iterator[FleetServerProcess]:
    limits = ["--max-host-cpus", "8", "--max-host-memory", "16Gi"]
    started = FleetServerProcess(
        etcd_server.endpoint, "/t-host-labels/", tmp_path, pki, extra_args=limits
    ).start()
    try:
        yield started
    finally:
        started.stop()
        print(started.process.log_tail(60))


def connected(client: FleetClient) -> pb.HostInfo | None:
    hosts = [h for h in client.hosts() if h.host_id == HOST and h.connected]
    return hosts[0] if hosts else None


def pending_reason(client: FleetClient, app: str) -> str:
    [info] = client.apps(app)
    return info.pending[0].reason if info.pending else ""


def test_a_host_cannot_label_itself_or_inflate_its_capacity(
    server: FleetServerProcess, pki: TestPKI
) -> None:
    client = server.client()
    agent = RawAgent(server, pki, {"tier": "secure"})
    try:
        info = wait_until(lambda: connected(client), 20, what=f"{HOST} to register")
        # What it claims is shown as its own; what counts is capped.
        assert dict(info.labels) == {}
        assert dict(info.agent_labels) == {"tier": "secure"}
        assert "tier" not in info.facts  # not a fact fleet knows
        assert (info.capacity.cpu, info.capacity.memory_bytes) == (8, 16 * Gi)
        assert (info.reported_capacity.cpu, info.reported_capacity.memory_bytes) == (1000, Ti)

        client.apply(load_documents(SECURE_APP + "---\n" + BIG_APP, "apps.yaml"))
        reason = wait_until(lambda: pending_reason(client, "vault"), 20, what="vault pending")
        assert reason == (
            "0/1 hosts fit: 1 lack label tier=secure (their own --label is agent.tier; "
            "an admin sets tier with `fleet label host`)"
        )
        big = wait_until(lambda: pending_reason(client, "big"), 20, what="big pending")
        assert big == "0/1 hosts fit: 1 insufficient cpu"
        assert "vault" not in agent.apps_sent()  # nor its environment
        wide = server.cli("get", "hosts", "-o", "wide")
        assert wide.returncode == 0, wide.stderr
        assert "agent.tier=secure" in wide.stdout and "1000/1Ti" in wide.stdout
        described = server.cli("describe", "host", HOST)
        assert "its agent claims 1000 cpus, 1Ti (capped" in described.stdout, described.stdout

        # Only an admin labels hosts.
        for role in ("deployer", "viewer"):
            with server.client(f"a-{role}", role) as other, pytest.raises(PermissionDenied):
                other.label_host(HOST, {"tier": "secure"})
        refused = server.cli("label", "host", HOST, "agent.tier=secure")
        assert refused.returncode == 1
        assert "keys starting with agent. are what hosts claim" in refused.stderr

        labeled = server.cli("label", "host", HOST, "tier=secure")
        assert labeled.returncode == 0, labeled.stderr
        assert "tier=secure" in labeled.stdout
        wait_until(
            lambda: [c.host for c in client.containers(app="vault")] == [HOST],
            20,
            what="vault placed on the labeled host",
        )
        wait_until(lambda: "vault" in agent.apps_sent(), 20, what="vault sent to the host")
        assert pending_reason(client, "big") == "0/1 hosts fit: 1 insufficient cpu"

        # Changing a label takes --overwrite, as with kubectl.
        again = server.cli("label", "host", HOST, "tier=public")
        assert again.returncode == 1
        assert f"host {HOST} already has label tier=secure; --overwrite" in again.stderr
    finally:
        agent.close()

    # A registration again, claiming nothing now, neither removes nor changes them.
    agent = RawAgent(server, pki, {})
    try:

        def registered_again() -> pb.HostInfo | None:
            info = connected(client)
            return info if info is not None and not info.agent_labels else None

        info = wait_until(registered_again, 30, what=f"{HOST} to register again")
        assert dict(info.labels) == {"tier": "secure"}
        assert [c.host for c in client.containers(app="vault")] == [HOST]
        assert agent.error is None
    finally:
        agent.close()
        client.close()


def test_a_reconnect_that_changes_nothing_writes_no_host_record(
    pki: TestPKI, etcd_server: EtcdServer, tmp_path: Path
) -> None:
    """A restart storm is every host registering again: one that says what its stored
    record says is not written again (nor is its registration time changed); one that
    says something new is."""
    prefix = "/t-host-reconnect/"
    key = KeyLayout(prefix).host(HOST)
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()

    def stored_revision() -> int:
        [kv] = etcd_post(etcd_server, "/v3/kv/range", {"key": b64(key)})["kvs"]
        return int(kv["mod_revision"])

    def session(labels: dict[str, str]) -> pb.HostInfo:
        agent = RawAgent(server, pki, labels)
        try:
            return wait_until(
                lambda: (info := connected(client)) and dict(info.agent_labels) == labels and info,
                20,
                what=f"{HOST} to register with agent labels {labels}",
            )
        finally:
            agent.close()
            wait_until(lambda: connected(client) is None, 20, what=f"{HOST}'s session to end")

    try:
        with server.client() as client:
            first = session({"rack": "r1"})
            written = stored_revision()
            again = session({"rack": "r1"})
            assert stored_revision() == written
            assert again.registered_at == first.registered_at
            moved = session({"rack": "r2"})
            assert stored_revision() > written
            assert moved.registered_at > first.registered_at
    finally:
        server.stop()
