"""A fresh Docker host configured by deploy/fcos/agent.bu (and flatcar's), as far as
this machine can boot one: the Butane config, rendered to Ignition with an agent
bundle from the test PKI, has its files written under a directory standing in for the
host's ``/``; then its ``fleet-agent.service`` runs as systemd would run it (its
EnvironmentFile, ExecStartPre and ExecStart lines) against the fresh host's own
dockerd. The agent container registers with a real ``fleet server`` over the mutual
TLS the config installs, and runs a placed app. Prints, over five runs, the time from
the unit's start to the host being ready (issue 19), the figure deploy/fcos/README.md
quotes. The first run finds a dockerd that has only the images loaded into it; each
later one a fresh root and host id (its certificate too) on the same dockerd, whose
agent container the unit's ExecStartPre removes.

What is played and what is not: ``fleet.testing.ignition``. Paths: the unit's host
paths (``/etc/fleet``, ``/var/lib/fleet``, ``/etc/os-release``, the Docker socket)
are the root directory's; the rest (``/usr/bin/docker``, ``/sys/fs/cgroup``) the
machine's.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest

from fleet import __version__
from fleet.client import FleetClient
from fleet.install.butane import render
from fleet.pki.bundle import agent_bundle
from fleet.pki.subjects import serial_of
from fleet.spec import load_documents
from fleet.testing import DockerHost, EtcdServer, HostPool, ensure_image, wait_until
from fleet.testing.agentcontainer import AGENT_NAME, gateway_pki
from fleet.testing.certs import TestPKI
from fleet.testing.fleetimage import build_fleet_image, copy_image
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.testing.ignition import (
    Service,
    apply_ignition,
    read_service,
    start_service,
    stop_service,
)
from fleet.testing.procs import free_port
from tests.conftest import ImageLoader, PoolFactory
from tests.helpers import fleet_containers, http_get

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = "fleet-agent.service"
WEB = "fleet-test/ignition-web"
# Each run: a fresh host id and root, rendered from one system's config; the last one
# keeps its agent and takes the app. Two in `make test` (one per system);
# FLEET_IGNITION_RUNS=5 for the README's median.
_RUN_COUNT = max(2, int(os.environ.get("FLEET_IGNITION_RUNS", "2")))
RUNS = tuple((("fcos", "flatcar")[n % 2], f"node{n + 1}") for n in range(_RUN_COUNT))
# What the OS image has at /etc/os-release (Ignition does not write it).
OS_RELEASE = {
    "fcos": 'NAME="Fedora Linux"\nVARIANT_ID=coreos\nVERSION_ID=40\n',
    "flatcar": 'NAME="Flatcar Container Linux by Kinvolk"\nID=flatcar\nVERSION_ID=3975.2.0\n',
}


@dataclass
class Site:
    """The fresh host and the control plane its agents register with."""

    host: DockerHost
    server: FleetServerProcess
    client: FleetClient
    pki: TestPKI
    tmp: Path


@pytest.fixture
def site(
    request: pytest.FixtureRequest,
    docker_hosts: PoolFactory,
    etcd_server: EtcdServer,
    fleet_image: ImageLoader,
    tmp_path: Path,
) -> Iterator[Site]:
    # fleet's image is built once per session in a session pool's daemon (which
    # outlives this test) and copied into the fresh one, as `docker load` would.
    fleet_image(docker_hosts(1).hosts[0])
    built = build_fleet_image(docker_hosts(1).hosts[0].docker_url)
    pool = HostPool(1).start()  # a host of its own: its dockerd has nothing yet
    try:
        host = pool.hosts[0]
        copy_image(built.tag, built.docker_url, host.docker_url)
        ensure_image(host.client(), WEB, "v1", "placed by fleet\n")
        pki = gateway_pki(tmp_path / "pki", pool.gateway)
        listen = f"{pool.gateway}:{free_port(pool.gateway)}"
        prefix = f"/e2e-{request.node.name[:40].replace('_', '-')}/"
        server = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki, listen=listen)
        server.start()
        client = server.client()
        try:
            yield Site(host, server, client, pki, tmp_path)
        finally:
            client.close()
            print(server.process.log_tail(40))  # shown only when the test failed
            server.stop()
    finally:
        pool.close()


def butane_for(system: str, host_id: str, server: str) -> str:
    """``deploy/<system>/agent.bu`` edited as its README tells an operator: the host's
    name, the pool's control plane, and the image `docker load`ed on the host."""
    text = (DEPLOY / system / "agent.bu").read_text().replace("node1", host_id)
    edits = {
        r'^(\s*server = )"[^"]*"$': rf'\1"{server}"',
        r"^(\s*FLEET_IMAGE=).*$": rf"\g<1>fleet:{__version__}",
    }
    for pattern, replacement in edits.items():
        text, count = re.subn(pattern, replacement, text, flags=re.M)
        assert count == 1, f"agent.bu no longer has one line matching {pattern}"
    return text


