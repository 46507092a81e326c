"""A refused call leaves nothing behind: the control plane's handlers refuse without
``context.abort`` (whose AbortError keeps the request alive in a reference cycle), and
the token port's gate refuses a call without a known token before its request is read.
Real gRPC round trips to stand-in servicers."""

from __future__ import annotations

import gc
import logging
import types
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from fleet.controlplane._handlers import service_handler
from fleet.controlplane.auth import Permission, TokenGate, rpc
from fleet.pki.subjects import Identity, Kind, Role
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc

TOKEN = "fleet_ci_secret"


class _Apps(pb_grpc.FleetServiceServicer):  # type: ignore[misc]
    """Apply behind the real ``rpc`` decorator: a deployer token may, no one else."""

    insecure = False

    def __init__(self) -> None:
        self.applied = 0

    def token_identity(self, token: str) -> Identity | None:
        if token != TOKEN:
            return None
        return Identity(kind=Kind.client, name="token:ci", role=Role.deployer)

    @rpc(Permission.APPS_WRITE)
    async def Apply(self, request: pb.ApplyRequest, context: Any) -> pb.ApplyResponse:
        self.applied += 1
        return pb.ApplyResponse()


async def _serve(server: grpc.aio.Server) -> str:
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return f"127.0.0.1:{port}"


@pytest.fixture
async def apps_server() -> AsyncIterator[str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service_handler("FleetService", _Apps()),))
    address = await _serve(server)
    yield address
    await server.stop(None)


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


async def test_a_refused_call_leaves_no_garbage_holding_its_request(
    apps_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The refusal's log record names the error: captured, it would keep it alive.
    caplog.set_level(logging.ERROR, logger="fleet.controlplane.auth")
    gc.collect()
    gc.disable()
    try:
        async with grpc.aio.insecure_channel(apps_server) as channel:
            stub = pb_grpc.FleetServiceStub(channel)
            request = pb.ApplyRequest(specs_json=["x" * 100_000])
            for _ in range(3):  # no certificate and no token: refused
                assert await _code(stub.Apply(request)) == grpc.StatusCode.PERMISSION_DENIED
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        # Only the cyclic GC would free these: the server's frames (which hold the
        # request) and gRPC's AbortError that keeps them.
        left = [
            o
            for o in gc.garbage
            if type(o).__name__ == "AbortError"
            or (isinstance(o, types.FrameType) and "/fleet/controlplane/" in o.f_code.co_filename)
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


async def test_the_token_gate_refuses_before_the_request_is_read() -> None:
    servicer = _Apps()
    decoded: list[bytes] = []

    def decode(data: bytes) -> pb.ApplyRequest:
        decoded.append(data)
        return pb.ApplyRequest.FromString(data)

    server = grpc.aio.server(interceptors=[TokenGate(servicer.token_identity)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "fleet.v1.FleetService",
                {
                    "Apply": grpc.unary_unary_rpc_method_handler(
                        servicer.Apply, decode, pb.ApplyResponse.SerializeToString
                    )
                },
            ),
        )
    )
    address = await _serve(server)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.FleetServiceStub(channel)
            big = pb.ApplyRequest(specs_json=["x" * (3 << 20)])
            for metadata, expected in [
                ((), "this port takes a bearer token"),
                ((("authorization", "Bearer fleet_ci_wrong"),), "unknown or revoked token"),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Apply(big, metadata=metadata)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert expected in (refused.value.details() or "")
            # Whatever the kind of method: here one that streams its answer.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stub.Events(pb.EventsRequest()):
                    pass
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert decoded == [] and servicer.applied == 0

            await stub.Apply(big, metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert len(decoded) == 1 and servicer.applied == 1
    finally:
        await server.stop(None)
