"""A real etcd on free loopback ports, for tests that need the store: one member
(`EtcdServer`) or a cluster of several (`EtcdCluster`, for quorum tests).

Each instance has its own ports, name, cluster token and data dir, so it collides with
nothing else on the machine; `restart()` keeps ports and data to test etcd restarts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Self

from fleet.testing.procs import Daemon, ManagedProcess, Service, free_port, require_binary


class EtcdServer(Daemon):
    """One `etcd` process on 127.0.0.1 with a temporary data dir, started by `start()`."""

    program = "etcd"

    def __init__(
        self,
        *,
        name: str | None = None,
        data_dir: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name or f"fleet-test-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.client_port = free_port()
        self.peer_port = free_port()
        # The temporary directory we own (and delete in close()), holding data and log.
        self._tmp_dir: Path | None = None
        if data_dir is None:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="fleet-etcd-"))
            data_dir = self._tmp_dir / "data"
        self.data_dir = data_dir
        super().__init__(data_dir.parent / f"{self.name}.log", start_timeout)
        # Set by EtcdCluster: every member's name=peer URL, and the cluster's token.
        self.initial_cluster: str | None = None
        self.cluster_token: str | None = None

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        """The client endpoint as `host:port`, the form gRPC clients such as aetcd take."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        """The client URL, `http://127.0.0.1:PORT`, for the HTTP/JSON gateway."""
        return f"http://{self.endpoint}"

    def _args(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            require_binary("etcd", "/usr/bin/etcd"),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            self.initial_cluster or f"{self.name}={peer}",
            "--initial-cluster-token",
            self.cluster_token or self.name,
            "--initial-cluster-state",
            "new",
            # One member on loopback: a short election timeout only shortens the wait for
            # leadership after a restart (about 1 s with the defaults).
            "--heartbeat-interval",
            "25",
            "--election-timeout",
            "250",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]

    def healthy(self) -> bool:
        """Tell whether etcd answers `GET /health` with `{"health": "true"}`."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError):
            return False
        return isinstance(body, dict) and body.get("health") == "true"

    def start(self, *, wait: bool = True) -> Self:
        """Start etcd and wait until it reports healthy (a cluster member: until the
        cluster has a leader); raise with its log tail if it does not."""
        if self.running:
            return self
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # Inherited ETCD_* variables would silently override our flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        process = ManagedProcess(self._args(), self.log_path, name=self.program, env=env)
        self._launch(process, self.healthy if wait else None, f"etcd at {self.url}")
        return self

    def wait_healthy(self) -> None:
        assert self._proc is not None
        self._proc.wait_ready(self.healthy, self.start_timeout, what=f"etcd at {self.url}")

    def restart(self) -> None:
        """Stop and start again on the same ports and data dir, as a crashed member would."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop etcd and delete its temporary directory (when the harness created it);
        ``stop()`` keeps the data dir for ``restart()``."""
        self.stop()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"EtcdServer(endpoint={self.endpoint!r}, data_dir={str(self.data_dir)!r})"


class EtcdCluster(Service):
    """``size`` etcd members on loopback forming one cluster (3: one may fail)."""

    def __init__(self, size: int = 3) -> None:
        token = f"fleet-test-cluster-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.members = [EtcdServer(name=f"{token}-m{i}") for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial
            member.cluster_token = token

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self) -> Self:
        """Start every member, then wait until each is healthy (the cluster has a leader)."""
        try:
            for member in self.members:
                member.start(wait=False)
            for member in self.members:
                member.wait_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for member in self.members:
            member.close()