@dataclass
class Booted:
    """One host's root after Ignition, and its agent unit started in it."""

    root: Path
    service: Service
    env: dict[str, str]
    main: Any  # the unit's main process (the foreground `docker run`)
    journal: IO[bytes]
    journal_path: Path

    def stop(self) -> int:
        return stop_service(self.service, self.main, self.env, self.journal, root=self.root)


@dataclass(frozen=True)
class Timing:
    """Seconds from the unit's start: to the agent's container running (the
    ExecStartPre lines, then docker's create and start), and to the host ready."""

    container: float
    ready: float


def started_at(container: Any) -> float:
    """When dockerd started ``container`` (its clock is this machine's), as time.time()."""
    stamp = container.attrs["State"]["StartedAt"]  # RFC 3339 with nanoseconds
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    parsed = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    return parsed.timestamp() + float(f"0.{fraction or 0}")


def first_boot(site: Site, system: str, host_id: str) -> tuple[Booted, Timing]:
    """Render, apply and start ``system``'s agent host ``host_id``; how long its agent
    took to come up."""
    files = site.tmp / f"{host_id}-files"
    agent_bundle(files, pki_dir=site.pki.dir, host_id=host_id)  # `fleet certs bundle agent`
    config = render(butane_for(system, host_id, site.server.address), files_dir=files)
    root = site.tmp / f"root-{host_id}"
    apply_ignition(config, root)
    # What the OS provides, not Ignition: its os-release, and its dockerd's socket.
    (root / "etc/os-release").write_text(OS_RELEASE[system])
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/run").mkdir(parents=True)
    (root / "var/run/docker.sock").symlink_to(site.host.socket_path)

    [unit] = [u for u in config["systemd"]["units"] if u["name"] == UNIT]
    assert unit["enabled"] is True  # started at boot
    service = read_service(unit["contents"], root)
    env = {"DOCKER_HOST": f"unix://{root}/var/run/docker.sock"}  # /usr/bin/docker's default
    journal_path = site.tmp / f"journal-{host_id}.log"
    journal = journal_path.open("wb")
    began, wall = time.monotonic(), time.time()
    main = start_service(service, env, journal, root=root)
    booted = Booted(root, service, env, main, journal, journal_path)

    def ready() -> bool:
        assert main.poll() is None, f"the unit's main process ended: {journal_path.read_text()}"
        return any(
            h.host_id == host_id and h.state == "ready" and h.connected for h in site.client.hosts()
        )

    wait_until(ready, 60, interval=0.05, what=f"{host_id} ready in the control plane")
    ready_after = time.monotonic() - began
    container = site.host.client().containers.get(AGENT_NAME)
    return booted, Timing(started_at(container) - wall, ready_after)


