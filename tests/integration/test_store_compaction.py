"""Compaction of etcd's history on a real etcd: the compactor keeps one interval of
history and drops what is older; `fleet server` runs it while it leads, and never with
`--compact-interval 0`. History is read back over etcd's JSON gateway, not fleet's code."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.store._etcd import Etcd
from fleet.store.compactor import Compactor
from fleet.testing import EtcdServer, wait_until
from fleet.testing.fleetprocs import FleetServerProcess
from tests.helpers import b64, etcd_post


@pytest.fixture(scope="module")
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of this module's own: compaction is global, so it must not touch the
    session's etcd."""
    server = EtcdServer().start()
    try:
        yield server
    finally:
        server.close()


def put(server: EtcdServer, key: str, value: str) -> int:
    """Put over the gateway; the revision it made."""
    body = {"key": b64(key.encode()), "value": b64(value.encode())}
    result = etcd_post(server, "/v3/kv/put", body)
    return int(result["header"]["revision"])


def read_at(server: EtcdServer, key: str, revision: int = 0) -> str | None:
    """``key``'s value at ``revision`` (0: now); raises ``Compacted`` when that is gone."""
    try:
        result = etcd_post(server, "/v3/kv/range", {"key": b64(key.encode()), "revision": revision})
    except urllib.error.HTTPError as error:
        body = error.read().decode()
        if "compacted" in body:
            raise Compacted(body) from None
        raise
    kvs = result.get("kvs") or []
    return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None


class Compacted(Exception):
    pass


def compacted(server: EtcdServer, key: str, revision: int) -> bool:
    try:
        read_at(server, key, revision)
    except Compacted:
        return True
    return False


def test_the_compactor_drops_history_older_than_the_previous_tick(own_etcd: EtcdServer) -> None:
    old = put(own_etcd, "/t-compact/k", "old")
    put(own_etcd, "/t-compact/k", "new")
    assert read_at(own_etcd, "/t-compact/k", old) == "old"

    async def scenario() -> tuple[int, int]:
        async with Etcd([own_etcd.endpoint]) as etcd:
            compactor = Compactor(etcd, interval=0.2)
            task = asyncio.create_task(compactor.run())
            try:
                for _ in range(200):  # 10 s
                    if compactor.compacted:
                        break
                    await asyncio.sleep(0.05)
                now = await etcd.revision()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Compacting again as far, or less far, is not an error.
            assert not await etcd.compact(compactor.compacted)
            assert not await etcd.compact(old)
            return compactor.compacted, now

    to, now = asyncio.run(scenario())
    # At the second tick it compacted to the revision of the first: after both writes.
    assert old < to <= now
    assert compacted(own_etcd, "/t-compact/k", old)
    # The history since the previous tick is kept, and the current keys are intact.
    assert read_at(own_etcd, "/t-compact/k", to) == "new"
    assert read_at(own_etcd, "/t-compact/k") == "new"


def test_the_leader_compacts_etcd_and_interval_0_never_does(
    own_etcd: EtcdServer, tmp_path: Path
) -> None:
    prefix = "/t-compact-server/"
    # --compact-interval 0: no compaction however long it leads.
    never = FleetServerProcess(
        own_etcd.endpoint,
        prefix,
        tmp_path,
        None,
        log_name="never.log",
        extra_args=["--compact-interval", "0"],
    ).start()
    try:
        wait_until(lambda: read_at(own_etcd, f"{prefix}leader"), 10, what="it to lead")
        first = put(own_etcd, "/t-compact-server-data/k", "first")
        for i in range(20):
            put(own_etcd, "/t-compact-server-data/k", f"v{i}")
        time.sleep(2)
        assert read_at(own_etcd, "/t-compact-server-data/k", first) == "first"
    finally:
        never.stop()
    assert "compacted" not in never.process.log_tail(500)

    # Every 0.3 s: the revision of the first tick is compacted away at the second.
    server = FleetServerProcess(
        own_etcd.endpoint,
        prefix,
        tmp_path,
        None,
        log_name="compacting.log",
        extra_args=["--compact-interval", "300ms"],
    ).start()
    try:
        put(own_etcd, "/t-compact-server-data/k", "last")
        wait_until(
            lambda: compacted(own_etcd, "/t-compact-server-data/k", first),
            15,
            what="the leader to compact etcd",
        )
        assert read_at(own_etcd, "/t-compact-server-data/k") == "last"
    finally:
        server.stop()
        print(server.process.log_tail(40))
    assert "compacted etcd's history up to revision" in server.process.log_tail(500)
