"""The main port's door while the server starts (``fleet.controlplane.startgate``): an
agent's stream waits until the server opens it, any other call is refused with
UNAVAILABLE, the health service answers. Real gRPC round trips to a stand-in stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fleet.controlplane.server import CONNECT_METHOD
from fleet.controlplane.startgate import StartGate
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc


class _Agents(pb_grpc.AgentServiceServicer):  # type: ignore[misc]
    """Answers a Register with Registered, as the real stream's first message does."""

    def __init__(self) -> None:
        self.registered: list[str] = []

    async def Connect(
        self, requests: AsyncIterator[pb.AgentMessage], context: Any
    ) -> AsyncIterator[pb.ServerMessage]:
        first = await anext(requests)
        self.registered.append(first.register.host_id)
        yield pb.ServerMessage(registered=pb.Registered(heartbeat_seconds=5))


async def _register(stub: pb_grpc.AgentServiceStub, host_id: str) -> pb.ServerMessage:
    call = stub.Connect(iter([pb.AgentMessage(register=pb.Register(host_id=host_id))]))
    async for message in call:
        return message
    raise AssertionError("the stream ended without an answer")


@pytest.fixture
async def gated() -> AsyncIterator[tuple[StartGate, _Agents, str, health.aio.HealthServicer]]:
    gate = StartGate(frozenset({CONNECT_METHOD}))
    agents = _Agents()
    server = grpc.aio.server(interceptors=[gate])
    pb_grpc.add_AgentServiceServicer_to_server(agents, server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    await checks.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield gate, agents, f"127.0.0.1:{port}", checks
    await server.stop(None)


async def test_an_agent_waits_at_the_door_until_the_server_opens_it(gated: Any) -> None:
    gate, agents, address, _ = gated
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AgentServiceStub(channel)
        waiting = asyncio.create_task(_register(stub, "h1"))
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done and agents.registered == []  # held, not refused
        gate.open()
        answer = await asyncio.wait_for(waiting, 10)
        assert answer.registered.heartbeat_seconds == 5 and agents.registered == ["h1"]
        # Open: a new stream goes straight in.
        await asyncio.wait_for(_register(stub, "h2"), 10)
        assert agents.registered == ["h1", "h2"]


async def test_other_calls_are_refused_as_unavailable_and_health_answers(gated: Any) -> None:
    gate, agents, address, checks = gated
    async with grpc.aio.insecure_channel(address) as channel:
        renew = channel.unary_unary(
            "/fleet.v1.AgentService/RenewCertificate",
            request_serializer=pb.CertificateRequest.SerializeToString,
            response_deserializer=pb.CertificateResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await renew(pb.CertificateRequest())
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "starting" in (refused.value.details() or "")
        probe = health_pb2_grpc.HealthStub(channel)
        answer = await probe.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        gate.open()
        await checks.set("", health_pb2.HealthCheckResponse.SERVING)
        answer = await probe.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        # Once open, the method is the servicer's own again (not implemented here).
        with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
            await renew(pb.CertificateRequest())
        assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert agents.registered == []
