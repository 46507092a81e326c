"""Control-plane replicas share one secrets key: the first records its id in etcd, a
replica with another key, or with none while the pool has one, refuses to start and
says how to fix it (real servers, real etcd)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from fleet.secrets import ensure_key_file, load_key_file
from fleet.testing import EtcdServer
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from tests.helpers import etcd_json

COPY = "copy the key file from a running control-plane replica (its --secrets-key-file)"


def refused(server: FleetServerProcess, *, drop_key_flag: bool = False) -> str:
    """Run ``server`` to its end; its one line of error (it must exit 1)."""
    args = list(server.process.args)
    if drop_key_flag:
        at = args.index("--secrets-key-file")
        del args[at : at + 2]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


def test_replicas_with_one_key_serve_and_the_pool_records_its_id(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    prefix = "/t-key-shared/"
    first = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    try:
        key = tmp_path / "secrets.key"  # made by the pool's first replica
        recorded = etcd_json(etcd_server, f"{prefix}secrets-key")
        assert recorded is not None
        assert recorded["key_id"] == load_key_file(key).key_id
        assert "secret" not in recorded and len(recorded["key_id"]) == 12  # an id, not the key
        # A second machine holds a copy of the same file: it serves.
        other = tmp_path / "cp2"
        other.mkdir()
        shutil.copy2(key, other / "secrets.key")
        second = FleetServerProcess(etcd_server.endpoint, prefix, other, pki).start()
        try:
            with first.client() as client:
                client.set_secret("db-password", b"hunter2", all_apps=True)
            with second.client() as client:
                assert [s.name for s in client.secrets()] == ["db-password"]
        finally:
            second.stop()
        assert etcd_json(etcd_server, f"{prefix}secrets-key") == recorded  # recorded once
    finally:
        first.stop()


def test_a_replica_with_another_key_or_none_refuses_to_start(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    prefix = "/t-key-differs/"
    first = FleetServerProcess(etcd_server.endpoint, prefix, tmp_path, pki).start()
    first.stop()
    pool_id = load_key_file(tmp_path / "secrets.key").key_id

    # Another key: its own file, made on its machine.
    other = tmp_path / "cp2"
    mine = load_key_file(ensure_key_file(other / "secrets.key")).key_id
    said = refused(FleetServerProcess(etcd_server.endpoint, prefix, other, pki))
    assert said.startswith(
        f"error: the secrets key {other / 'secrets.key'} (key id {mine}) is not this "
        f"pool's (key id {pool_id}, recorded by "
    )
    assert f"{COPY} over {other / 'secrets.key'}, mode 0600, and start again" in said

    # No file where its --secrets-key-file points: it must not make one.
    bare = tmp_path / "cp3"
    bare.mkdir()
    said = refused(FleetServerProcess(etcd_server.endpoint, prefix, bare, pki))
    assert said.startswith(
        f"error: the secrets key {bare / 'secrets.key'} does not exist, and this pool has "
        f"one already (key id {pool_id}, recorded by "
    )
    assert f"a replica must not make a key of its own: {COPY} to {bare / 'secrets.key'}" in said
    assert not (bare / "secrets.key").exists()

    # No --secrets-key-file at all.
    said = refused(FleetServerProcess(etcd_server.endpoint, prefix, bare, pki), drop_key_flag=True)
    assert said.startswith(
        f"error: this pool's secrets are sealed with a key (key id {pool_id}, recorded by "
    )
    assert "start it with --secrets-key-file PATH" in said
