"""Tests of fleet.pki and ``fleet certs``: real keys and certificates in a temporary
directory. The CA signs what it issues, subjects round-trip to identities, files are
private, nothing is overwritten by accident, and gRPC accepts the certificates for
mutual TLS (and hands the server an identity it can read)."""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from fleet.cli import certs
from fleet.errors import InvalidArgument, PermissionDenied
from fleet.pki.credentials import load_credentials
from fleet.pki.files import CertPaths
from fleet.pki.issuing import init_ca, issue
from fleet.pki.local import LocalPKI, ensure_etcd_pki, ensure_local_pki
from fleet.pki.subjects import (
    Identity,
    Kind,
    Role,
    identity_from_auth_context,
    identity_from_pem,
    identity_from_subject,
    is_etcd_ca,
)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    try:
        public.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
    except Exception:
        return False
    return True


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_ca(directory)
    return directory


# ---------------------------------------------------------------------- the CA


def test_init_makes_a_self_signed_p256_ca_that_signs_leaves_only(tmp_path: Path) -> None:
    paths = init_ca(tmp_path / "pki")
    assert paths == CertPaths(tmp_path / "pki" / "ca.crt", tmp_path / "pki" / "ca.key")
    ca = _cert(paths.cert)
    assert ca.subject == ca.issuer
    assert _signed_by(ca, ca)
    [cn] = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert str(cn.value).startswith("fleet CA ")
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    lifetime = ca.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=3649) < lifetime <= timedelta(days=3650)


def test_each_ca_gets_its_own_name(tmp_path: Path) -> None:
    first = _cert(init_ca(tmp_path / "a").cert)
    second = _cert(init_ca(tmp_path / "b").cert)
    assert first.subject != second.subject


def test_files_are_private(pki_dir: Path) -> None:
    server = issue(pki_dir, "server", "cp")
    assert _mode(pki_dir) == 0o700
    for key in (pki_dir / "ca.key", server.key):
        assert _mode(key) == 0o600
    for cert in (pki_dir / "ca.crt", server.cert):
        assert _mode(cert) == 0o644
    assert sorted(p.name for p in pki_dir.iterdir()) == [
        "ca.crt",
        "ca.key",
        "server-cp.crt",
        "server-cp.key",
    ]  # no temporary files left behind


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        paths = init_ca(tmp_path / "pki")
    finally:
        os.umask(old)
    assert (_mode(paths.key), _mode(paths.cert), _mode(tmp_path / "pki")) == (0o600, 0o644, 0o700)


def test_init_refuses_to_replace_a_ca_unless_forced(pki_dir: Path) -> None:
    before = (pki_dir / "ca.crt").read_bytes()
    with pytest.raises(InvalidArgument, match="--force"):
        init_ca(pki_dir)
    assert (pki_dir / "ca.crt").read_bytes() == before
    init_ca(pki_dir, force=True)
    assert (pki_dir / "ca.crt").read_bytes() != before


def test_issue_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="fleet certs init --dir"):
        issue(tmp_path, "client", "alice")


# ---------------------------------------------------------------------- leaves


@pytest.mark.parametrize(
    ("kind", "name", "role", "usage", "identity"),
    [
        ("server", "cp", None, ExtendedKeyUsageOID.SERVER_AUTH, Identity(Kind.server, "cp")),
        (
            "agent",
            "h1.example.com",
            None,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            Identity(Kind.agent, "h1.example.com"),
        ),
        (
            "client",
            "alice",
            None,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            Identity(Kind.client, "alice", Role.admin),
        ),
        (
            "client",
            "ci",
            "deployer",
            ExtendedKeyUsageOID.CLIENT_AUTH,
            Identity(Kind.client, "ci", Role.deployer),
        ),
    ],
)
def test_issue_each_kind(
    pki_dir: Path,
    kind: str,
    name: str,
    role: str | None,
    usage: x509.ObjectIdentifier,
    identity: Identity,
) -> None:
    paths = issue(pki_dir, kind, name, role=role)
    assert paths == CertPaths(pki_dir / f"{kind}-{name}.crt", pki_dir / f"{kind}-{name}.key")
    cert = _cert(paths.cert)
    ca = _cert(pki_dir / "ca.crt")
    assert identity_from_pem(paths.cert.read_bytes()) == identity
    assert cert.issuer == ca.subject
    assert _signed_by(cert, ca)
    cert.verify_directly_issued_by(ca)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage([usage])
    )
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not constraints.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=364) < lifetime <= timedelta(days=365)


