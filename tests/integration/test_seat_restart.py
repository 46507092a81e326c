"""A control plane restarted in its seat takes over its hosts' keys (#24 item 6): real
``fleet server`` processes, a real agent on the namespaced Docker host, real etcd.

Killed (or stopped) and started again on the same address, the replica takes over the
lease its hosts' keys are bound to: the agent reconnects, the host's reports stay as
they were (not one rewritten), its containers run on, and it is never marked down. A
host that does not come back is marked down once it has had the time a silent host has,
and an agent's reconnect backoff on top.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from docker.errors import NotFound

from fleet._time import epoch
from fleet.client import FleetClient
from fleet.controlplane.server import AGENTS_BACK_WITHIN
from fleet.spec import load_documents
from fleet.store import KeyLayout
from fleet.testing import DockerHost, EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from tests.conftest import ensure_image
from tests.helpers import b64, etcd_json, etcd_post, prefix_end

# Seconds: --host-down-after, which is also the TTL of the lease taken over: it must
# outlast a stop and a start of a Python process on a loaded machine (a restart slower
# than the TTL finds the lease expired, and grants a new one); shorter where the test
# waits for a host that does not come back to be down.
DOWN_AFTER = 15
DOWN_AFTER_SHORT = 8


class Stored(NamedTuple):
    mod_revision: int
    lease: int


def stored(etcd: EtcdServer, prefix: bytes) -> dict[str, Stored]:
    """Every key under ``prefix`` with its mod revision and lease, from etcd."""
    return {key: at for key, (at, _) in stored_values(etcd, prefix).items()}


def stored_values(etcd: EtcdServer, prefix: bytes) -> dict[str, tuple[Stored, bytes]]:
    """Every key under ``prefix`` with its mod revision, lease and value, in one read
    (at one revision: a revision and a value read apart can be two writes', and a
    report's first revision paired with its second's value once passed for a report
    rewritten after the restart)."""
    body = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
    return {
        base64.b64decode(kv["key"]).decode(): (
            Stored(int(kv["mod_revision"]), int(kv.get("lease", 0))),
            base64.b64decode(kv.get("value", "")),
        )
        for kv in etcd_post(etcd, "/v3/kv/range", body).get("kvs") or []
    }


class Pool(NamedTuple):
    etcd: EtcdServer
    layout: KeyLayout
    server: FleetServerProcess
    agent: FleetAgentProcess
    host: DockerHost


@pytest.fixture
def pool(
    request: pytest.FixtureRequest,
    etcd_server: EtcdServer,
    clean_host: DockerHost,
    pki: TestPKI,
    tmp_path: Path,
) -> Iterator[Pool]:
    prefix = (
        "/t-seat-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[-30:].strip("-") + "/"
    )
    down_after = getattr(request, "param", DOWN_AFTER)
    timing = ["--host-down-after", f"{down_after}s", "--heartbeat-interval", "1s"]
    server = FleetServerProcess(
        etcd_server.endpoint, prefix, tmp_path, pki, log_name="server-1.log", extra_args=timing
    ).start()
    agent = FleetAgentProcess(
        [server.address], clean_host.name, clean_host.docker_url, tmp_path, pki
    ).start()
    running = Pool(etcd_server, KeyLayout(prefix), server, agent, clean_host)
    try:
        yield running
    finally:
        agent.stop()
        server.stop()  # unless the test got as far as its restart
        print(agent.process.log_tail(40))


def restart(pool: Pool, how: signal.Signals) -> FleetServerProcess:
    """The server killed (SIGKILL) or stopped (SIGTERM), and started again on its address."""
    if how is signal.SIGKILL:
        pool.server.kill()
    else:
        pool.server.stop()
    print(pool.server.process.log_tail(30))
    return pool.server.again("server-2.log").start()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_a_restarted_replica_takes_over_its_hosts_keys(pool: Pool, how: signal.Signals) -> None:
    host, layout, etcd = pool.host.name, pool.layout, pool.etcd
    before, reports = two_kept_running(pool)
    alive_key = layout.alive(host).decode()
    alive = stored(etcd, layout.alive(host))[alive_key]
    assert alive.lease != 0

    restarted_at = time.time()
    server = restart(pool, how)
    try:
        status_key = layout.status(host).decode()
        # Back: a new session (the liveness key written again) and its first heartbeat
        # stored (the host's status record written since the restart).
        wait_until(
            lambda: (
                stored(etcd, layout.alive(host))[alive_key].mod_revision > alive.mod_revision
                and reported_since(etcd, status_key, restarted_at)
            ),
            30,
            what="the agent back, and its first report since the restart stored",
        )
        now = stored(etcd, layout.alive(host))[alive_key]
        assert now.lease == alive.lease, f"a new lease: {serving_line(server)}"
        # Not one report written again: the new session's writer started from them.
        after = running_reports(etcd, layout, host)
        assert after == reports, written_again(etcd, reports, after)
        assert {c.id for c in wait_containers_of(pool, 2)} == before
        with server.client() as client:
            assert connected(client, host)
            downs = [e for e in client.events(since_seconds=120) if e.kind == "host-down"]
            assert downs == []
        assert "with the lease of" in whole_log(server)
    finally:
        server.stop()
        print(server.process.log_tail(40))


def test_a_host_holding_its_set_is_not_sent_it_again(pool: Pool) -> None:
    """After a restart the agent registers naming the set it holds, which the new server
    does not send again; the next change to it still reaches the host."""
    host, layout, etcd = pool.host.name, pool.layout, pool.etcd
    two_kept_running(pool)
    restarted_at = time.time()
    server = restart(pool, signal.SIGKILL)
    try:
        status_key = layout.status(host).decode()
        wait_until(
            lambda: reported_since(etcd, status_key, restarted_at),
            30,
            what="the agent's first report since the restart stored",
        )
        with server.client() as client:
            client.scale("kept", 3)
        wait_containers_of(pool, 3)
        log = pool.agent.process.log_path.read_text(errors="replace")
        since_restart = log[log.rindex("registered with") :]
        taken = re.findall(r"desired set \d+ taken: (\d+) containers", since_restart)
        # One set since the restart: the scaled one (3), not the 2 it held first.
        assert taken == ["3"], since_restart[-3000:]
    finally:
        server.stop()
        print(server.process.log_tail(40))


@pytest.mark.parametrize("pool", [DOWN_AFTER_SHORT], indirect=True, ids=["short-ttl"])
def test_a_host_that_does_not_come_back_is_marked_down(pool: Pool) -> None:
    host, layout, etcd = pool.host.name, pool.layout, pool.etcd
    with pool.server.client() as client:
        wait_until(lambda: connected(client, host), 20, what="the agent to connect")
    alive_key = layout.alive(host).decode()
    # The server first, so it cannot see the agent's stream end and mark the host down.
    pool.server.kill()
    pool.agent.kill()
    server = pool.server.again("server-2.log").start()
    try:
        assert alive_key in stored(etcd, layout.alive(host)), f"keys gone: {serving_line(server)}"
        # Given what a host silent for a TTL is given, and an agent's reconnect backoff.
        wait_until(
            lambda: alive_key not in stored(etcd, layout.alive(host)),
            DOWN_AFTER_SHORT + AGENTS_BACK_WITHIN + 10,
            what="the host that did not come back marked down",
        )
        marked_down = f"did not come back: marked down ({host})"
        # On the server's own clock: from taking the lease over to marking the host down
        # (the test's clock starts only once start() has seen the server ready, seconds
        # later on a loaded machine: CI saw 3 s).
        took = logged_at(server, marked_down) - logged_at(server, "with the lease of")
        assert took >= DOWN_AFTER_SHORT + AGENTS_BACK_WITHIN - 0.5, f"down {took:.1f}s after"
    finally:
        server.stop()
        print(server.process.log_tail(40))


# ------------------------------------------------------------------ helpers


def whole_log(server: FleetServerProcess) -> str:
    """The server's whole log (its tail is its last 64 KiB: at debug level, a few
    seconds' worth)."""
    return server.process.log_path.read_text(errors="replace")


