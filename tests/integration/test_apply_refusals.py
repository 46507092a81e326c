"""Applies the control plane refuses whole, through the CLI as a user runs it: one too
large for etcd's one transaction, and apps that ask for what the cluster policy does
not allow. Each says so at the file (and line) with exit status 2, and etcd holds
none of it afterwards."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.errors import InvalidArgument
from fleet.store import Etcd, KeyLayout, Store
from fleet.store._etcd import Put
from fleet.testing import EtcdServer
from tests.helpers import b64, etcd_post, etcd_prefix, prefix_end
from tests.integration.conftest import Fleet, fleet_cli


def _apps_file(path: Path, image: str, count: int) -> Path:
    """``count`` apps with no replicas (nothing to start), one document each."""
    documents = [f"name: app{i}\nimage: {image}\nreplicas: 0\n" for i in range(count)]
    path.write_text("---\n".join(documents))
    return path


def _stored(fleet: Fleet) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The apps and revisions in etcd, read straight from it."""
    apps = etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/")
    return apps, etcd_prefix(fleet.etcd, f"{fleet.prefix}revisions/")


def _apply(fleet: Fleet, app_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet_cli(
        "apply", "-f", str(app_file), *args, server=fleet.server.address, pki=fleet.pki
    )


def _refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a refusal (exit 2), checked to be fleet's words, not etcd's."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "etcdserver" not in result.stderr and "INVALID_ARGUMENT" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    return line


def test_an_apply_too_large_for_one_etcd_transaction_is_refused_whole(
    fleet: Fleet, tmp_path: Path
) -> None:
    app_file = _apps_file(tmp_path / "many.yaml", fleet.image, 100)
    for args in (("--dry-run",), ()):
        line = _refusal(_apply(fleet, app_file, *args))
        assert line.startswith(
            f"error: {app_file}: this apply writes 100 apps in 200 etcd operations"
        ), line
        assert "etcd takes at most 128 in one transaction (its --max-txn-ops" in line
        assert line.endswith("split the file into applies of at most 64 apps"), line
    assert _stored(fleet) == ({}, {})


def test_the_largest_apply_that_fits_is_stored_whole(fleet: Fleet, tmp_path: Path) -> None:
    one_more = _apps_file(tmp_path / "65.yaml", fleet.image, 65)
    assert _refusal(_apply(fleet, one_more)).endswith("at most 64 apps")
    assert _stored(fleet) == ({}, {})

    fits = _apps_file(tmp_path / "64.yaml", fleet.image, 64)
    result = _apply(fleet, fits)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" created") == 64
    apps, revisions = _stored(fleet)
    assert len(apps) == 64 and len(revisions) == 64
    # In one transaction: every key was created at the same etcd revision (the controller
    # writes each revision's rollout outcome into it later, so not mod_revision).
    written = set()
    for folder in ("apps/", "revisions/"):
        key = f"{fleet.prefix}{folder}".encode()
        body = {"key": b64(key), "range_end": b64(prefix_end(key))}
        found = etcd_post(fleet.etcd, "/v3/kv/range", body)["kvs"]
        written |= {kv["create_revision"] for kv in found}
    assert len(written) == 1


def test_policy_refusals_name_every_field_of_every_app_at_its_line(
    fleet: Fleet, tmp_path: Path
) -> None:
    app_file = tmp_path / "privileged.yaml"
    app_file.write_text(
        f"name: a\nimage: {fleet.image}\nprivileged: true\nvolumes:\n  - /var/log:/logs\n"
        f"---\nname: b\nimage: {fleet.image}\nvolumes: [/srv:/srv]\nprivileged: true\n"
    )
    result = _apply(fleet, app_file)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    expected = [
        f"{app_file}:3 (document 1): privileged: app 'a': privileged is not allowed",
        f"{app_file}:5 (document 1): volumes[0]: app 'a': bind mount of /var/log is not",
        f"{app_file}:9 (document 2): volumes[0]: app 'b': bind mount of /srv is not",
        f"{app_file}:10 (document 2): privileged: app 'b': privileged is not allowed",
    ]
    assert len(lines) == 4, lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(f"error: {start}"), line
    assert "`fleet policy set --allow-bind /var/log`" in lines[1]
    assert _stored(fleet) == ({}, {})


def test_etcds_own_refusal_of_a_large_transaction_is_worded(
    etcd_server: EtcdServer, tmp_path: Path
) -> None:
    async def run() -> None:
        # Told etcd takes more than it does (its default, 128): etcd refuses, in words.
        async with Etcd([etcd_server.endpoint], max_txn_ops=1000) as etcd:
            puts = [Put(f"/txn-limit/{i}".encode(), b"v") for i in range(129)]
            with pytest.raises(InvalidArgument, match="--etcd-max-txn-ops set to etcd's"):
                await etcd.txn([], puts)
            assert (await etcd.get_prefix(b"/txn-limit/"))[0] == []
            with pytest.raises(InvalidArgument, match="refused a transaction of 1000"):
                await Store(etcd, KeyLayout("/txn-limit/")).check_txn_limit()
        async with Etcd([etcd_server.endpoint]) as etcd:
            await Store(etcd, KeyLayout("/txn-limit/")).check_txn_limit()

    asyncio.run(run())

    # So a control plane told so does not start, and says why.
    args = ["--etcd", etcd_server.endpoint, "--insecure", "--listen", "127.0.0.1:0"]
    args += ["--prefix", "/txn-limit/", "--secrets-key-file", str(tmp_path / "key")]
    server = subprocess.run(
        [sys.executable, "-m", "fleet", "server", *args, "--etcd-max-txn-ops", "1000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert server.returncode == 1, server.stderr
    assert "--etcd-max-txn-ops set to etcd's --max-txn-ops" in server.stderr
    assert "Traceback" not in server.stderr


def test_every_refused_field_of_a_hundred_apps_reaches_the_cli(
    fleet: Fleet, tmp_path: Path
) -> None:
    """200 refusals fit in one status (compressed: their messages repeat), each at its line."""
    app_file = tmp_path / "many-privileged.yaml"
    app_file.write_text(
        "---\n".join(
            f"name: app{i}\nimage: {fleet.image}\nprivileged: true\nvolumes: [/var/log:/l]\n"
            for i in range(100)
        )
    )
    result = _apply(fleet, app_file)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 200, lines[-3:]
    # Document i starts on line 5(i-1)+1 (4 lines and a "---" each).
    for i in (1, 50, 100):
        start = 5 * (i - 1) + 1
        assert lines[2 * i - 2].startswith(
            f"error: {app_file}:{start + 2} (document {i}): privileged: app 'app{i - 1}'"
        ), lines[2 * i - 2]
        assert lines[2 * i - 1].startswith(
            f"error: {app_file}:{start + 3} (document {i}): volumes[0]: app 'app{i - 1}'"
        ), lines[2 * i - 1]
    assert _stored(fleet) == ({}, {})