def test_agent_subject_and_san_carry_the_host_id(pki_dir: Path) -> None:
    cert = _cert(issue(pki_dir, Kind.agent, "h7").cert)
    assert cert.subject.rfc4514_string() == "CN=h7,OU=agent,O=fleet"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [x509.DNSName("h7")]


def test_client_subject_carries_the_role_as_a_second_ou(pki_dir: Path) -> None:
    cert = _cert(issue(pki_dir, "client", "bob", role="viewer").cert)
    assert cert.subject.rfc4514_string() == "CN=bob,OU=role:viewer,OU=client,O=fleet"


def test_a_leaf_from_another_ca_does_not_chain(pki_dir: Path, tmp_path: Path) -> None:
    init_ca(tmp_path / "other")
    stranger = _cert(issue(tmp_path / "other", "client", "eve").cert)
    assert not _signed_by(stranger, _cert(pki_dir / "ca.crt"))


def test_server_sans_take_ips_and_names(pki_dir: Path) -> None:
    sans = ["10.1.2.3", "fd00::7", "CP.Example.com", "cp.example.com", "*.fleet.internal"]
    cert = _cert(issue(pki_dir, "server", "cp", sans=sans).cert)
    present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(present) == [
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        x509.IPAddress(ipaddress.ip_address("fd00::7")),
        x509.DNSName("cp.example.com"),
        x509.DNSName("*.fleet.internal"),
    ]


def test_server_sans_default_to_the_loopback_names(pki_dir: Path) -> None:
    cert = _cert(issue(pki_dir, "server", "cp").cert)
    present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert present.get_values_for_type(x509.DNSName) == ["localhost"]
    assert present.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_client_certificates_have_no_sans(pki_dir: Path) -> None:
    cert = _cert(issue(pki_dir, "client", "alice").cert)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


@pytest.mark.parametrize(
    "name", ["Host1", "a/b", "a..b", "..", "", "h1\n", "-h1", "h1.", "a" * 254, "h 1", "h1\x00"]
)
def test_invalid_agent_names_are_rejected(pki_dir: Path, name: str) -> None:
    with pytest.raises(InvalidArgument, match="host id"):
        issue(pki_dir, "agent", name)
    assert sorted(p.name for p in pki_dir.iterdir()) == ["ca.crt", "ca.key"]


