"""The lease keeper on a real etcd: leases renewed from its own thread while the event
loop vouches for them, through a blocked loop, and let go when the holder or the loop
goes quiet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fleet.store import Etcd, LeaseKeeper
from fleet.testing import EtcdServer

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


def block_the_loop(seconds: float) -> None:
    """Hold the event loop (called from a coroutine): nothing else on it runs."""
    time.sleep(seconds)


async def wait_gone(etcd: Etcd, key: bytes, within: float) -> float:
    began = time.monotonic()
    while await etcd.get(key) is not None:
        assert time.monotonic() - began < within, f"{key!r} still there after {within}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


def test_a_host_lease_lives_while_the_host_is_heard(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        async with kept(etcd_server) as (etcd, keeper):
            lease, key = await bound_key(etcd, "heard")
            keeper.hold_host(lease, TTL)
            began = time.monotonic()
            while time.monotonic() - began < 3 * TTL:
                keeper.heard(lease)
                await asyncio.sleep(0.3)
            assert await etcd.get(key) is not None
            assert keeper.lost(lease) is None
            assert keeper.renewals >= 6  # about every TTL/4: 12 in 3 TTLs, at least half
            keeper.release(lease)
            await etcd.revoke(lease)

    asyncio.run(scenario())


def test_a_silent_host_is_revoked_about_one_ttl_after_its_last_word(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> None:
        async with kept(etcd_server) as (etcd, keeper):
            lease, key = await bound_key(etcd, "silent")
            keeper.hold_host(lease, TTL)
            keeper.heard(lease)
            took = await wait_gone(etcd, key, within=TTL + 2)
            assert took >= TTL - 0.2  # not before its TTL
            assert (keeper.lost(lease) or "").startswith("was revoked")

    asyncio.run(scenario())


def test_a_blocked_event_loop_does_not_cost_its_hosts_their_leases(
    etcd_server: EtcdServer,
) -> None:
    """The loop does nothing for twice the TTL (as under a burst of work): the leases
    of hosts it heard from just before are still renewed, from the keeper's thread."""

    async def scenario() -> None:
        async with kept(etcd_server) as (etcd, keeper):
            lease, key = await bound_key(etcd, "blocked")
            keeper.hold_host(lease, TTL)
            keeper.heard(lease)
            block_the_loop(2 * TTL)
            assert keeper.lost(lease) is None
            assert await etcd.get(key) is not None
            keeper.release(lease)
            await etcd.revoke(lease)

    asyncio.run(scenario())


def test_a_loop_wedged_past_the_stall_limit_loses_the_leadership(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> None:
        async with kept(etcd_server, stall_limit=0.5) as (etcd, keeper):
            lease, key = await bound_key(etcd, "wedged")
            keeper.hold_leader(lease, TTL)
            block_the_loop(TTL + 0.5)  # wedged: the keeper stops renewing after 0.5 s
            why = await asyncio.wait_for(keeper.wait_lost(lease), 1)
            assert why.startswith("expired: not renewed")
            await wait_gone(etcd, key, within=1)

    asyncio.run(scenario())


def test_a_lease_revoked_elsewhere_is_reported_lost(etcd_server: EtcdServer) -> None:
    """Another replica took the host over (it revoked the old lease): the next renewal
    hears TTL 0 and whoever waits on the lease learns of it."""

    async def scenario() -> None:
        async with kept(etcd_server) as (etcd, keeper):
            lease, _ = await bound_key(etcd, "elsewhere")
            keeper.hold_leader(lease, TTL)
            waiting = asyncio.create_task(keeper.wait_lost(lease))
            await etcd.revoke(lease)
            assert await asyncio.wait_for(waiting, TTL + 1) == "expired in etcd"

    asyncio.run(scenario())
