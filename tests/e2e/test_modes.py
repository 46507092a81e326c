"""Global apps and jobs end to end on namespaced docker hosts, checked through Docker."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from tests.conftest import PoolFactory
from tests.helpers import fleet_containers

IMAGE = "fleet-test/modes:v1"
# What each host's agent claims (--label role=...): selectable as agent.role only. The
# role constraints match is the one admins set (fleet label host).
CLAIMS = {"h1": "edge", "h2": "core", "h3": "edge", "h4": "edge"}


@dataclass
class Pool4:
    pool: HostPool
    server: FleetServerProcess
    client: FleetClient
    tmp_path: Path
    pki: TestPKI
    agents: dict[str, FleetAgentProcess] = field(default_factory=dict)

    def start_agent(self, name: str) -> None:
        host = self.pool.host(name)
        self.agents[name] = FleetAgentProcess(
            [self.server.address],
            name,
            host.docker_url,
            self.tmp_path,
            self.pki,
            {"role": CLAIMS[name]},
            ["--advertise-address", host.address],
        ).start()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.server.cli(*args, timeout=timeout)

    def containers(self, app: str, *, every: bool = False) -> dict[str, list[Any]]:
        """Each host's containers of ``app`` (running ones unless ``every``), via Docker."""
        found = {}
        for host in self.pool.hosts:
            listed = fleet_containers(host.client(), app, all=every)
            found[host.name] = [c for c in listed if every or c.status == "running"]
        return found


@pytest.fixture
def four(
    request: pytest.FixtureRequest,
    docker_hosts: PoolFactory,
    etcd_server: EtcdServer,
    pki: TestPKI,
    tmp_path: Path,
) -> Iterator[Pool4]:
    pool = docker_hosts(4)
    for host in pool.hosts:
        host.remove_all_containers(label="fleet.app")
        ensure_image(host.client(), "fleet-test/modes", "v1", "modes v1\n")
    prefix = f"/e2e-{request.node.name[:40].replace('_', '-')}/"
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    client = server.client()
    fleet = Pool4(pool, server, client, tmp_path, pki)
    try:
        yield fleet
    finally:
        client.close()
        for agent in fleet.agents.values():
            agent.stop()
        server.stop()
        print(server.process.log_tail(80))
        for agent in fleet.agents.values():
            print(agent.process.log_tail(30))
        for host in pool.hosts:
            host.remove_all_containers(label="fleet.app")


def connected(client: FleetClient, count: int) -> bool:
    return len([h for h in client.hosts() if h.connected]) == count


def test_global_app_runs_one_replica_on_every_matching_host(four: Pool4) -> None:
    client = four.client
    for name in ("h1", "h2", "h3"):
        four.start_agent(name)
    wait_until(lambda: connected(client, 3), 30, what="3 agents")
    for name in ("h1", "h3"):
        labeled = four.cli("label", "host", name, "role=edge")
        assert labeled.returncode == 0, labeled.stdout + labeled.stderr
    client.apply(
        load_documents(
            f"name: agent\nimage: {IMAGE}\nmode: global\nresources: {{memory: 16Mi}}\n"
            f"---\nname: edge\nimage: {IMAGE}\nmode: global\nconstraints: [role=edge]\n"
            f"---\nname: claimed\nimage: {IMAGE}\nmode: global\n"
            "constraints: [agent.role=core]\n",
            "global.yaml",
        )
    )

    def per_host(app: str) -> dict[str, int]:
        return {h: len(cs) for h, cs in four.containers(app).items()}

    wait_until(
        lambda: per_host("agent") == {"h1": 1, "h2": 1, "h3": 1, "h4": 0}, 60, what="1 per host"
    )
    wait_until(
        lambda: per_host("edge") == {"h1": 1, "h2": 0, "h3": 1, "h4": 0}, 60, what="edge only"
    )
    # A constraint on agent.* selects on what the host's agent says of itself.
    wait_until(
        lambda: per_host("claimed") == {"h1": 0, "h2": 1, "h3": 0, "h4": 0},
        60,
        what="agent.role=core only",
    )

    # A host that joins gets its replica within seconds.
    joined = time.monotonic()
    four.start_agent("h4")
    wait_until(lambda: per_host("agent")["h4"] == 1, 30, what="the new host's replica")
    assert time.monotonic() - joined < 30
    assert per_host("edge")["h4"] == 0  # h4 only claims role=edge: no admin labeled it
    # ... and one that starts matching (an admin labels it) gets one too.
    labeled = four.cli("label", "host", "h4", "role=edge")
    assert labeled.returncode == 0, labeled.stdout + labeled.stderr
    wait_until(lambda: per_host("edge")["h4"] == 1, 30, what="h4's edge replica")

    # A drain leaves global replicas (they stop with the host) ...
    drained = four.cli("drain", "h1", "--wait", "--timeout", "60s")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert per_host("agent")["h1"] == 1 and per_host("edge")["h1"] == 1
    assert client.hosts("h1")[0].state == "drained"
    four.cli("uncordon", "h1")
    # ... unless it includes them.
    drained = four.cli("drain", "h2", "--include-global", "--wait", "--timeout", "60s")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    wait_until(lambda: per_host("agent")["h2"] == 0, 30, what="h2's global replica to stop")
    assert per_host("agent") == {"h1": 1, "h2": 0, "h3": 1, "h4": 1}
    [info] = client.apps("agent")
    assert (info.mode, info.running) == ("global", 3)