@pytest.mark.parametrize("name", ["Alice", "a/b", "..", "", "bob\n", "a.b"])
def test_invalid_client_and_server_names_are_rejected(pki_dir: Path, name: str) -> None:
    for kind in ("client", "server"):
        with pytest.raises(InvalidArgument, match=f"{kind} name"):
            issue(pki_dir, kind, name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "root", "name": "x"}, "unknown certificate kind"),
        ({"kind": "client", "name": "x", "role": "god"}, "unknown role"),
        ({"kind": "server", "name": "x", "role": "admin"}, "--role applies to client"),
        ({"kind": "agent", "name": "h1", "sans": ["10.0.0.1"]}, "--san applies to server"),
        ({"kind": "client", "name": "x", "sans": ["x.example"]}, "--san applies to server"),
        ({"kind": "server", "name": "x", "sans": ["bad name"]}, "invalid --san"),
        ({"kind": "server", "name": "x", "sans": ["a/b"]}, "invalid --san"),
        ({"kind": "server", "name": "x", "days": 0}, "--days"),
    ],
)
def test_bad_requests_are_rejected(pki_dir: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        issue(pki_dir, **kwargs)  # type: ignore[arg-type]


def test_issue_refuses_to_replace_a_certificate_unless_forced(pki_dir: Path) -> None:
    paths = issue(pki_dir, "client", "alice")
    before = paths.cert.read_bytes(), paths.key.read_bytes()
    with pytest.raises(InvalidArgument, match=re.escape("client-alice.crt exists")):
        issue(pki_dir, "client", "alice", role="viewer")
    assert (paths.cert.read_bytes(), paths.key.read_bytes()) == before
    issue(pki_dir, "client", "alice", role="viewer", force=True)
    assert identity_from_pem(paths.cert.read_bytes()).role is Role.viewer
    assert paths.key.read_bytes() != before[1]


def test_days_are_honoured(pki_dir: Path) -> None:
    cert = _cert(issue(pki_dir, "agent", "h1", days=1).cert)
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(hours=23, minutes=59) < lifetime <= timedelta(days=1)
    assert cert.not_valid_before_utc <= datetime.now(UTC)


def test_a_leaf_never_outlives_its_ca(tmp_path: Path) -> None:
    init_ca(tmp_path, days=10)
    cert = _cert(issue(tmp_path, "client", "alice", days=365).cert)
    assert cert.not_valid_after_utc == _cert(tmp_path / "ca.crt").not_valid_after_utc


# ---------------------------------------------------------------------- identities


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


ORG, UNIT, CN = NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME


def test_identity_from_subject_reads_the_convention() -> None:
    subject = _name((ORG, "fleet"), (UNIT, "role:viewer"), (UNIT, "client"), (CN, "bob"))
    assert identity_from_subject(subject) == Identity(Kind.client, "bob", Role.viewer)
    subject = _name((CN, "h1"), (UNIT, "agent"), (ORG, "fleet"))  # order does not matter
    assert identity_from_subject(subject) == Identity(Kind.agent, "h1")


@pytest.mark.parametrize(
    "subject",
    [
        _name((UNIT, "agent"), (CN, "h1")),  # no O
        _name((ORG, "acme"), (UNIT, "agent"), (CN, "h1")),
        _name((ORG, "fleet"), (ORG, "acme"), (UNIT, "agent"), (CN, "h1")),
        _name((ORG, "fleet"), (CN, "h1")),  # no kind
        _name((ORG, "fleet"), (UNIT, "agent"), (UNIT, "server"), (CN, "h1")),
        _name((ORG, "fleet"), (UNIT, "ca"), (CN, "h1")),
        _name((ORG, "fleet"), (UNIT, "agent")),  # no CN
        _name((ORG, "fleet"), (UNIT, "agent"), (CN, "h1"), (CN, "h2")),
        _name((ORG, "fleet"), (UNIT, "agent"), (CN, "H1")),
        _name((ORG, "fleet"), (UNIT, "agent"), (CN, "../etc")),
        _name((ORG, "fleet"), (UNIT, "agent"), (UNIT, "role:admin"), (CN, "h1")),
        _name((ORG, "fleet"), (UNIT, "client"), (CN, "alice")),  # no role
        _name((ORG, "fleet"), (UNIT, "client"), (UNIT, "role:root"), (CN, "alice")),
        _name(
            (ORG, "fleet"), (UNIT, "client"), (UNIT, "role:admin"), (UNIT, "role:viewer"), (CN, "a")
        ),
    ],
)
def test_identity_from_subject_rejects_anything_else(subject: x509.Name) -> None:
    with pytest.raises(InvalidArgument):
        identity_from_subject(subject)


def test_identity_from_pem_rejects_a_ca_and_garbage(pki_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="OU"):
        identity_from_pem((pki_dir / "ca.crt").read_bytes())
    with pytest.raises(InvalidArgument, match="not a PEM certificate"):
        identity_from_pem(b"hello")


def test_identity_from_auth_context(pki_dir: Path) -> None:
    pem = issue(pki_dir, "agent", "h1").cert.read_bytes()
    context = {"x509_pem_cert": [pem], "x509_common_name": [b"h1"]}
    assert identity_from_auth_context(context) == Identity(Kind.agent, "h1")
    with pytest.raises(PermissionDenied, match="no client certificate"):
        identity_from_auth_context({"transport_security_type": [b"insecure"]})
    ca_pem = (pki_dir / "ca.crt").read_bytes()
    with pytest.raises(PermissionDenied, match="peer certificate"):
        identity_from_auth_context({"x509_pem_cert": [ca_pem]})


# ---------------------------------------------------------------------- ensure_local_pki


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes, int]]:
    return {
        p.name: (p.stat().st_mtime_ns, p.read_bytes(), p.stat().st_ino)
        for p in sorted(directory.iterdir())
    }


