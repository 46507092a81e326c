"""What a refused connection says: gRPC's details (the real strings, recorded from
grpcio 1.85 against a real server) read as who refused what, our own certificate checked
before connecting, an agent refused its identity, key files open to others, and keys
that are not their certificate's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from fleet._keyfiles import loose_mode_problem, read_private
from fleet.errors import InvalidArgument, PermissionDenied
from fleet.refusals import agent_refused, check_certificate, explain_refusal, stream_trouble
from fleet.secrets import ensure_key_file, load_key_file
from fleet.testing.certs import TestPKI
from fleet.transport import (
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_BYTES,
    TlsFiles,
    Transport,
    _channel_options,
    client_transport,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SERVER = "127.0.0.1:7400"
_PREFIX = "failed to connect to all addresses; last error: "
_TSI = "UNKNOWN: ipv4:127.0.0.1:7400: Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
# What gRPC said in each case, word for word.
UNTRUSTED_SERVER = (
    _PREFIX + _TSI + "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: "
    "unable to get local issuer certificate: OK"
)
EXPIRED_SERVER = (
    _PREFIX + _TSI + "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: "
    "certificate has expired: OK"
)
FUTURE_SERVER = (
    _PREFIX + _TSI + "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: "
    "certificate is not yet valid: OK"
)
WRONG_NAME = (
    _PREFIX + "UNKNOWN: ipv4:127.0.0.1:7400: Custom verification check failed with error: "
    "UNAUTHENTICATED: Hostname Verification Check failed."
)
PLAINTEXT_SERVER = (
    _PREFIX + _TSI + "error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: "
    "Invalid certificate verification context: OK"
)
CLOSED = _PREFIX + "UNAVAILABLE: ipv4:127.0.0.1:7400: Socket closed"
DOWN = (
    _PREFIX + "UNKNOWN: ipv4:127.0.0.1:7400: Failed to connect to remote host: Connection refused"
)


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI(tmp_path / "pki")


def _said(details: str, transport: Transport) -> str:
    text = explain_refusal(details, transport, SERVER, datetime.now(UTC))
    assert text is not None, details
    assert "is `fleet server`" not in text
    return text


# ------------------------------------------------------------------ we refused the server


def test_a_server_certificate_from_another_ca_is_ours_to_refuse(pki: TestPKI) -> None:
    mine = pki.client()
    transport = Transport(TlsFiles(pki.ca, mine.cert, mine.key, origin="FLEET_PKI_DIR"))
    said = _said(UNTRUSTED_SERVER, transport)
    assert "we refused the server's certificate" in said
    assert f"it is not signed by the CA we trust, the one in {pki.ca}" in said
    assert "--tls-ca, FLEET_TLS_CA or ca.crt in FLEET_PKI_DIR" in said  # how to fix it
    assert f"certificate {pki.client().cert}, from FLEET_PKI_DIR" in said  # what was used


@pytest.mark.parametrize(
    ("details", "words"),
    [
        (EXPIRED_SERVER, "it has expired"),
        (FUTURE_SERVER, "it is not valid yet"),
        (WRONG_NAME, "it does not name 127.0.0.1, the address we connected to"),
    ],
)
def test_each_reason_to_refuse_the_server_is_said(pki: TestPKI, details: str, words: str) -> None:
    said = _said(details, Transport(pki.client()))
    assert "we refused the server's certificate" in said
    assert words in said


def test_a_plaintext_server_is_named(pki: TestPKI) -> None:
    assert "the server does not speak TLS" in _said(PLAINTEXT_SERVER, Transport(pki.client()))


def test_a_server_that_is_down_is_no_tls_refusal(pki: TestPKI) -> None:
    assert explain_refusal(DOWN, Transport(pki.client()), SERVER, NOW) is None
    assert explain_refusal("Cancelling all calls", Transport(pki.client()), SERVER, NOW) is None


def test_an_agent_says_whether_its_stream_broke_or_no_server_answered() -> None:
    """gRPC's words for both are terse ("Socket closed", "Internal error from Core");
    the agent's log says which it was, and where to look when nothing answers."""
    broke = stream_trouble(SERVER, "Internal error from Core", was_open=True)
    assert broke == f"the stream to control plane {SERVER} broke (Internal error from Core)"
    down = stream_trouble(SERVER, DOWN, was_open=False)
    assert down.startswith(f"cannot reach control plane {SERVER} ({DOWN})")
    assert "is `fleet server` running there" in down
    other = stream_trouble(SERVER, "Deadline Exceeded", was_open=False)
    assert other == f"control plane {SERVER}: Deadline Exceeded"


