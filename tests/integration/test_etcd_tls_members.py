"""A control plane on an etcd cluster of three TLS members, each with a certificate of
its own address only (as an operator's per-member certificates are): it serves, and
losing the member it talks to stops nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.errors import Unavailable
from fleet.spec import load_documents
from fleet.store import Etcd
from fleet.testing import EtcdCluster, EtcdServer, wait_until
from fleet.testing.certs import TestPKI, etcd_tls_args
from fleet.testing.etcd import EtcdTestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from tests.helpers import etcd_json, etcd_prefix, tcp_peers


@pytest.fixture
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    pki = EtcdTestPKI(tmp_path_factory.getbasetemp() / "etcd-pki")
    with EtcdCluster(3, pki=pki) as cluster:
        yield cluster


def start_server(
    cluster: EtcdCluster, pki: TestPKI, tmp_path: Path, prefix: str
) -> FleetServerProcess:
    assert cluster.client_tls is not None
    return FleetServerProcess(
        ",".join(cluster.endpoints),
        prefix,
        tmp_path,
        pki,
        extra_args=["--server-id", "cp1", *etcd_tls_args(cluster.client_tls)],
    ).start(timeout=20)


def members_in_use(server: FleetServerProcess, cluster: EtcdCluster) -> list[EtcdServer]:
    """The members the server process holds a TCP connection to (read from /proc)."""
    assert server.process.pid is not None
    peers = tcp_peers(server.process.pid)
    return [m for m in cluster.members if (m.host, m.client_port) in peers]


def test_a_server_serves_on_three_tls_members_each_with_its_own_certificate(
    tls_cluster: EtcdCluster, pki: TestPKI, tmp_path: Path
) -> None:
    server = start_server(tls_cluster, pki, tmp_path, "/t-tls-members/")
    try:
        with server.client() as client:
            client.apply(load_documents("name: web\nimage: busybox\nreplicas: 1\n", "w"))
        for member in tls_cluster.members:  # written once, read from every member
            found = etcd_json(member, "/t-tls-members/apps/web")
            assert found is not None and found["spec"]["image"] == "busybox"
        leader = wait_until(
            lambda: etcd_json(tls_cluster.members[2], "/t-tls-members/leader"), 10, what="a leader"
        )
        assert leader["candidate"] == "cp1"
    finally:
        server.stop()


def test_losing_the_member_the_server_uses_stops_nothing(
    tls_cluster: EtcdCluster, pki: TestPKI, tmp_path: Path
) -> None:
    prefix = "/t-tls-failover/"
    server = start_server(tls_cluster, pki, tmp_path, prefix)
    try:
        wait_until(
            lambda: etcd_json(tls_cluster.members[1], f"{prefix}leader"), 10, what="cp1 leads"
        )
        leader_key = etcd_prefix(tls_cluster.members[1], f"{prefix}leader")
        used = wait_until(lambda: members_in_use(server, tls_cluster), 10, what="a connection")
        assert len(used) == 1, f"connected to {[m.endpoint for m in used]}"
        lost = used[0]
        lost.stop()
        others = [m for m in tls_cluster.members if m is not lost]

        with server.client() as client:
            began = time.monotonic()
            wait_until(
                lambda: client.apply(load_documents("name: api\nimage: busybox\n", "a")),
                20,
                what="an apply after the member was lost",
                ignore=(Exception,),
            )
            print(f"apply answered {time.monotonic() - began:.2f}s after the member stopped")
        for member in others:
            found = etcd_json(member, f"{prefix}apps/api")
            assert found is not None and found["spec"]["name"] == "api"
        now_used = wait_until(lambda: members_in_use(server, tls_cluster), 10, what="a member")
        assert lost not in now_used
        # The leader's lease was renewed through another member all along: the same
        # leader key (its value says when it was won) outlives the lease's TTL (4 s).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert etcd_prefix(others[0], f"{prefix}leader") == leader_key
            time.sleep(0.5)
    finally:
        server.stop()


def test_a_watch_on_a_member_cut_off_from_the_others_ends(tls_cluster: EtcdCluster) -> None:
    """A member that has lost the cluster's leader would keep a watch open and send
    nothing; fleet's watches ask it to end them then, so the informer moves on."""
    others = tls_cluster.members[1:]

    async def watch_until_it_ends() -> str:
        async with Etcd(tls_cluster.endpoints, tls=tls_cluster.client_tls) as etcd:
            revision = await etcd.revision()
            watch = etcd.watch_prefix(b"/t-cut-off/", revision + 1)
            for member in others:  # frozen: the first member hears from neither
                assert member.pid is not None
                os.kill(member.pid, signal.SIGSTOP)
            began = time.monotonic()
            try:
                async with asyncio.timeout(20):
                    async for _ in watch:
                        pass
            except Unavailable as error:
                return f"{time.monotonic() - began:.1f}s: {error}"
            raise AssertionError("the watch ended without an error")

    try:
        said = asyncio.run(watch_until_it_ends())
    finally:
        for member in others:
            assert member.pid is not None
            os.kill(member.pid, signal.SIGCONT)
    print(said)
    assert "no leader" in said