def test_a_butane_configured_host_registers_and_runs_an_app(site: Site) -> None:
    timings: list[Timing] = []
    booted: Booted | None = None
    try:
        for n, (system, host_id) in enumerate(RUNS):
            booted, timing = first_boot(site, system, host_id)
            timings.append(timing)
            print(
                f"{system} {host_id}: unit start -> agent container running "
                f"{timing.container:.2f} s -> host ready {timing.ready:.2f} s"
            )
            check_registration(site, booted, system, host_id)
            if n < len(RUNS) - 1:  # systemctl stop: the agent leaves, the host shows so
                assert booted.stop() == 0, booted.journal_path.read_text()
                wait_until(lambda: gone(site, host_id), 10, what=f"{host_id} to leave")  # noqa: B023
                booted.journal.close()
                booted = None
        ready = [t.ready for t in timings]
        print(
            f"unit start -> host ready: median {statistics.median(ready):.2f} s over "
            f"{len(ready)} runs ({', '.join(f'{s:.2f}' for s in ready)}); the agent's "
            f"container ran after a median {statistics.median(t.container for t in timings):.2f} s"
        )

        # An app placed on the pool runs on the last host, read back from its dockerd.
        assert booted is not None
        spec = f"""
name: web
image: {WEB}:v1
replicas: 1
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
"""
        site.client.apply(load_documents(spec, "web.yaml"))
        wait_until(lambda: site.client.endpoints("web"), 60, what="web's replica answering")
        [endpoint] = site.client.endpoints("web")
        [container] = fleet_containers(site.host.client(), "web")
        assert container.status == "running"
        assert [r.host for r in site.client.containers("web")] == [RUNS[-1][1]]
        assert endpoint.address == site.host.address
        assert http_get(endpoint.address, endpoint.host_port) == "placed by fleet\n"
        # `fleet get hosts`, as an operator would look: the last host ready, the others
        # (their units stopped) down
        listed = site.server.cli("get", "hosts")
        assert listed.returncode == 0, listed.stderr
        states = dict(line.split()[:2] for line in listed.stdout.splitlines()[1:])
        assert states == {h: ("ready" if h == RUNS[-1][1] else "down") for _, h in RUNS}
        journal = booted.journal_path.read_text()
        # --log-format journal: every agent line is <priority>logger: message, no time
        agent_lines = [line for line in journal.splitlines() if line.startswith("<")]
        assert agent_lines and all(re.match(r"<[0-7]>\S+: ", line) for line in agent_lines)
        assert not re.search(r"^\d{4}-\d\d-\d\d", journal, re.M), journal[:2000]
    finally:
        if booted is not None:
            booted.stop()
            booted.journal.close()
        site.host.remove_all_containers()


def gone(site: Site, host_id: str) -> bool:
    [info] = site.client.hosts(host_id)
    return not info.connected


def check_registration(site: Site, booted: Booted, system: str, host_id: str) -> None:
    """The host as the control plane has it: the certificate Ignition installed, the
    fresh host's address (host networking in its namespace), the root's os-release; and
    the agent container's mounts are the root's."""
    [info] = site.client.hosts(host_id)
    assert info.cert_serial == serial_of((booted.root / "etc/fleet/pki/agent.crt").read_bytes())
    assert info.address == site.host.address
    assert info.facts["os_version"] == OS_RELEASE[system].split("VERSION_ID=")[1].strip()
    agent = site.host.client().containers.get(AGENT_NAME)
    mounts = {m["Destination"]: m["Source"] for m in agent.attrs["Mounts"]}
    assert mounts["/etc/fleet"] == str(booted.root / "etc/fleet")
    assert mounts["/var/lib/fleet"] == str(booted.root / "var/lib/fleet")
    assert mounts["/host/os-release"] == str(booted.root / "etc/os-release")
    assert mounts["/sys/fs/cgroup"] == "/sys/fs/cgroup"
    # the agent's state dir (agent.toml's state-dir, under that mount) is Ignition's, 0700
    assert (booted.root / "var/lib/fleet/agent").stat().st_mode & 0o777 == 0o700
