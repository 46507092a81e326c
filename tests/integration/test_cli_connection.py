"""Connection options before the verb (``fleet -s HOST get hosts``), as kubectl and
docker take them; the verb's own win; a daemon's are its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fleet.testing import EtcdServer
from fleet.testing.certs import TestPKI, tls_args
from fleet.testing.fleetprocs import FleetServerProcess


def _fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args], capture_output=True, text=True, timeout=60
    )


def test_connection_options_go_before_the_verb_too(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    server = FleetServerProcess(etcd_server.endpoint, "/cli-conn/", tmp_path, pki).start()
    try:
        tls = tls_args(pki.client())
        before = _fleet("-s", server.address, *tls, "get", "hosts", "-o", "json")
        assert before.returncode == 0, before.stderr
        assert json.loads(before.stdout) == []
        # The verb's own --server wins over the one before it.
        both = _fleet("-s", "127.0.0.1:1", *tls, "get", "apps", "-s", server.address, "-o", "json")
        assert both.returncode == 0, both.stderr
        # Before the verb only: the wrong one is used, and the error names it.
        wrong = _fleet("-s", "127.0.0.1:1", *tls, "get", "apps")
        assert wrong.returncode != 0 and "127.0.0.1:1" in wrong.stderr, wrong.stderr
        # A daemon's options are its own: before its verb they are refused, not ignored.
        daemon = _fleet("-s", server.address, "agent", "--insecure")
        assert daemon.returncode == 2
        assert "--server before `agent` would be ignored" in daemon.stderr, daemon.stderr
    finally:
        server.stop()