# ------------------------------------------------------------------ the server refused us


def test_a_closed_handshake_is_the_server_refusing_our_certificate(
    pki: TestPKI, tmp_path: Path
) -> None:
    """The server's refusal reaches the client as "Socket closed": the cause is found in
    our own files."""
    other = TestPKI(tmp_path / "other").client()
    said = _said(CLOSED, Transport(TlsFiles(pki.ca, other.cert, other.key)))
    assert "the server refused our certificate" in said
    assert f"{other.cert} is not signed by the CA in {pki.ca}" in said

    said = _said(CLOSED, Transport(pki.server()))
    assert f"{pki.server().cert} is not a client certificate" in said

    said = _said(CLOSED, Transport(pki.client()))  # nothing wrong that we can see
    assert "the server may trust another CA (its --tls-ca) or its clock may disagree" in said


def test_a_closed_handshake_without_a_client_certificate(pki: TestPKI) -> None:
    assert "it most likely serves TLS" in _said(CLOSED, Transport(None))
    token = Transport(None, token="t", token_ca=pki.ca)
    assert "send tokens to the port of the server's --token-listen" in _said(CLOSED, token)


def test_alerts_from_the_server_are_its_refusals(pki: TestPKI) -> None:
    for alert in ("tlsv1 alert unknown ca", "SSLV3_ALERT_BAD_CERTIFICATE"):
        details = f"{_PREFIX}UNKNOWN: ipv4:127.0.0.1:7400: Ssl handshake failed: {alert}"
        said = _said(details, Transport(pki.client()))
        assert "the server refused our certificate" in said, alert


# ------------------------------------------------------------------ before connecting


def test_our_own_certificate_is_checked_before_connecting(pki: TestPKI) -> None:
    now = datetime.now(UTC)
    files = pki.dated_client("lapsed", now - 10 * DAY, now - DAY)
    with pytest.raises(InvalidArgument, match=r"expired on .* so the server would refuse it"):
        check_certificate(files, files.cert.read_bytes(), now)
    with pytest.raises(InvalidArgument, match="fleet certs issue client lapsed --role admin"):
        Transport(files).channel_credentials()

    early = pki.dated_client("early", now + DAY, now + 10 * DAY)
    with pytest.raises(InvalidArgument, match="is not valid before"):
        check_certificate(early, early.cert.read_bytes(), now)

    good = pki.client()
    check_certificate(good, good.cert.read_bytes(), now)  # no error
    with pytest.raises(InvalidArgument, match="not a PEM certificate"):
        check_certificate(good, b"junk", now)


def test_a_certificate_of_another_ca_is_not_refused_before_connecting(
    pki: TestPKI, tmp_path: Path
) -> None:
    """While a CA is replaced, a server may trust a CA its clients do not: only it can say."""
    other = TestPKI(tmp_path / "other").client()
    files = TlsFiles(pki.ca, other.cert, other.key)
    check_certificate(files, other.cert.read_bytes(), datetime.now(UTC))


