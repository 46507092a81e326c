"""One host's certificate must not be able to flood the pool's events (issue #17, 2).

A real control plane on a real etcd, and a raw agent stream with a real agent
certificate that sends what the attack sent: 500 events of 1 KiB a message, as fast as
it can, for several seconds. etcd's events stay within the host's rate, the flood is
said (how many dropped), `fleet events` still answers a page at a time, repeats are
stored once, and a control plane started over an events folder far larger than the cap
(as an older version could leave) starts, serves and trims it.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.store.events import MAX_BYTES
from fleet.testing import EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.transport import Transport
from tests.helpers import b64, etcd_post, etcd_prefix

HOST = "flood1"


def _events(etcd: EtcdServer, prefix: str) -> list[dict[str, object]]:
    return [e for raw in etcd_prefix(etcd, f"{prefix}events/").values() for e in json.loads(raw)]


def _flood(server: FleetServerProcess, pki: TestPKI, seconds: float) -> tuple[int, int]:
    """Send 500 events a message for ``seconds``: a repeated one, then 499 of 1 KiB, all
    different; how many of those were sent, and how many messages."""
    sent = messages_sent = 0

    def messages() -> Iterator[pb.AgentMessage]:
        nonlocal sent, messages_sent
        yield pb.AgentMessage(
            register=pb.Register(host_id=HOST, capacity=pb.Resources(cpu=2, memory_bytes=1 << 30))
        )
        repeat = pb.Event(kind="health_status", app="web", message="unhealthy")
        deadline = time.monotonic() + seconds
        for n in itertools.count():
            if time.monotonic() > deadline:
                return
            batch = [
                pb.Event(kind="x", app="web", slot=i, message=f"{n}-{i} " + "A" * 1000)
                for i in range(499)
            ]
            sent += len(batch)
            messages_sent += 1
            yield pb.AgentMessage(events=pb.EventBatch(events=[repeat, *batch]))

    with Transport(pki.agent(HOST)).channel(server.address) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        try:
            for _ in stub.Connect(messages(), timeout=seconds + 10):
                pass
        except grpc.RpcError as error:  # the stream ends when the messages do
            assert error.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
    return sent, messages_sent


@pytest.fixture
def server(etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path) -> Iterator[FleetServerProcess]:
    process = FleetServerProcess(etcd_server.endpoint, "/t-event-flood/", tmp_path, pki).start()
    try:
        yield process
    finally:
        process.stop()
        print(process.process.log_tail(40))


def test_a_flood_from_one_host_is_held_to_its_rate_and_said(
    server: FleetServerProcess, etcd_server: EtcdServer, pki: TestPKI
) -> None:
    began = time.monotonic()
    sent, messages = _flood(server, pki, seconds=6)
    took = time.monotonic() - began
    assert sent > 10_000, sent  # it was a flood

    def accounted() -> tuple[list[dict[str, object]], list[dict[str, object]]] | None:
        """The stored flood and the notices, once they add up to what was sent (the
        notices come every 10 s): nothing vanished unsaid."""
        found = _events(etcd_server, "/t-event-flood/")
        flood = [e for e in found if e.get("host") == HOST and e["kind"] == "x"]
        said = [e for e in found if e["kind"] == "events-dropped"]
        dropped = sum(int(str(e["message"]).split()[0]) for e in said)
        return (flood, said) if len(flood) + dropped == sent else None

    flood, said = wait_until(accounted, 40, what="every event stored or said dropped")
    # The host's burst (400), then 20 a second, however much it sent.
    assert len(flood) <= 400 + 20 * (took + 2), len(flood)
    assert all(e["host"] == HOST for e in said)
    assert "over the host's limit of 20 events/s" in str(said[0]["message"])
    stored = [e for e in _events(etcd_server, "/t-event-flood/") if e.get("host") == HOST]
    repeats = [e for e in stored if e["kind"] == "health_status"]
    assert len(repeats) == 1 and messages > 10  # in every message, stored once: counted

    # `fleet events` answers, paged, and --limit takes the newest.
    listed = server.cli("events", "--host", HOST, "-o", "json", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 5
    everything = server.cli("events", "-o", "json")
    assert everything.returncode == 0 and len(everything.stdout.splitlines()) >= len(flood)


def test_a_control_plane_starts_over_more_events_than_it_keeps(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    """Events never stand between a control plane and its state: 48 MiB of them (as an
    older version, or a flood before the cap, could leave) and it starts, serves, and
    trims them to the cap."""
    prefix = "/t-event-backlog/"
    value = json.dumps([{"kind": "x", "message": "B" * 1000, "host": "old"}] * 100).encode()
    for n in range(480):  # 480 batches of 100 KiB, keyed as an older version did
        key = f"{prefix}events/{n:020d}-old-{n:06d}".encode()
        etcd_post(etcd_server, "/v3/kv/put", {"key": b64(key), "value": b64(value)})
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    try:
        with server.client() as client:
            assert client.apps() == []
            newest = list(client.events(limit=3))
            assert len(newest) == 3
        # Its first events (a host registering) have it trim the old ones.
        _flood(server, pki, seconds=1)

        def weight() -> int:
            return sum(len(v) for v in etcd_prefix(etcd_server, f"{prefix}events/").values())

        wait_until(lambda: weight() <= MAX_BYTES, 30, what="the events to be trimmed")
    finally:
        server.stop()
        print(server.process.log_tail(40))
