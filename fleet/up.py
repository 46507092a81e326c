"""``fleet up``: the whole system on one machine, in the foreground.

It starts a single-member etcd (the ``etcd`` binary, data under ``--data-dir``), the
control plane and an agent for the local Docker daemon in this process, and stops all
three on Ctrl-C or SIGTERM. The data dir outlives it, so a later ``fleet up`` finds the
apps it left (and the agent adopts the containers still running).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fleet.agent import Agent, AgentConfig, DockerRuntime
from fleet.controlplane import ControlPlane, ServerConfig
from fleet.errors import FleetError, Unavailable

__all__ = ["UpConfig", "run_up"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpConfig:
    data_dir: Path
    listen: str = "127.0.0.1:7400"
    etcd_port: int = 7479
    host_id: str | None = None
    docker_url: str | None = None


def _default_host_id() -> str:
    name = socket.gethostname().lower().split(".")[0]
    cleaned = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name).strip("-")
    return cleaned[:63] or "local"


def _start_etcd(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """Start etcd and wait (blocking, up to 30 s) until it reports healthy."""
    binary = shutil.which("etcd")
    if binary is None:
        raise Unavailable("the etcd binary is not installed (Debian: apt-get install etcd-server)")
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    peer = f"http://127.0.0.1:{port + 1}"
    log_file = (data_dir / "etcd.log").open("ab")
    process = subprocess.Popen(
        [
            binary,
            "--name=fleet-up",
            f"--data-dir={data_dir / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=fleet-up={peer}",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us, and we stop etcd in order
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Unavailable(f"etcd exited at start; see {data_dir / 'etcd.log'}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if b"true" in response.read():
                    return process
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)  # etcd's health is polled until it answers, within the deadline
    process.terminate()
    raise Unavailable(f"etcd did not become healthy in 30 s; see {data_dir / 'etcd.log'}")


async def run_up(config: UpConfig) -> None:
    runtime = DockerRuntime(config.docker_url)
    try:
        await asyncio.to_thread(runtime.ping)
    except FleetError as error:
        raise Unavailable(
            f"no Docker daemon answers ({error}); start dockerd or pass --docker URL"
        ) from error
    etcd = await asyncio.to_thread(_start_etcd, config.data_dir.resolve(), config.etcd_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        plane = ControlPlane(
            ServerConfig(etcd=[f"127.0.0.1:{config.etcd_port}"], listen=config.listen)
        )
        await plane.start()
        agent = Agent(
            AgentConfig(servers=[config.listen], host_id=config.host_id or _default_host_id()),
            runtime,
        )
        agent_task = asyncio.create_task(agent.run())
        plane_task = asyncio.create_task(plane.wait())
        log.info(
            "fleet is up: control plane on %s, etcd on 127.0.0.1:%d",
            config.listen,
            config.etcd_port,
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({agent_task, plane_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping")
        for task in (agent_task, plane_task, stopper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await plane.stop()
    finally:
        etcd.terminate()
        try:
            await asyncio.to_thread(etcd.wait, 10)
        except subprocess.TimeoutExpired:
            etcd.kill()