def docker_runs(four: Pool4, app: str, since: float) -> list[tuple[float, str, str]]:
    """(time, start|die, container id) of ``app``'s containers on every host, in order."""
    found = []
    for host in four.pool.hosts:
        for event in host.client().events(
            since=int(since),
            until=int(time.time()) + 1,
            filters={"type": "container", "label": f"fleet.app={app}"},
            decode=True,
        ):
            if event.get("Action") in ("start", "die"):
                found.append((event["timeNano"] / 1e9, event["Action"], event["id"]))
    return sorted(found)


def test_job_runs_its_completions_two_at_a_time_and_fleet_wait_follows_it(four: Pool4) -> None:
    client = four.client
    for name in ("h1", "h2"):
        four.start_agent(name)
    wait_until(lambda: connected(client, 2), 30, what="2 agents")
    since = time.time() - 1
    client.apply(
        load_documents(
            f"""
name: batch
image: {IMAGE}
mode: job
completions: 4
parallelism: 2
command: ["sh", "-c", "echo done; sleep 1"]
""",
            "batch.yaml",
        )
    )
    waited = four.cli("wait", "batch", "--timeout", "90s")
    assert waited.returncode == 0, waited.stdout + waited.stderr

    runs = docker_runs(four, "batch", since)
    starts = [r for r in runs if r[1] == "start"]
    assert len(starts) == 4, runs
    running, most = 0, 0
    for _, action, _ in runs:
        running += 1 if action == "start" else -1
        most = max(most, running)
    assert most == 2, runs  # never more than parallelism at once
    # Finished containers are kept (exited 0), so their logs can be read.
    kept = [c for cs in four.containers("batch", every=True).values() for c in cs]
    assert len(kept) == 4 and all(c.status == "exited" for c in kept)
    assert all(c.attrs["State"]["ExitCode"] == 0 for c in kept)
    logs = four.cli("logs", "batch", "--slot", "3")
    assert "done" in logs.stdout, logs.stdout + logs.stderr
    [info] = client.apps("batch")
    assert (info.job.state, info.job.succeeded, info.job.failed) == ("complete", 4, 0)
    jobs = four.cli("get", "jobs")
    assert "batch" in jobs.stdout and "4/4" in jobs.stdout, jobs.stdout


def test_failing_job_fails_after_its_backoff_limit(four: Pool4) -> None:
    client = four.client
    four.start_agent("h1")
    wait_until(lambda: connected(client, 1), 30, what="the agent")
    client.apply(
        load_documents(
            f"""
name: broken
image: {IMAGE}
mode: job
backoff_limit: 2
command: ["sh", "-c", "echo failing; exit 1"]
""",
            "broken.yaml",
        )
    )
    waited = four.cli("wait", "broken", "--timeout", "90s")
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "failed" in waited.stderr
    [info] = client.apps("broken")
    assert info.job.state == "failed" and info.job.failed >= 2
    assert dict(info.job.exit_codes) == {0: 1}
    # Stopped for good, but kept for its logs.
    wait_until(lambda: not four.containers("broken")["h1"], 30, what="nothing running")
    kept = four.containers("broken", every=True)["h1"]
    assert len(kept) == 1 and kept[0].status == "exited"
