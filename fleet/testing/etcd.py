"""A real single-member etcd on free loopback ports, for tests that need the store.

Each instance has its own ports, name, cluster token and data dir, so it collides with
nothing else on the machine; `restart()` keeps ports and data to test etcd restarts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from fleet.testing.procs import ManagedProcess, ProcessError, free_port, require_binary


class EtcdServer:
    """One `etcd` process on 127.0.0.1 with a temporary data dir, started by `start()`."""

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
        self.log_path = data_dir.parent / f"{self.name}.log"
        self.start_timeout = start_timeout
        self.start_seconds: float | None = None
        self._proc: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """The client endpoint as `host:port`, the form gRPC clients such as aetcd take."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        """The client URL, `http://127.0.0.1:PORT`, for the HTTP/JSON gateway."""
        return f"http://{self.endpoint}"

    @property
    def pid(self) -> int | None:
        """The pid of the running etcd, None when stopped."""
        return self._proc.pid if self._proc is not None and self._proc.running else None

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
            f"{self.name}={peer}",
            "--initial-cluster-token",
            self.name,
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

    def start(self) -> EtcdServer:
        """Start etcd and wait until it reports healthy; raise with its log tail if it does not."""
        if self._proc is not None and self._proc.running:
            return self
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # Inherited ETCD_* variables would silently override our flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        began = time.monotonic()
        self._proc = ManagedProcess(self._args(), self.log_path, name="etcd", env=env).start()
        self._proc.wait_ready(self.healthy, self.start_timeout, what=f"etcd at {self.url}")
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop etcd (SIGTERM, then SIGKILL); keeps the data dir for `restart()`. Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout)

    def restart(self) -> None:
        """Stop and start again on the same ports and data dir, as a crashed member would."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop etcd and delete its temporary directory (when the harness created it)."""
        self.stop()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of etcd's log, for assertion messages."""
        if self._proc is None:
            raise ProcessError("etcd was never started")
        return self._proc.log_tail(lines)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EtcdServer(endpoint={self.endpoint!r}, data_dir={str(self.data_dir)!r})"