def test_ensure_local_pki_makes_everything_once(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    local = ensure_local_pki(directory, host_id="h1")
    assert local.ca == CertPaths.for_ca(directory)
    assert local.server == CertPaths.for_leaf(directory, "server", "controlplane")
    assert local.agent == CertPaths.for_leaf(directory, "agent", "h1")
    assert local.client == CertPaths.for_leaf(directory, "client", "admin")
    assert len(local.written) == 8
    assert identity_from_pem(local.client.cert.read_bytes()).role is Role.admin
    for paths in (local.server, local.agent, local.client):
        load_credentials(local.ca.cert, paths.cert, paths.key)

    before = _snapshot(directory)
    again = ensure_local_pki(directory, host_id="h1")
    assert again.written == ()
    assert _snapshot(directory) == before
    assert again == local.__class__(**{**local.__dict__, "written": ()})


def test_ensure_local_pki_reissues_only_what_is_missing_or_stale(tmp_path: Path) -> None:
    local = ensure_local_pki(tmp_path, host_id="h1")
    ca_before = local.ca.cert.read_bytes()
    local.agent.key.unlink()
    again = ensure_local_pki(tmp_path, host_id="h1", server_sans=["localhost", "10.0.0.9"])
    assert set(again.written) == {
        local.agent.cert,
        local.agent.key,
        local.server.cert,
        local.server.key,
    }
    assert local.ca.cert.read_bytes() == ca_before
    server = _cert(local.server.cert)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.0.0.9") in sans.get_values_for_type(x509.IPAddress)


def test_ensure_local_pki_reissues_leaves_of_a_replaced_ca(tmp_path: Path) -> None:
    local = ensure_local_pki(tmp_path, host_id="h1")
    init_ca(tmp_path, force=True)
    again = ensure_local_pki(tmp_path, host_id="h1")
    assert len(again.written) == 6
    ca = _cert(local.ca.cert)
    for paths in (again.server, again.agent, again.client):
        assert _signed_by(_cert(paths.cert), ca)


def test_ensure_local_pki_will_not_replace_half_a_ca(tmp_path: Path) -> None:
    local = ensure_local_pki(tmp_path, host_id="h1")
    local.ca.key.unlink()
    with pytest.raises(InvalidArgument) as caught:
        ensure_local_pki(tmp_path, host_id="h1")
    assert str(caught.value) == (
        f"{local.ca.key} does not exist; run `fleet certs init --dir {tmp_path} --force`"
    )


# ---------------------------------------------------------------------- load_credentials


def test_load_credentials_returns_the_three_pems(tmp_path: Path) -> None:
    local = ensure_local_pki(tmp_path, host_id="h1")
    ca, cert, key = load_credentials(local.ca.cert, local.agent.cert, local.agent.key)
    assert ca == local.ca.cert.read_bytes()
    assert cert == local.agent.cert.read_bytes()
    assert key == local.agent.key.read_bytes()


def test_load_credentials_says_which_file_is_missing_and_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_credentials(tmp_path / "ca.crt", tmp_path / "x.crt", tmp_path / "x.key")
    assert f"{tmp_path / 'ca.crt'} does not exist" in str(caught.value)
    assert f"run `fleet certs init --dir {tmp_path}`" in str(caught.value)

    init_ca(tmp_path)
    agent = CertPaths.for_leaf(tmp_path, "agent", "h1.example")
    with pytest.raises(InvalidArgument) as caught:
        load_credentials(tmp_path / "ca.crt", agent.cert, agent.key)
    assert f"{agent.cert} does not exist" in str(caught.value)
    assert f"run `fleet certs issue agent h1.example --dir {tmp_path}`" in str(caught.value)


def test_load_credentials_rejects_a_key_of_another_certificate(tmp_path: Path) -> None:
    local = ensure_local_pki(tmp_path, host_id="h1")
    with pytest.raises(InvalidArgument, match="is not the key of"):
        load_credentials(local.ca.cert, local.agent.cert, local.client.key)


def test_load_credentials_rejects_a_certificate_from_another_ca(tmp_path: Path) -> None:
    local = ensure_local_pki(tmp_path / "a", host_id="h1")
    other = ensure_local_pki(tmp_path / "b", host_id="h1")
    with pytest.raises(InvalidArgument, match="was not issued by the CA"):
        load_credentials(local.ca.cert, other.agent.cert, other.agent.key)


def test_load_credentials_rejects_files_that_are_not_pem(tmp_path: Path) -> None:
    local = ensure_local_pki(tmp_path, host_id="h1")
    local.agent.key.write_bytes(b"not a key")
    with pytest.raises(InvalidArgument, match=re.escape("agent-h1.key is not an unencrypted PEM")):
        load_credentials(local.ca.cert, local.agent.cert, local.agent.key)


def test_load_credentials_explains_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = ensure_local_pki(tmp_path, host_id="h1")
    read_bytes = Path.read_bytes

    def refuse_the_key(path: Path) -> bytes:  # root reads any file, so fake the refusal
        if path == local.agent.key:
            raise PermissionError(13, "Permission denied")
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse_the_key)
    with pytest.raises(InvalidArgument, match=f"cannot read {local.agent.key}: permission"):
        load_credentials(local.ca.cert, local.agent.cert, local.agent.key)


