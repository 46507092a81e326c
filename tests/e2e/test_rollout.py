"""Rolling upgrades end to end: two docker hosts pull web:v1, v2 and a broken v3 from a
real registry; a prober polls every endpoint fleet lists, every 100 ms, while the
rollouts run, and what Docker runs is read back through the SDK."""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
import pytest

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import EtcdServer, HostPool, Registry, push_image, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import HTTPD_CMD, ensure_image, graceful_cmd
from tests.helpers import EndpointProber, fleet_containers, http_get

REPLICAS = 4


@dataclass
class Rollouts:
    server: FleetServerProcess
    client: FleetClient
    agents: list[FleetAgentProcess]
    images: dict[str, str]  # v1, v2, v3 -> registry reference
    cli_env: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def rollouts(
    request: pytest.FixtureRequest,
    etcd_server: EtcdServer,
    clean_pool: HostPool,
    registry: Registry,
    pki: TestPKI,
    tmp_path: Path,
) -> Iterator[Rollouts]:
    h1, h2 = clean_pool.hosts
    images = {}
    for tag, index, cmd in (
        ("v1", "web v1\n", None),
        ("v2", "web v2\n", None),
        # v3 runs, but serves a directory without index.html: its health check gets 404s.
        ("v3", "web v3\n", graceful_cmd([*HTTPD_CMD[:-1], "/bin"])),
    ):
        ensure_image(h1.client(), "fleet-test/rollout", tag, index, cmd)
        images[tag] = push_image(
            h1.client(), f"fleet-test/rollout:{tag}", registry.address, "fleet-test/rollout", tag
        )
    for host in (h1, h2):  # every host must pull from the registry
        for ref in images.values():
            with contextlib.suppress(docker.errors.ImageNotFound):
                host.client().images.remove(ref, force=True)

    prefix = f"/e2e-{request.node.name[:40].replace('_', '-')}/"
    server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    agents = [
        FleetAgentProcess(
            [server.address],
            h.name,
            h.docker_url,
            tmp_path,
            pki,
            extra_args=["--advertise-address", h.address],
        ).start()
        for h in clean_pool.hosts
    ]
    client = server.client()
    try:
        server.process.wait_ready(
            lambda: len([h for h in client.hosts() if h.connected]) == 2, 30, what="both agents"
        )
        yield Rollouts(server, client, agents, images)
    finally:
        client.close()
        for agent in agents:
            agent.stop()
        server.stop()
        print(server.process.log_tail(80))  # shown only when the test failed
        for agent in agents:
            print(agent.process.log_tail(40))


def web_spec(image: str, min_ready: str = "1s") -> str:
    return f"""
name: web
image: {image}
replicas: {REPLICAS}
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
shutdown_delay: 1s
health:
  http: http://:8080/index.html
  interval: 500ms
  timeout: 1s
  retries: 2
update:
  max_surge: 1
  max_unavailable: 0
  min_ready: {min_ready}
  progress_deadline: 60s
"""


def serving(pool: HostPool) -> dict[str, str]:
    """What each running web container serves, read through Docker and HTTP."""
    found = {}
    for host in pool.hosts:
        for container in fleet_containers(host.client(), "web"):
            try:
                container.reload()
                if container.status != "running":
                    continue
                port = int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
                found[f"{host.name}/{container.name}"] = http_get(host.address, port).strip()
            except (docker.errors.NotFound, urllib.error.URLError, OSError, KeyError):
                found[f"{host.name}/{container.name}"] = "(stopping)"
    return found


def all_serve(pool: HostPool, body: str) -> dict[str, str] | None:
    found = serving(pool)
    return found if len(found) == REPLICAS and set(found.values()) == {body} else None


