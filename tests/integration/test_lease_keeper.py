"""The lease keeper on a real etcd: leases renewed from its own thread while the event
loop vouches for them, through a blocked loop, and let go when the loop is wedged;
hosts found silent in the loop's own time."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from fleet.store import Etcd, LeaseKeeper
from fleet.store.leases import STALL_LOGGED
from fleet.testing import EtcdServer
from tests.helpers import eventually

TTL = 2


@asynccontextmanager
async def kept(
    etcd_server: EtcdServer, **options: float
) -> AsyncIterator[tuple[Etcd, LeaseKeeper]]:
    keeper = LeaseKeeper([etcd_server.endpoint], tick=0.1, **options)
    async with Etcd([etcd_server.endpoint]) as etcd:
        keeper.start(asyncio.get_running_loop())
        try:
            yield etcd, keeper
        finally:
            keeper.close()


async def bound_key(etcd: Etcd, name: str) -> tuple[int, bytes]:
    """A fresh lease with a key bound to it: the key exists exactly while the lease does."""
    lease = await etcd.grant(TTL)
    key = f"/t-lease-keeper/{name}".encode()
    await etcd.put(key, b"x", lease=lease)
    return lease, key


async def gone(etcd: Etcd, key: bytes) -> bool:
    return await etcd.get(key) is None


def block_the_loop(seconds: float) -> None:
    """Hold the event loop (called from a coroutine): nothing else on it runs."""
    time.sleep(seconds)


def test_a_lease_lives_while_the_loop_keeps_up(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        async with kept(etcd_server) as (etcd, keeper):
            lease, key = await bound_key(etcd, "kept")
            keeper.hold(lease, TTL)
            await asyncio.sleep(3 * TTL)
            assert await etcd.get(key) is not None
            assert keeper.lost(lease) is None
            assert keeper.renewals >= 6  # about every TTL/4: 12 in 3 TTLs, at least half
            keeper.release(lease)
            await etcd.revoke(lease)

    asyncio.run(scenario())


def test_a_blocked_event_loop_does_not_lose_its_leases(etcd_server: EtcdServer) -> None:
    """The loop does nothing for twice the TTL (as under a burst of work): the lease is
    still renewed, from the keeper's thread."""

    async def scenario() -> None:
        async with kept(etcd_server) as (etcd, keeper):
            lease, key = await bound_key(etcd, "blocked")
            keeper.hold(lease, TTL)
            block_the_loop(2 * TTL)
            assert keeper.lost(lease) is None
            assert await etcd.get(key) is not None
            keeper.release(lease)
            await etcd.revoke(lease)

    asyncio.run(scenario())


def test_a_host_heard_from_is_not_silent_and_a_quiet_one_is_after_its_ttl(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> None:
        async with kept(etcd_server) as (_, keeper):
            silenced: list[str] = []
            keeper.watch(1, TTL, lambda: silenced.append("talker"))
            keeper.watch(2, TTL, lambda: silenced.append("quiet"))
            began = time.monotonic()
            while not silenced:
                assert time.monotonic() - began < TTL + 2, "the quiet host never went silent"
                keeper.heard(1)
                await asyncio.sleep(0.1)
            took = time.monotonic() - began
            assert silenced == ["quiet"]  # called on the loop, once
            assert took >= TTL - 0.2  # not before its TTL
            assert keeper.silent(2) and not keeper.silent(1)

    asyncio.run(scenario())


def test_a_blocked_event_loop_does_not_make_its_hosts_silent(etcd_server: EtcdServer) -> None:
    """A host keeps talking while the loop is blocked: what it sent waits in the
    socket, and is read once the loop runs again. The keeper counts the host's silence
    in the loop's time, so the block does not make it silent (nor does the catch-up:
    the loop runs the probes queued meanwhile before it reads its sockets)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        theirs, ours = socket.socketpair()
        ours.setblocking(False)
        talking = threading.Event()
        talking.set()

        def host() -> None:
            while talking.is_set():
                theirs.send(b".")
                time.sleep(0.1)

        async def session() -> None:
            while await loop.sock_recv(ours, 4096):
                keeper.heard(7)

        async with kept(etcd_server) as (_, keeper):
            silenced: list[int] = []
            keeper.watch(7, TTL, lambda: silenced.append(7))
            sender = threading.Thread(target=host, daemon=True)
            sender.start()
            reader = asyncio.create_task(session())
            try:
                await asyncio.sleep(0.5)
                block_the_loop(2 * TTL)
                await asyncio.sleep(1.0)  # the loop catches up, the keeper looks again
                assert silenced == [] and not keeper.silent(7)
                # The host stops talking: it is silent one TTL later.
                talking.clear()
                sender.join()
                await eventually(lambda: bool(silenced), TTL + 2, "the host silent")
            finally:
                reader.cancel()
                theirs.close()
                ours.close()

    asyncio.run(scenario())


def test_a_loop_wedged_past_the_stall_limit_loses_the_leadership(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> None:
        async with kept(etcd_server, stall_limit=0.5) as (etcd, keeper):
            lease, key = await bound_key(etcd, "wedged")
            keeper.hold(lease, TTL)
            block_the_loop(TTL + 0.5)  # wedged: the keeper stops renewing after 0.5 s
            why = await asyncio.wait_for(keeper.wait_lost(lease), 1)
            assert why.startswith("expired: not renewed")
            await eventually(lambda: gone(etcd, key), 1, f"{key!r} gone")

    asyncio.run(scenario())


def test_a_lease_revoked_elsewhere_is_reported_lost(etcd_server: EtcdServer) -> None:
    """Someone revoked the lease: the next renewal hears TTL 0, and whoever waits on
    the lease learns of it."""

    async def scenario() -> None:
        async with kept(etcd_server) as (etcd, keeper):
            lease, _ = await bound_key(etcd, "elsewhere")
            keeper.hold(lease, TTL)
            waiting = asyncio.create_task(keeper.wait_lost(lease))
            await etcd.revoke(lease)
            assert await asyncio.wait_for(waiting, TTL + 1) == "expired in etcd"

    asyncio.run(scenario())


def test_a_held_loop_is_logged_with_where_it_is(
    etcd_server: EtcdServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop that runs nothing for over STALL_LOGGED seconds has its stack logged (at
    most once every ten seconds): what held it is in the log."""

    def a_long_stretch_of_work() -> None:
        block_the_loop(STALL_LOGGED + 1.0)

    async def scenario() -> None:
        async with kept(etcd_server):
            await asyncio.sleep(0.3)
            assert "event loop" not in caplog.text, "a loop keeping up is not logged"
            a_long_stretch_of_work()
            await asyncio.sleep(0.3)
            a_long_stretch_of_work()  # within ten seconds of the first: not again

    with caplog.at_level(logging.WARNING, logger="fleet.store.leases"):
        asyncio.run(scenario())
    [stall] = [r for r in caplog.records if "event loop has run none" in r.getMessage()]
    assert "a_long_stretch_of_work" in stall.getMessage()
    assert "block_the_loop" in stall.getMessage()
