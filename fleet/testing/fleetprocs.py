"""fleet's own daemons as real processes (``python -m fleet server|agent``), for tests.

Tests drive them through the client library or the CLI and check what really happened
through etcd and the Docker SDK; killing one of them is a real SIGKILL. With a
``TestPKI`` they speak mutual TLS, as in production; with ``pki=None``, ``--insecure``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

from fleet.client import FleetClient
from fleet.testing.certs import TestPKI, tls_args
from fleet.testing.procs import ManagedProcess, free_port
from fleet.transport import TlsFiles, Transport

__all__ = ["FleetAgentProcess", "FleetServerProcess"]


class FleetServerProcess:
    """``fleet server`` on a loopback port (a free one unless ``listen`` is given),
    against one etcd under one prefix."""

    def __init__(
        self,
        etcd_endpoint: str,
        prefix: str,
        log_dir: Path,
        pki: TestPKI | None,
        *,
        listen: str | None = None,
        log_name: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.address = listen or f"127.0.0.1:{free_port()}"
        self.pki = pki
        self.etcd_endpoint, self.prefix, self.log_dir = etcd_endpoint, prefix, log_dir
        self.extra_args = list(extra_args or [])
        args = [sys.executable, "-m", "fleet", "server", "--etcd", etcd_endpoint]
        args += ["--listen", self.address, "--prefix", prefix, "--log-level", "debug"]
        args += tls_args(pki.server() if pki else None)
        args += ["--secrets-key-file", str(log_dir / "secrets.key"), *(extra_args or [])]
        port = self.address.rsplit(":", 1)[1]
        self.process = ManagedProcess(
            args, log_dir / (log_name or f"server-{port}.log"), name="fleet server"
        )

    def start(
        self, timeout: float = 30.0, *, probe: Literal["hosts", "info"] = "hosts"
    ) -> FleetServerProcess:
        """Start it and wait until it answers ``probe``: ``hosts`` (GetHosts, by when
        its informer has listed the pool) or ``info`` (GetServerInfo, the cheapest
        call: while 5,000 hosts reconnect, a GetHosts takes more than the probe's 2 s)."""
        self.process.start()
        try:
            with self.client(timeout=2) as client:
                self.process.wait_ready(
                    (lambda: client.hosts() is not None)
                    if probe == "hosts"
                    else (lambda: client.server_info() is not None),
                    timeout,
                    what="fleet server to answer",
                )
        except BaseException:
            self.process.stop()
            raise
        return self

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        self.process.kill()

    def again(self, log_name: str) -> FleetServerProcess:
        """A new server like this one, on the same address (not started)."""
        return FleetServerProcess(
            self.etcd_endpoint,
            self.prefix,
            self.log_dir,
            self.pki,
            listen=self.address,
            log_name=log_name,
            extra_args=self.extra_args,
        )

    def cli(
        self,
        *args: str,
        timeout: float = 180,
        name: str = "admin",
        role: str = "admin",
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """The real ``fleet`` CLI against this server, with a client certificate of
        ``role`` (an admin's by default; output captured, ``input`` on its stdin)."""
        command = [sys.executable, "-m", "fleet", *args, "--server", self.address]
        command += tls_args(self.pki.client(name, role) if self.pki else None)
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=input,
        )

    def transport(self, name: str = "admin", role: str = "admin") -> Transport:
        return self.pki.client_transport(name, role) if self.pki else Transport(None)

    def client(
        self, name: str = "admin", role: str = "admin", timeout: float = 30.0
    ) -> FleetClient:
        """A client with a certificate of ``role`` (admin by default)."""
        return FleetClient([self.address], self.transport(name, role), timeout=timeout)


class FleetAgentProcess:
    """``fleet agent`` for one Docker daemon, with an agent certificate for ``host_id``
    (or the certificate ``tls``, whatever it names)."""

    def __init__(
        self,
        servers: list[str],
        host_id: str,
        docker_url: str,
        log_dir: Path,
        pki: TestPKI | None,
        labels: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        args = [sys.executable, "-m", "fleet", "agent", "--host-id", host_id, *(extra_args or [])]
        args += ["--server", ",".join(servers), "--docker", docker_url, "--log-level", "debug"]
        args += tls_args(tls or (pki.agent(host_id) if pki else None))
        args += ["--state-dir", str(log_dir / f"agent-{host_id}-state")]
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
        self.process.kill()
