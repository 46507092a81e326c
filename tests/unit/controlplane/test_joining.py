"""Join tokens and the signer (pure): what a token lets in, and what a CSR gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.agent.joining import normalize_fingerprint, renew_at
from fleet.controlplane.joining import (
    Signer,
    ca_fingerprint,
    check_join,
    joined,
    new_join_token,
    parse_join_token,
)
from fleet.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from fleet.pki.issuing import init_ca
from fleet.store.records import JoinTokenRecord

NOW = 1_800_000_000.0


def _token(uses: int = 0, ttl: float = 3600) -> tuple[JoinTokenRecord, str, str]:
    record, token = new_join_token(
        ttl=timedelta(seconds=ttl),
        uses=uses,
        labels={"zone": "a"},
        description="",
        by="ann",
        now=NOW,
    )
    _, secret = parse_join_token(token)
    return record, token, secret


def test_a_token_is_stored_hashed_and_checked_by_its_secret() -> None:
    record, token, secret = _token()
    assert token.startswith(f"fleetjoin_{record.id}_")
    assert secret not in record.model_dump_json()
    check_join(record, secret, NOW + 10)
    with pytest.raises(PermissionDenied, match="unknown or revoked"):
        check_join(record, secret + "x", NOW)
    with pytest.raises(PermissionDenied, match="unknown or revoked"):
        check_join(None, secret, NOW)


def test_a_token_expires_and_lets_in_at_most_its_uses() -> None:
    record, _, secret = _token(uses=2, ttl=60)
    with pytest.raises(PermissionDenied, match="expired at"):
        check_join(record, secret, NOW + 60)
    once = joined(record, "h1")
    check_join(once, secret, NOW)
    twice = joined(once, "h2")
    assert (twice.used, twice.hosts) == (2, ["h1", "h2"])
    with pytest.raises(PermissionDenied, match=r"let in its 2 host\(s\) already \(h1, h2\)"):
        check_join(twice, secret, NOW)


@pytest.mark.parametrize("text", ["", "fleet_abc_def", "fleetjoin_abc", "fleetjoin__x", "x"])
def test_anything_but_a_join_token_is_refused_saying_what_one_is(text: str) -> None:
    with pytest.raises(PermissionDenied, match="fleetjoin_<id>_<secret>"):
        parse_join_token(text)


@pytest.mark.parametrize("ttl", [0, -1, 366 * 86400])
def test_a_token_lives_more_than_nothing_and_at_most_a_year(ttl: float) -> None:
    with pytest.raises(InvalidArgument, match="--ttl"):
        _token(ttl=ttl)


def _csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str = "evil") -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_the_signer_names_the_host_it_is_asked_for_whatever_the_csr_says(tmp_path: Path) -> None:
    paths = init_ca(tmp_path)
    signer = Signer.load(paths.cert, paths.key, timedelta(minutes=1))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime(2027, 1, 1, tzinfo=UTC)
    cert = x509.load_pem_x509_certificate(signer.sign(_csr(key), "h7", now))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "h7"
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # A short life gets a short skew: renewal comes 2/3 into it, not at once.
    assert cert.not_valid_after_utc - now == timedelta(minutes=1)
    assert now - cert.not_valid_before_utc == timedelta(seconds=6)
    assert now.timestamp() + 30 < renew_at(cert) < now.timestamp() + 40
    assert signer.fingerprint == ca_fingerprint(paths.cert.read_bytes())


def test_the_signer_refuses_bad_csrs_and_keys_that_are_not_its_cas(tmp_path: Path) -> None:
    paths = init_ca(tmp_path / "a")
    other = init_ca(tmp_path / "b")
    signer = Signer.load(paths.cert, paths.key, timedelta(days=1))
    now = datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidArgument, match="not a PEM CSR"):
        signer.sign(b"junk", "h1", now)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidArgument, match="ECDSA P-256"):
        signer.sign(_csr(rsa_key), "h1", now)
    with pytest.raises(FailedPrecondition, match="is not the key of the CA"):
        Signer.load(paths.cert, other.key, timedelta(days=1))
    with pytest.raises(FailedPrecondition, match="cannot read"):
        Signer.load(paths.cert, tmp_path / "missing.key", timedelta(days=1))


@pytest.mark.parametrize(
    "text",
    [
        "sha256:" + "ab" * 32,
        "SHA256:" + "AB" * 32,
        "sha256 Fingerprint=" + ":".join(["AB"] * 32),
        "ab" * 32,
    ],
)
def test_fingerprints_are_taken_as_people_paste_them(text: str) -> None:
    assert normalize_fingerprint(text) == "sha256:" + "ab" * 32


@pytest.mark.parametrize("text", ["", "sha256:abc", "md5:" + "ab" * 16, "sha256:" + "zz" * 32])
def test_a_malformed_fingerprint_says_what_is_expected(text: str) -> None:
    with pytest.raises(InvalidArgument, match="sha256:<64 hex digits>"):
        normalize_fingerprint(text)