# ---------------------------------------------------------------------- gRPC mutual TLS


@pytest.fixture
def mtls_server(tmp_path: Path) -> Iterator[tuple[LocalPKI, int, list[Identity]]]:
    """An echo server that requires a client certificate and records who called."""
    local = ensure_local_pki(tmp_path / "pki", host_id="h1")
    seen: list[Identity] = []

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(identity_from_auth_context(context.auth_context()))
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    ca, cert, key = load_credentials(local.ca.cert, local.server.cert, local.server.key)
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield local, port, seen
    finally:
        server.stop(None)


def _call(port: int, ca: Path, paths: CertPaths) -> bytes:
    credentials = grpc.ssl_channel_credentials(
        ca.read_bytes(), paths.key.read_bytes(), paths.cert.read_bytes()
    )
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        answer: bytes = channel.unary_unary("/test.Echo/Echo")(b"ping", timeout=10)
    return answer


def test_grpc_accepts_the_certificates_for_mutual_tls(
    mtls_server: tuple[LocalPKI, int, list[Identity]],
) -> None:
    local, port, seen = mtls_server
    assert _call(port, local.ca.cert, local.client) == b"ping"
    assert _call(port, local.ca.cert, local.agent) == b"ping"
    assert seen == [
        identity_from_pem(local.client.cert.read_bytes()),
        Identity(Kind.agent, "h1"),
    ]
    assert seen[0] == Identity(Kind.client, "admin", Role.admin)


def test_grpc_refuses_a_client_of_another_ca(
    mtls_server: tuple[LocalPKI, int, list[Identity]], tmp_path: Path
) -> None:
    local, port, seen = mtls_server
    init_ca(tmp_path / "other")
    stranger = issue(tmp_path / "other", "client", "admin")
    with pytest.raises(grpc.RpcError) as caught:
        _call(port, local.ca.cert, stranger)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert seen == []


def test_grpc_refuses_a_server_certificate_used_as_a_client(
    mtls_server: tuple[LocalPKI, int, list[Identity]],
) -> None:
    # Same CA, but its extended key usage allows serverAuth only: BoringSSL refuses it
    # ("unsupported certificate purpose"), so a stolen server key cannot act as a client.
    local, port, seen = mtls_server
    with pytest.raises(grpc.RpcError) as caught:
        _call(port, local.ca.cert, local.server)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert seen == []


# ---------------------------------------------------------------------- the CLI


runner = CliRunner()


