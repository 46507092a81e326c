"""``fleet certs bundle``: what one machine of a pool needs, in one directory laid out
as /etc/fleet; every control-plane bundle carries the same secrets key."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from typer.testing import CliRunner

from fleet.cli import certs
from fleet.pki.credentials import load_credentials
from fleet.secrets import load_key_file


def run(*args: str) -> list[str]:
    result = CliRunner().invoke(certs.app, list(args))
    assert result.exit_code == 0, result.output
    return [line for line in result.output.splitlines() if line.startswith("/")]


def sans(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in names]


def test_control_plane_bundles_share_the_pools_one_secrets_key(tmp_path: Path) -> None:
    pki, etcd = tmp_path / "pki", tmp_path / "etcd-pki"
    run("init", "--dir", str(pki))
    run("init", "--etcd", "--dir", str(etcd))
    for name, address in (("cp1", "10.0.0.21"), ("cp2", "10.0.0.22")):
        out = tmp_path / name
        written = run(
            *("bundle", "server", name, "--out", str(out), "--dir", str(pki)),
            *("--etcd-dir", str(etcd), "--san", address),
        )
        assert sorted(Path(p).relative_to(out).as_posix() for p in written) == [
            "etcd/ca.crt",
            "etcd/client.crt",
            "etcd/client.key",
            "pki/ca.crt",
            "pki/server.crt",
            "pki/server.key",
            "secrets.key",
        ]
        for key in ("pki/server.key", "etcd/client.key", "secrets.key"):
            assert stat.S_IMODE((out / key).stat().st_mode) == 0o600
        assert sans(out / "pki/server.crt") == [address]
        load_credentials(out / "pki/ca.crt", out / "pki/server.crt", out / "pki/server.key")
        load_credentials(out / "etcd/ca.crt", out / "etcd/client.crt", out / "etcd/client.key")
    # One key, made once beside fleet's CA, in every control plane's bundle.
    key = load_key_file(pki / "secrets.key").key_id
    assert load_key_file(tmp_path / "cp1/secrets.key").key_id == key
    assert load_key_file(tmp_path / "cp2/secrets.key").key_id == key


def test_agent_and_etcd_member_bundles(tmp_path: Path) -> None:
    pki, etcd = tmp_path / "pki", tmp_path / "etcd-pki"
    run("init", "--dir", str(pki))
    run("init", "--etcd", "--dir", str(etcd))
    run("bundle", "agent", "h1", "--out", str(tmp_path / "h1"), "--dir", str(pki))
    assert not (tmp_path / "h1/secrets.key").exists()  # agents never hold it
    assert sans(tmp_path / "h1/pki/agent.crt") == ["h1"]
    run(
        *("bundle", "etcd-member", "etcd1", "--out", str(tmp_path / "e1")),
        *("--etcd-dir", str(etcd), "--san", "10.0.0.11"),
    )
    assert sans(tmp_path / "e1/member.crt") == ["10.0.0.11"]
    # Again: the same certificate is reused, not issued anew.
    before = (tmp_path / "e1/member.crt").read_bytes()
    run(
        *("bundle", "etcd-member", "etcd1", "--out", str(tmp_path / "e1")),
        *("--etcd-dir", str(etcd), "--san", "10.0.0.11"),
    )
    assert (tmp_path / "e1/member.crt").read_bytes() == before


def test_a_bundle_needs_the_ca_and_makes_no_key_without_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        certs.app,
        ["bundle", "server", "cp1", "--out", str(tmp_path / "o"), "--dir", str(tmp_path / "no")],
    )
    assert result.exit_code == 2
    assert "a server bundle needs --san" in result.output
    result = CliRunner().invoke(
        certs.app,
        [
            *("bundle", "server", "cp1", "--out", str(tmp_path / "o")),
            *("--dir", str(tmp_path / "no"), "--san", "10.0.0.21"),
        ],
    )
    assert result.exit_code == 2 and "run `fleet certs init --dir" in result.output
    assert not (tmp_path / "no").exists()
