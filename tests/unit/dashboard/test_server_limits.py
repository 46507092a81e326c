"""The limits as the dashboard's real aiohttp handlers apply them (plain HTTP on
loopback, fakes for the API and the informer): the eleventh failed sign-in in a minute
is answered 429 with Retry-After, a right token included; a ninth event stream of one
session, or one past the total, is answered 429, and an ended stream frees its place."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from fleet.dashboard import Dashboard, DashboardConfig
from fleet.dashboard.limits import StreamLimiter
from fleet.dashboard.sessions import COOKIE, SessionSigner, new_session
from fleet.pki.subjects import Identity, Kind, Role
from fleet.secrets import SecretBox, new_key
from fleet.store import ClusterState

RIGHT = "fleet_abc123_right"
KEY = new_key()


class _Api:
    def token_identity(self, token: str) -> Identity | None:
        if token != RIGHT:
            return None
        return Identity(kind=Kind.client, name="token:ci", role=Role.viewer)


class _Informer:
    def state(self) -> ClusterState:
        return ClusterState(revision=1)


@pytest.fixture
async def served() -> AsyncIterator[tuple[Dashboard, TestClient[Any, Any]]]:
    dashboard = Dashboard(
        DashboardConfig("127.0.0.1:0"),
        _Api(),  # type: ignore[arg-type]
        _Informer(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        ssl.create_default_context(),  # unused: the test server is plain HTTP
        SecretBox(KEY),
    )
    client = TestClient(TestServer(dashboard._app()))
    await client.start_server()
    try:
        yield dashboard, client
    finally:
        await client.close()


def _origin(client: TestClient[Any, Any]) -> dict[str, str]:
    return {"Origin": f"https://{client.server.host}:{client.server.port}"}


async def _sign_in(client: TestClient[Any, Any], token: str) -> ClientResponse:
    return await client.post(
        "/signin", data={"token": token}, headers=_origin(client), allow_redirects=False
    )


async def test_the_eleventh_failed_sign_in_in_a_minute_is_refused_with_retry_after(
    served: tuple[Dashboard, TestClient[Any, Any]],
) -> None:
    _, client = served
    for _ in range(10):
        answer = await _sign_in(client, "fleet_abc123_guess")
        assert answer.status == 401
        assert "unknown or revoked token" in await answer.text()
    refused = await _sign_in(client, "fleet_abc123_guess")
    assert refused.status == 429
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert "too many failed sign-ins from 127.0.0.1: try again in" in await refused.text()
    # While refused, not even the right token is looked at (no oracle for guesses).
    right = await _sign_in(client, RIGHT)
    assert right.status == 429 and COOKIE not in right.cookies


async def test_a_right_token_is_never_slowed_down(
    served: tuple[Dashboard, TestClient[Any, Any]],
) -> None:
    _, client = served
    for _ in range(9):
        assert (await _sign_in(client, "fleet_abc123_guess")).status == 401
    for _ in range(20):
        answer = await _sign_in(client, RIGHT)
        assert answer.status == 303 and answer.headers["Location"] == "/pool"


def _cookie(name: str) -> dict[str, str]:
    session = new_session(name, "viewer", f"cert:{name}", time.time(), 60)
    return {"Cookie": f"{COOKIE}={SessionSigner.for_pool(SecretBox(KEY)).sign(session)}"}


async def _stream(client: TestClient[Any, Any], cookie: dict[str, str]) -> ClientResponse:
    return await client.get("/live", headers=cookie)


async def test_event_streams_are_capped_per_session_and_in_total(
    served: tuple[Dashboard, TestClient[Any, Any]],
) -> None:
    dashboard, client = served
    assert (dashboard.streams.per_session, dashboard.streams.total) == (8, 256)
    dashboard.streams = StreamLimiter(per_session=2, total=3)
    alice, bob, carol = _cookie("alice"), _cookie("bob"), _cookie("carol")
    open_ = [await _stream(client, alice), await _stream(client, alice)]
    assert [s.status for s in open_] == [200, 200]
    assert open_[0].headers["Content-Type"] == "text/event-stream"
    third = await _stream(client, alice)
    assert third.status == 429 and third.headers["Retry-After"] == "15"
    assert "2 live pages open already" in (await third.json())["error"]
    open_.append(await _stream(client, bob))
    assert open_[-1].status == 200
    refused = await _stream(client, carol)  # carol has none: the total is reached
    assert refused.status == 429 and "3 live pages already" in (await refused.json())["error"]

    # A page closes: its stream ends at its next write, and its place is free again.
    open_.pop(0).close()
    deadline = time.monotonic() + 10
    while dashboard.streams.streams > 2:
        assert time.monotonic() < deadline, "the closed stream still counts"
        await dashboard.hub.publish(["pool"])  # makes every stream write
        await asyncio.sleep(0.05)
    again = await _stream(client, carol)
    assert again.status == 200
    for stream in [*open_, again]:
        stream.close()
