"""Lease keep-alives on a real etcd: one LeaseKeepAlive stream per connection, shared by
every caller, and opened again after etcd restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from fleet.errors import Unavailable
from fleet.store._etcd import KEEPALIVE_STREAMS, Etcd
from fleet.testing import EtcdServer


@pytest.fixture(scope="module")
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of this module's own, stopped and started by the tests."""
    server = EtcdServer().start()
    try:
        yield server
    finally:
        server.close()


def test_many_concurrent_keepalives_share_a_few_streams(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            leases = [await etcd.grant(30) for _ in range(5)]
            # 400 refreshes at once, 80 waiting on each lease.
            ttls = await asyncio.gather(*(etcd.keepalive(leases[i % 5]) for i in range(400)))
            assert all(0 < ttl <= 30 for ttl in ttls), ttls
            # Then one after another, as heartbeats come in.
            for lease in leases:
                assert 0 < await etcd.keepalive(lease) <= 30
            # One stream per shard of lease ids, whatever the number of calls.
            assert etcd.keepalive_streams_opened == len({x % KEEPALIVE_STREAMS for x in leases})
            for lease in leases:
                await etcd.revoke(lease)
            began = time.monotonic()
        # close() ended the stream cleanly: etcd answered the half-close at once.
        assert time.monotonic() - began < 1.0

    asyncio.run(scenario())


def test_a_revoked_or_unknown_lease_gets_0(etcd_server: EtcdServer) -> None:
    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            live, revoked = await etcd.grant(30), await etcd.grant(30)
            await etcd.revoke(revoked)
            ttls = await asyncio.gather(
                etcd.keepalive(live),
                etcd.keepalive(revoked),
                etcd.keepalive(live),
                etcd.keepalive(0x7FFF_0000_0000_0001),  # never granted
            )
            assert ttls[0] > 0 and ttls[2] > 0
            assert ttls[1] == 0 and ttls[3] == 0
            shards = {x % KEEPALIVE_STREAMS for x in (live, revoked, 0x7FFF_0000_0000_0001)}
            assert etcd.keepalive_streams_opened == len(shards)
            await etcd.revoke(live)

    asyncio.run(scenario())


async def keepalive_until_it_works(etcd: Etcd, lease: int) -> int:
    while True:
        try:
            return await etcd.keepalive(lease)
        except Unavailable:
            await asyncio.sleep(0.2)


def test_keepalive_fails_while_etcd_is_down_and_works_after_it_restarts(
    own_etcd: EtcdServer,
) -> None:
    async def scenario() -> None:
        async with Etcd([own_etcd.endpoint], timeout=2.0) as etcd:
            lease = await etcd.grant(60)
            assert await etcd.keepalive(lease) > 0
            await asyncio.to_thread(own_etcd.stop)
            # Every waiter fails (the stream broke, or no answer in time); none hangs.
            results = await asyncio.wait_for(
                asyncio.gather(*(etcd.keepalive(lease) for _ in range(20)), return_exceptions=True),
                10,
            )
            assert all(isinstance(r, Unavailable) for r in results), results

            await asyncio.to_thread(own_etcd.start)
            # The lease survived the restart; a new stream refreshes it.
            async with asyncio.timeout(20):
                assert await keepalive_until_it_works(etcd, lease) > 0
            opened = etcd.keepalive_streams_opened
            assert opened >= 2
            ttls = await asyncio.gather(*(etcd.keepalive(lease) for _ in range(50)))
            assert all(ttl > 0 for ttl in ttls)
            assert etcd.keepalive_streams_opened == opened  # one stream again
            await etcd.revoke(lease)

    asyncio.run(scenario())


def test_a_stream_that_stops_answering_times_out_and_is_replaced(own_etcd: EtcdServer) -> None:
    """etcd frozen (SIGSTOP): the connection stays up but nothing answers. Callers get
    Unavailable after the timeout, and the next keep-alive opens a fresh stream."""

    async def scenario() -> None:
        async with Etcd([own_etcd.endpoint], timeout=1.0) as etcd:
            lease = await etcd.grant(60)
            assert await etcd.keepalive(lease) > 0
            assert own_etcd.pid is not None
            os.kill(own_etcd.pid, signal.SIGSTOP)
            try:
                began = time.monotonic()
                results = await asyncio.gather(
                    *(etcd.keepalive(lease) for _ in range(10)), return_exceptions=True
                )
                took = time.monotonic() - began
            finally:
                os.kill(own_etcd.pid, signal.SIGCONT)
            assert all(isinstance(r, Unavailable) for r in results), results
            assert took < 3.0
            async with asyncio.timeout(10):
                assert await keepalive_until_it_works(etcd, lease) > 0
            assert etcd.keepalive_streams_opened == 2
            await etcd.revoke(lease)

    asyncio.run(scenario())