def logged_at(server: FleetServerProcess, words: str) -> float:
    """When the server first logged a line with ``words`` (seconds, its log's clock)."""
    line = next((line for line in whole_log(server).splitlines() if words in line), None)
    assert line is not None, f"the server never logged {words!r}"
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


def serving_line(server: FleetServerProcess) -> str:
    """What the server said of the lease it serves with (taken over, or why not)."""
    return next((line for line in whole_log(server).splitlines() if "serving as" in line), "")


def connected(client: FleetClient, host: str) -> bool:
    return any(h.connected for h in client.hosts() if h.host_id == host)


def two_kept_running(pool: Pool) -> tuple[set[str], dict[str, tuple[Stored, dict[str, Any]]]]:
    """App ``kept`` applied with 2 replicas, once both run on the host and are reported
    running: their container ids, and their reports as stored."""
    host, layout, etcd = pool.host.name, pool.layout, pool.etcd
    with pool.server.client() as client:
        wait_until(lambda: connected(client, host), 20, what="the agent to connect")
        text = (
            f"name: kept\nimage: {ensure_image(pool.host)}\nreplicas: 2\ncommand: [sleep, '3600']\n"
        )
        client.apply(load_documents(text, "kept.yaml"))
        ids = {c.id for c in wait_containers_of(pool, 2)}
        reports = wait_until(
            lambda: both_running(running_reports(etcd, layout, host)),
            30,
            what="both containers reported running",
        )
    return ids, reports


