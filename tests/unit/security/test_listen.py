"""A port another process listens on is named as such, before gRPC tries it (gRPC
would only say that binding failed, or, with SO_REUSEPORT, share the port)."""

from __future__ import annotations

import socket

import grpc.aio
import pytest

from fleet.errors import FailedPrecondition
from fleet.transport import Transport, listen_problem


def test_a_port_in_use_is_named_as_such() -> None:
    for reuseport in (False, True):  # a gRPC server in its default mode sets SO_REUSEPORT
        with socket.socket() as taken:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuseport))
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            assert listen_problem(f"127.0.0.1:{port}") == "another process is using it"
            assert listen_problem(f"localhost:{port}") == "another process is using it"
        assert listen_problem(f"127.0.0.1:{port}") is None
    assert listen_problem("unix:/run/fleet.sock") is None  # left to the server


async def test_a_server_refuses_to_share_a_port() -> None:
    first = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    port = Transport(None).add_port(first, "127.0.0.1:0")
    await first.start()
    second = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    try:
        with pytest.raises(FailedPrecondition) as refused:
            Transport(None).add_port(second, f"127.0.0.1:{port}")
        assert str(refused.value) == (
            f"cannot listen on 127.0.0.1:{port}: another process is using it"
        )
    finally:
        await second.stop(None)
        await first.stop(None)
