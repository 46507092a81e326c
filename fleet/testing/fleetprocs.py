"""fleet's own daemons as real processes (``python -m fleet server|agent``), for tests.

Tests drive them through the client library or the CLI and check what really happened
through etcd and the Docker SDK; killing one of them is a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from fleet.client import FleetClient
from fleet.testing.procs import ManagedProcess, free_port

__all__ = ["FleetAgentProcess", "FleetServerProcess"]


class FleetServerProcess:
    """``fleet server`` on a free loopback port, against one etcd under one prefix."""

    def __init__(self, etcd_endpoint: str, prefix: str, log_dir: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process = ManagedProcess(
            [
                sys.executable,
                "-m",
                "fleet",
                "server",
                "--etcd",
                etcd_endpoint,
                "--listen",
                self.address,
                "--prefix",
                prefix,
                "--log-level",
                "debug",
            ],
            log_dir / f"server-{self.port}.log",
            name="fleet server",
        )

    def start(self, timeout: float = 30.0) -> FleetServerProcess:
        self.process.start()
        try:
            with FleetClient([self.address], timeout=2) as client:
                self.process.wait_ready(
                    lambda: client.hosts() is not None, timeout, what="fleet server to answer"
                )
        except BaseException:
            self.process.stop()
            raise
        return self

    def stop(self) -> None:
        self.process.stop()

    def client(self) -> FleetClient:
        return FleetClient([self.address])


class FleetAgentProcess:
    """``fleet agent`` for one Docker daemon."""

    def __init__(
        self,
        servers: list[str],
        host_id: str,
        docker_url: str,
        log_dir: Path,
        labels: dict[str, str] | None = None,
    ) -> None:
        args = [
            sys.executable,
            "-m",
            "fleet",
            "agent",
            "--host-id",
            host_id,
            "--server",
            ",".join(servers),
            "--docker",
            docker_url,
            "--log-level",
            "debug",
        ]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        self.host_id = host_id
        self.process = ManagedProcess(args, log_dir / f"agent-{host_id}.log", name="fleet agent")

    def start(self) -> FleetAgentProcess:
        self.process.start()
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL: the agent gets no chance to clean up, as in a crash."""
        if self.process.pid is not None and self.process.running:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.stop()  # reaps it
