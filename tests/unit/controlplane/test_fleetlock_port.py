"""The FleetLock port on loopback with raw bytes: whatever a peer sends that is not a
well-formed FleetLock request gets the protocol's JSON error and the connection ends;
the state is never read and nothing is written for it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from fleet.controlplane.fleetlockport import FleetLockConfig, FleetLockPort
from fleet.store import ClusterState


async def _no_state() -> ClusterState:
    raise AssertionError("a malformed request must not read the state")


async def _no_wait(revision: int) -> None:
    raise AssertionError("nothing is written")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    served = FleetLockPort(
        FleetLockConfig(listen="127.0.0.1:0", tokens={"default": "0" * 64}),
        None,
        _no_state,
        None,  # type: ignore[arg-type]  # no store: nothing may be written
        _no_wait,
    )
    number = await served.serve()
    yield number
    await served.stop()


async def _send(port: int, raw: bytes) -> tuple[int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body)


def _post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


GOOD = b'{"client_params": {"id": "h1", "group": "default"}}'


@pytest.mark.parametrize(
    ("raw", "status", "kind"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
        (b"GET /v1/pre-reboot HTTP/1.1\r\n\r\n", 405, "method_not_allowed"),
        (b"hello\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/pre-reboot SPDY/3\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/pre-reboot HTTP/1.1\r\nno colon\r\n\r\n", 400, "bad_request"),
        (_post("/v1/pre-reboot", GOOD, "Transfer-Encoding: chunked"), 411, "bad_request"),
        (b"POST /v1/pre-reboot HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/pre-reboot HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", 413, "bad_request"),
        (_post("/v1/pre-reboot", GOOD), 400, "missing_header"),
        (_post("/v1/pre-reboot", b"{", "fleet-lock-protocol: true"), 400, "bad_body"),
        # Well formed, but no credentials: refused before the state is read.
        (_post("/v1/pre-reboot", GOOD, "fleet-lock-protocol: true"), 401, "unauthorized"),
        (
            _post("/v1/steady-state", GOOD, "fleet-lock-protocol: true", "Authorization: Bearer x"),
            401,
            "unauthorized",
        ),
    ],
)
async def test_malformed_or_unauthenticated_requests_get_the_protocols_error(
    port: int, raw: bytes, status: int, kind: str
) -> None:
    answered, body = await _send(port, raw)
    assert (answered, body["kind"]) == (status, kind)
    assert body["value"]


async def test_a_huge_head_is_refused(port: int) -> None:
    raw = b"POST /v1/pre-reboot HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"
    answered, body = await _send(port, raw)
    assert (answered, body["kind"]) == (400, "bad_request")
