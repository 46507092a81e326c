"""Agents' reports on a real etcd: many hosts' reports share transactions, a host whose
lease is gone fails only its own report, and the queue writes each host's newest
heartbeat, one write at a time per host, read back from etcd."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from fleet.controlplane.reportqueue import ReportQueue
from fleet.controlplane.reports import ReportWriter
from fleet.proto import fleet_pb2 as pb
from fleet.store import Etcd, HostReport, KeyLayout, Store
from fleet.store.records import ContainerReport, ResourceAmounts, StatusRecord
from fleet.store.store import TXN_KEYS
from fleet.testing import EtcdServer
from tests.helpers import etcd_prefix


def status(host: str) -> StatusRecord:
    return StatusRecord(
        host_id=host,
        reported_at="2026-11-29T00:00:00Z",
        applied_version=1,
        usage=ResourceAmounts(cpu=0.5, memory=1 << 20),
    )


def reports(n: int, app: str = "web") -> list[ContainerReport]:
    return [
        ContainerReport(
            app=app,
            slot=slot,
            revision=1,
            spec_hash="h",
            name=f"fleet-{app}-{slot}",
            state="running",
            container_id=f"c{slot}",
        )
        for slot in range(n)
    ]


def stored_hosts(etcd_server: EtcdServer, prefix: str) -> dict[str, int]:
    """Report keys per host, read straight from etcd."""
    counts: dict[str, int] = {}
    for key in etcd_prefix(etcd_server, f"{prefix}reports/"):
        host = key.removeprefix(f"{prefix}reports/").split("/")[0]
        counts[host] = counts.get(host, 0) + 1
    return counts


def test_reports_of_many_hosts_share_transactions_and_stay_bound_to_their_leases(
    etcd_server: EtcdServer,
) -> None:
    prefix = "/t-report-many/"

    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            store = Store(etcd, KeyLayout(prefix))
            leases = {f"h{i}": await etcd.grant(60) for i in range(30)}
            batch = [
                HostReport(host, lease, status(host), reports(7)) for host, lease in leases.items()
            ]
            # One host's report alone is larger than a transaction: it goes on its own.
            big = await etcd.grant(60)
            batch.append(HostReport("big", big, status("big"), reports(TXN_KEYS + 30)))
            before = await etcd.revision()
            assert await store.report_many(batch) == [None] * len(batch)
            counts = stored_hosts(etcd_server, prefix)
            assert counts == {**{host: 7 for host in leases}, "big": TXN_KEYS + 30}
            # 30 reports of 8 keys in transactions of at most 100 keys: 3 of them, and
            # the big one in two; each transaction is one etcd revision.
            assert await etcd.revision() - before == 3 + 2
            # Each host's keys are bound to its own lease.
            await etcd.revoke(leases["h3"])
            assert "h3" not in stored_hosts(etcd_server, prefix)
            assert f"{prefix}status/h3" not in etcd_prefix(etcd_server, f"{prefix}status/")
            assert len(stored_hosts(etcd_server, prefix)) == 30
            for lease in [*leases.values(), big]:
                await etcd.revoke(lease)

    asyncio.run(scenario())


def test_a_host_whose_lease_is_gone_fails_only_its_own_report(etcd_server: EtcdServer) -> None:
    prefix = "/t-report-gone/"

    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            store = Store(etcd, KeyLayout(prefix))
            leases = {f"h{i}": await etcd.grant(60) for i in range(5)}
            await etcd.revoke(leases["h2"])  # its session is over; its last report is late
            errors = await store.report_many(
                [HostReport(h, lease, status(h), reports(3)) for h, lease in leases.items()]
            )
            assert [e is not None for e in errors] == [False, False, True, False, False]
            assert "lease not found" in str(errors[2])
            assert stored_hosts(etcd_server, prefix) == {"h0": 3, "h1": 3, "h3": 3, "h4": 3}
            for host, lease in leases.items():
                if host != "h2":
                    await etcd.revoke(lease)

    asyncio.run(scenario())


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not so after {within}s"
        await asyncio.sleep(0.02)


def beat(*slots: int, state: str = "running") -> pb.Heartbeat:
    return pb.Heartbeat(
        usage=pb.Resources(cpu=1.0, memory_bytes=1 << 30),
        applied_version=3,
        containers=[
            pb.ContainerStatus(app="web", slot=s, revision=1, state=state, container_id=f"c{s}")
            for s in slots
        ],
    )


def test_the_queue_stores_each_hosts_newest_heartbeat(etcd_server: EtcdServer) -> None:
    prefix = "/t-report-queue/"

    async def scenario() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            queue = ReportQueue(Store(etcd, KeyLayout(prefix)))
            waits: list[float] = []
            queue.observe_write = waits.append
            runner = asyncio.create_task(queue.run())
            writers = {f"h{i}": ReportWriter(f"h{i}", refresh=60) for i in range(50)}
            leases = {host: await etcd.grant(60) for host in writers}
            # Two heartbeats per host before the queue runs: only the newer is written.
            for host, writer in writers.items():
                queue.submit(writer, leases[host], beat(0, 1, 2, state="created"))
                queue.submit(writer, leases[host], beat(0, 1))
            await eventually(lambda: stored_hosts(etcd_server, prefix) == {h: 2 for h in writers})
            stored = etcd_prefix(etcd_server, f"{prefix}reports/h7/")
            assert {json.loads(v)["state"] for v in stored.values()} == {"running"}
            assert len(waits) == 50
            # A heartbeat that changes nothing is not written (and is still timed).
            revision = await etcd.revision()
            queue.submit(writers["h7"], leases["h7"], beat(0, 1))
            await eventually(lambda: len(waits) == 51)
            assert await etcd.revision() == revision
            # A container gone from the heartbeat is deleted.
            queue.submit(writers["h7"], leases["h7"], beat(1))
            await eventually(lambda: stored_hosts(etcd_server, prefix)["h7"] == 1)
            runner.cancel()
            for lease in leases.values():
                await etcd.revoke(lease)

    asyncio.run(scenario())