def wait_containers_of(pool: Pool, count: int) -> list[Any]:
    """The host's ``count`` containers of the app, once all run (read through Docker)."""
    docker = pool.host.client()
    try:
        found: list[Any] = []

        def settled() -> bool:
            nonlocal found
            found = docker.containers.list(filters={"label": "fleet.app=kept"}, all=True)
            return len(found) == count and all(c.status == "running" for c in found)

        wait_until(settled, 60, what=f"{count} running containers", ignore=(NotFound,))
        return found
    finally:
        docker.close()


def running_reports(
    etcd: EtcdServer, layout: KeyLayout, host: str
) -> dict[str, tuple[Stored, dict[str, Any]]]:
    """The host's container reports that say running with their memory limit (which the
    agent reports once it has sampled the container's stats: the report's last change),
    with their mod revisions."""
    found = {
        key: (at, json.loads(value))
        for key, (at, value) in stored_values(etcd, layout.reports(host)).items()
    }
    return {
        key: (at, report)
        for key, (at, report) in found.items()
        if report.get("state") == "running" and report.get("memory_limit", 0) > 0
    }


def both_running(
    reports: dict[str, tuple[Stored, dict[str, Any]]],
) -> dict[str, tuple[Stored, dict[str, Any]]] | None:
    return reports if len(reports) == 2 else None


def written_again(
    etcd: EtcdServer,
    before: dict[str, tuple[Stored, dict[str, Any]]],
    after: dict[str, tuple[Stored, dict[str, Any]]],
) -> str:
    """For a failure's message: which reports changed, in which fields, and the keys
    written at each revision since the first of them (who wrote, before the restart or
    after)."""
    lines = []
    for key in sorted(before.keys() | after.keys()):
        (was, old), (now, new) = before.get(key, (None, {})), after.get(key, (None, {}))
        fields = {
            f: (old.get(f), new.get(f)) for f in old.keys() | new.keys() if old.get(f) != new.get(f)
        }
        lines.append(f"{key}: {was} -> {now}, fields changed: {fields}")
    revisions = [at.mod_revision for at, _ in [*before.values(), *after.values()]]
    for revision in range(min(revisions, default=0), max(revisions, default=-1) + 1):
        body = {
            "key": b64(b"\0"),
            "range_end": b64(b"\0"),  # every key
            "revision": revision,
            "min_mod_revision": revision,
            "max_mod_revision": revision,
            "keys_only": True,
        }
        kvs = etcd_post(etcd, "/v3/kv/range", body).get("kvs") or []
        keys = ", ".join(base64.b64decode(kv["key"]).decode() for kv in kvs)
        lines.append(f"written at {revision}: {keys}")
    return "\n".join(lines)


def reported_since(etcd: EtcdServer, status_key: str, since: float) -> bool:
    record = etcd_json(etcd, status_key)
    when = epoch(record["reported_at"]) if record else None
    return when is not None and when >= since
