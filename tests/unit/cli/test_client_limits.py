"""The client receives answers past gRPC's default 4 MiB limit (a large `fleet get
containers`) and sends requests no larger than the control plane takes (4 MiB), over a
real gRPC round trip to a stand-in FleetService."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from fleet.client import FleetClient
from fleet.errors import FleetError
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.transport import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES, Transport

GRPC_DEFAULT_LIMIT = 4 * 1024 * 1024
REPLICAS = 20_000


def _container(slot: int) -> pb.ContainerInfo:
    """About what the control plane answers for one replica (~250 bytes)."""
    return pb.ContainerInfo(
        app=f"app-{slot // 100:04d}",
        slot=slot,
        host=f"host-{slot % 1000:04d}",
        revision=123_456 + slot,
        desired="running",
        status=pb.ContainerStatus(
            app=f"app-{slot // 100:04d}",
            slot=slot,
            revision=123_456 + slot,
            spec_hash="0123456789abcdef" * 4,
            container_id="fedcba9876543210" * 4,
            name=f"fleet-app-{slot // 100:04d}-{slot}",
            state="running",
            started_at="2026-01-01T00:00:00.000000Z",
            health="healthy",
        ),
    )


class _ManyContainers(pb_grpc.FleetServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.reply = pb.ContainerList(containers=[_container(i) for i in range(REPLICAS)])

    def GetContainers(self, request: pb.GetRequest, context: Any) -> pb.ContainerList:
        return self.reply


@pytest.fixture
def big_server() -> Iterator[tuple[str, _ManyContainers]]:
    # Sends as much as the real control plane may (its grpc.max_send_message_length).
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES)],
    )
    servicer = _ManyContainers()
    pb_grpc.add_FleetServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(None)


def test_the_client_receives_a_container_list_over_4_mib(
    big_server: tuple[str, _ManyContainers],
) -> None:
    address, servicer = big_server
    assert servicer.reply.ByteSize() > GRPC_DEFAULT_LIMIT
    with FleetClient([address], Transport(None), timeout=30) as client:
        containers = client.containers()
    assert len(containers) == REPLICAS
    assert containers[-1] == servicer.reply.containers[-1]


def test_a_channel_without_fleet_limits_refuses_that_answer(
    big_server: tuple[str, _ManyContainers],
) -> None:
    """The control for the test above: gRPC's default limit does refuse it."""
    address, _ = big_server
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.FleetServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetContainers(pb.GetRequest(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


class _TakesAnything(pb_grpc.FleetServiceServicer):  # type: ignore[misc]
    def GetApps(self, request: pb.GetRequest, context: Any) -> pb.AppList:
        return pb.AppList()


def test_the_client_sends_no_more_than_the_control_plane_takes() -> None:
    """A request over the server's 4 MiB fails in the client, before it is sent: here to
    a server that would take it."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        options=[("grpc.max_receive_message_length", -1)],
    )
    pb_grpc.add_FleetServiceServicer_to_server(_TakesAnything(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with FleetClient([f"127.0.0.1:{port}"], Transport(None), timeout=30) as client:
            assert client.apps("x" * (MAX_REQUEST_BYTES - 1024)) == []
            with pytest.raises(FleetError, match="Sent message larger than max"):
                client.apps("x" * (MAX_REQUEST_BYTES + 1))
    finally:
        server.stop(None)