def test_cli_init_issue_show(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    result = runner.invoke(certs.app, ["init", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(directory / "ca.crt"), str(directory / "ca.key")]

    args = ["issue", "server", "cp", "--dir", str(directory), "--san", "10.0.0.1"]
    result = runner.invoke(certs.app, [*args, "--san", "cp.example", "--days", "30"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        str(directory / "server-cp.crt"),
        str(directory / "server-cp.key"),
    ]

    result = runner.invoke(
        certs.app, ["issue", "client", "ci", "--role", "deployer", "--dir", str(directory)]
    )
    assert result.exit_code == 0, result.output
    assert identity_from_pem((directory / "client-ci.crt").read_bytes()).role is Role.deployer

    result = runner.invoke(certs.app, ["show", str(directory / "server-cp.crt")])
    assert result.exit_code == 0, result.output
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["subject"] == "CN=cp,OU=server,O=fleet"
    assert (fields["kind"], fields["name"]) == ("server", "cp")
    assert fields["sans"] == "10.0.0.1, cp.example"
    assert fields["not after"].startswith(f"{datetime.now(UTC) + timedelta(days=30):%Y-%m-%d}")
    fingerprint = _cert(directory / "server-cp.crt").fingerprint(hashes.SHA256()).hex(":")
    assert fields["sha256"] == fingerprint

    result = runner.invoke(certs.app, ["show", str(directory / "client-ci.crt")])
    assert "role:       deployer" in result.stdout
    result = runner.invoke(certs.app, ["show", str(directory / "ca.crt")])
    assert "kind:       ca" in result.stdout


def test_cli_dir_defaults_to_the_environment(tmp_path: Path) -> None:
    result = runner.invoke(certs.app, ["init"], env={"FLEET_PKI_DIR": str(tmp_path / "env")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env" / "ca.key").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "agent", "Bad_Host"], "error: invalid host id 'Bad_Host'"),
        (["issue", "client", "alice", "--san", "10.0.0.1"], "error: --san applies to server"),
        (["init"], "error: a CA exists"),
        (["issue", "server", "cp", "--days", "0"], "error: --days must be between"),
        (["show", "missing.crt"], "error: cannot read missing.crt"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    pki_dir: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(pki_dir)
    result = runner.invoke(certs.app, [*args], env={"FLEET_PKI_DIR": str(pki_dir)})
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_cli_unknown_kind_is_a_usage_error(pki_dir: Path) -> None:
    result = runner.invoke(certs.app, ["issue", "root", "x", "--dir", str(pki_dir)])
    assert result.exit_code == 2


# ------------------------------------------------------------------ etcd's own CA


def test_etcd_has_a_ca_of_its_own_that_signs_nothing_else(tmp_path: Path) -> None:
    fleet_dir, etcd_dir = tmp_path / "fleet", tmp_path / "etcd"
    init_ca(fleet_dir)
    init_ca(etcd_dir, etcd=True)
    for kind in (Kind.etcd_member, Kind.etcd_client):
        with pytest.raises(InvalidArgument, match="etcd's own CA"):
            issue(fleet_dir, kind, "m1")
    for kind in (Kind.server, Kind.agent, Kind.client):
        with pytest.raises(InvalidArgument, match="is etcd's own"):
            issue(etcd_dir, kind, "h1")
    member = x509.load_pem_x509_certificate(
        issue(etcd_dir, Kind.etcd_member, "m1", sans=["10.0.0.11"]).cert.read_bytes()
    )
    usages = member.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    client = x509.load_pem_x509_certificate(
        issue(etcd_dir, Kind.etcd_client, "controlplane").cert.read_bytes()
    )
    # Neither names an identity the control plane would accept.
    for cert in (member, client):
        with pytest.raises(InvalidArgument):
            identity_from_subject(cert.subject)


def test_ensure_etcd_pki_makes_it_once(tmp_path: Path) -> None:
    made = ensure_etcd_pki(tmp_path / "etcd", member="fleet-up", member_sans=["127.0.0.1"])
    assert len(made.written) == 6
    again = ensure_etcd_pki(tmp_path / "etcd", member="fleet-up", member_sans=["127.0.0.1"])
    assert again.written == () and again.client == made.client
    ca = x509.load_pem_x509_certificate(made.ca.cert.read_bytes())
    assert is_etcd_ca(ca)


def test_certs_init_etcd_through_the_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(certs.app, ["init", "--etcd", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(certs.app, ["issue", "agent", "h1", "--dir", str(tmp_path)])
    assert refused.exit_code == 2 and "etcd's own" in refused.output
    shown = CliRunner().invoke(certs.app, ["show", str(tmp_path / "ca.crt")])
    assert "etcd ca" in shown.output