def cli(rollouts: Rollouts, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The real `fleet` CLI against the test server, with an admin certificate."""
    return rollouts.server.cli(*args, timeout=timeout)


def test_rolling_upgrade_keeps_every_replica_serving_and_rolls_back_a_broken_release(
    rollouts: Rollouts, clean_pool: HostPool
) -> None:
    client, images = rollouts.client, rollouts.images
    client.apply(load_documents(web_spec(images["v1"]), "web.yaml"))
    wait_until(lambda: all_serve(clean_pool, "web v1"), 120, what="4 replicas serving v1")
    wait_until(
        lambda: client.rollout_status("web").state == "complete", 60, what="v1 rollout complete"
    )
    assert len(client.endpoints("web")) == REPLICAS

    # v1 -> v2 under a prober: never fewer than 4 healthy, every listed address answers.
    with EndpointProber(client) as prober:
        change = client.set_image("web", images["v2"])
        assert change.revision == 2
        status = cli(rollouts, "rollout", "status", "web", "--timeout", "3m")
        assert status.returncode == 0, status.stdout + status.stderr
    prober.check(at_least=REPLICAS)
    assert prober.bodies == {"web v1", "web v2"}
    assert wait_until(lambda: all_serve(clean_pool, "web v2"), 30, what="all on v2")
    history = client.rollout_history("web")
    assert [(r.revision, r.image, r.current) for r in history.revisions] == [
        (1, images["v1"], False),
        (2, images["v2"], True),
    ]

    # v2 -> v3 fails its health check: rolled back automatically, v2 serves throughout,
    # and `rollout status` fails the pipeline.
    with EndpointProber(client) as prober:
        client.set_image("web", images["v3"])
        status = cli(rollouts, "rollout", "status", "web", "--timeout", "3m")
        assert status.returncode != 0, status.stdout + status.stderr
        assert "revision 3" in status.stdout + status.stderr
        wait_until(
            lambda: (s := client.rollout_status("web")).state == "complete" and s.rollback_of == 3,
            90,
            what="the rollback to revision 2 to complete",
        )
    prober.check(at_least=REPLICAS)
    assert "web v3" not in prober.bodies
    assert wait_until(lambda: all_serve(clean_pool, "web v2"), 30, what="all back on v2")
    info = client.rollout_status("web")
    assert (info.revision, info.rollback_of) == (2, 3)
    assert json_image(client) == images["v2"]

    # undo returns to the revision before: v1.
    undone = client.rollout_undo("web")
    assert undone.revision == 1
    wait_until(lambda: all_serve(clean_pool, "web v1"), 120, what="all back on v1 after undo")


def json_image(client: FleetClient) -> str:
    [app] = client.apps("web")
    image: str = json.loads(app.spec_json)["image"]
    return image


def test_rollout_survives_a_control_plane_kill(rollouts: Rollouts, clean_pool: HostPool) -> None:
    client, images = rollouts.client, rollouts.images
    # min_ready 3s: each of the 4 steps takes a few seconds, time enough to kill midway.
    client.apply(load_documents(web_spec(images["v1"], min_ready="3s"), "web.yaml"))
    wait_until(lambda: all_serve(clean_pool, "web v1"), 120, what="4 replicas serving v1")

    client.set_image("web", images["v2"])
    # Kill the control plane as soon as the rollout has moved, then start it again on
    # the same address: the rollout's state is in etcd, so it carries on.
    wait_until(lambda: client.rollout_status("web").updated >= 1, 60, what="a first v2 replica")
    server = rollouts.server
    server.kill()
    assert any(b == "web v1" for b in serving(clean_pool).values()), "finished before the kill"
    restarted = server.again("server-restarted.log").start()
    try:
        with restarted.client() as again:
            wait_until(
                lambda: again.rollout_status("web").state == "complete",
                120,
                what="the rollout to complete after the restart",
            )
        assert wait_until(lambda: all_serve(clean_pool, "web v2"), 30, what="all on v2")
    finally:
        restarted.stop()
        print(restarted.process.log_tail(60))


def test_rollout_survives_an_agent_and_a_dockerd_restart(
    rollouts: Rollouts, clean_pool: HostPool
) -> None:
    client, images = rollouts.client, rollouts.images
    client.apply(load_documents(web_spec(images["v1"], min_ready="3s"), "web.yaml"))
    wait_until(lambda: all_serve(clean_pool, "web v1"), 120, what="4 replicas serving v1")
    client.set_image("web", images["v2"])
    wait_until(lambda: client.rollout_status("web").updated >= 1, 60, what="a first v2 replica")
    # h1's agent is killed and its dockerd restarted (its containers die with it) in the
    # middle of the rollout; a new agent starts.
    h1 = clean_pool.host("h1")
    agent = rollouts.agents[0]
    agent.kill()
    h1.stop_daemon()
    h1.start_daemon()
    rollouts.agents[0] = FleetAgentProcess(
        [rollouts.server.address],
        "h1",
        h1.docker_url,
        Path(rollouts.server.log_dir),
        rollouts.server.pki,
        extra_args=["--advertise-address", h1.address],
    ).start()
    wait_until(
        lambda: client.rollout_status("web").state == "complete",
        180,
        what="the rollout to complete after the restarts",
    )
    assert client.rollout_status("web").revision == 2
    assert wait_until(lambda: all_serve(clean_pool, "web v2"), 60, what="all on v2")
