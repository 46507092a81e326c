"""Connection options before the verb (``fleet -s HOST get hosts``), as kubectl and
docker take them; the verb's own win; a daemon's are its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from fleet.testing import EtcdServer
from fleet.testing.certs import TestPKI, tls_args
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.testing.procs import without_fleet_env


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


def test_credentials_are_never_found_in_the_current_directory(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    """A directory holding .fleet/pki (as `fleet up`'s default data dir does) is not
    where the CLI looks by itself: it connects with those files only when asked
    (FLEET_PKI_DIR), or through the config dir's pki/ (`fleet certs`' default)."""
    server = FleetServerProcess(etcd_server.endpoint, "/cli-cwd/", tmp_path, pki).start()
    try:
        pki.client()
        work = tmp_path / "work"
        (work / ".fleet").mkdir(parents=True)
        shutil.copytree(pki.dir, work / ".fleet" / "pki")
        env = without_fleet_env()
        env["FLEET_CLI_CONFIG"] = str(tmp_path / "conf" / "config.toml")

        def run(**extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "fleet", "get", "hosts", "-s", server.address],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=work,
                env={**env, **extra},
            )

        found = run()
        assert found.returncode != 0
        assert "no TLS credentials found" in found.stderr, found.stderr
        assert str(tmp_path / "conf" / "pki") in found.stderr
        asked = run(FLEET_PKI_DIR=".fleet/pki")
        assert asked.returncode == 0, asked.stderr
        # `fleet certs`' default dir is where the CLI looks by itself.
        shutil.copytree(pki.dir, tmp_path / "conf" / "pki")
        assert run().returncode == 0
    finally:
        server.stop()