def test_files_say_where_their_names_came_from(
    pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FLEET_TLS_CA", "FLEET_TLS_CERT", "FLEET_TLS_KEY", "FLEET_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLEET_PKI_DIR", str(pki.dir))
    pki.client()
    found = client_transport().tls
    assert found is not None and found.origin == "FLEET_PKI_DIR"
    given = client_transport(ca=pki.ca, cert=pki.client().cert, key=pki.client().key).tls
    assert given is not None and given.origin == "--tls-ca/--tls-cert/--tls-key"


# ------------------------------------------------------------------ agents


def test_an_agent_refused_as_another_host_says_which_and_how_to_fix_it(pki: TestPKI) -> None:
    refused = agent_refused(
        "h2", SERVER, "agent certificate for 'h1' cannot register as 'h2'", pki.agent("h1")
    )
    assert isinstance(refused, PermissionDenied)
    assert "\n" not in str(refused)
    assert (
        f"its certificate {pki.agent('h1').cert} names host 'h1', the agent was started as "
        "--host-id 'h2'; fix --host-id, or issue a certificate for 'h2'"
    ) in str(refused)


def test_an_agent_refused_for_another_reason_gives_the_servers_words(pki: TestPKI) -> None:
    words = "client certificate 'admin' cannot register a host: agents need an agent certificate"
    refused = agent_refused("h1", SERVER, words, pki.client())
    assert words in str(refused)
    assert "names host" not in str(refused)


# ------------------------------------------------------------------ key files


@pytest.mark.parametrize(
    ("mode", "who"),
    [
        (0o600, None),
        (0o400, None),
        (0o640, "its group"),
        (0o604, "other users"),
        (0o644, "its group and other users"),
        (0o620, "its group"),
    ],
)
def test_key_files_must_be_their_owners_alone(mode: int, who: str | None) -> None:
    problem = loose_mode_problem(Path("/k/x.key"), "the key", mode)
    if who is None:
        assert problem is None
    else:
        assert problem == (
            f"the key /k/x.key has mode {mode:04o}, so {who} can access it; a key must be "
            "readable by its owner only: run `chmod 600 /k/x.key`"
        )


def test_a_loose_secrets_key_is_refused_at_load_and_at_start(tmp_path: Path) -> None:
    path = ensure_key_file(tmp_path / "secrets.key")
    assert load_key_file(path).key_id
    path.chmod(0o644)
    for load in (load_key_file, ensure_key_file):
        with pytest.raises(InvalidArgument, match=f"chmod 600 {path}"):
            load(path)
    path.chmod(0o600)
    assert ensure_key_file(path) == path


def test_a_loose_tls_key_is_refused(pki: TestPKI) -> None:
    files = pki.client()
    assert read_private(files.key, "the TLS key").startswith(b"-----BEGIN")
    files.key.chmod(0o640)
    with pytest.raises(InvalidArgument, match=r"the TLS key .* has mode 0640"):
        files.read()
    with pytest.raises(InvalidArgument, match="mode 0640"):
        Transport(files).channel_credentials()


def test_a_key_that_is_not_the_certificates_is_refused_naming_both(pki: TestPKI) -> None:
    """gRPC says only that a handshake failed, or a server that it could not bind."""
    mine, other = pki.client(), pki.agent("h1")
    files = TlsFiles(pki.ca, mine.cert, other.key, origin="FLEET_PKI_DIR")
    expected = (
        f"the TLS key {other.key} is not the key of the certificate {mine.cert} (from "
        "FLEET_PKI_DIR): a certificate works only with the key it was issued for; give the "
        "key written beside it, or issue a new one with `fleet certs issue client admin "
        f"--role admin --dir {pki.dir} --force`"
    )
    transport = Transport(files)
    for read in (files.read, transport.channel_credentials, transport.server_credentials):
        with pytest.raises(InvalidArgument) as raised:
            read()
        assert str(raised.value) == expected
    assert TlsFiles(pki.ca, mine.cert, mine.key).read()[2] == mine.key.read_bytes()


def test_a_key_file_that_holds_no_key_is_refused(pki: TestPKI, tmp_path: Path) -> None:
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"not a key")
    junk.chmod(0o600)
    with pytest.raises(InvalidArgument, match=f"the TLS key {junk} is not an unencrypted PEM"):
        TlsFiles(pki.ca, pki.client().cert, junk).read()


def test_a_pair_fleet_did_not_make_is_read_whatever_its_key_type(tmp_path: Path) -> None:
    """etcd's certificates may come from elsewhere (--etcd-cert), with RSA keys."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - DAY)
        .not_valid_after(now + DAY)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(tmp_path / "ca.crt", tmp_path / "etcd.crt", tmp_path / "etcd.key")
    files.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    assert files.read()[1] == files.cert.read_bytes()


# ------------------------------------------------------------------ message limits


def test_channels_send_what_the_server_takes_and_take_whole_pool_answers() -> None:
    options = dict(_channel_options([]))
    assert options["grpc.max_send_message_length"] == MAX_REQUEST_BYTES == 4 * 1024 * 1024
    assert options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    assert (
        dict(_channel_options([("grpc.max_send_message_length", -1)]))[
            "grpc.max_send_message_length"
        ]
        == -1
    )  # a caller's own option wins
