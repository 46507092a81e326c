"""Making certificates: a CA, and the leaves it signs.

Every key is ECDSA P-256 (what gRPC's BoringSSL accepts everywhere); the CA may sign
leaves only (path length 0); servers may only serve (serverAuth) and agents and clients
may only connect (clientAuth). A leaf never outlives its CA.

etcd gets a CA of its own, never fleet's (else every agent and client certificate would
be a read-write etcd credential): ``init_ca(dir, etcd=True)`` marks it ``OU=etcd``, and
it signs only ``etcd-member`` certificates (serverAuth and clientAuth: members are each
other's clients) and ``etcd-client`` ones (the control plane's), which fleet's own CA
refuses to sign (``_check_ca_purpose``).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fleet.errors import InvalidArgument
from fleet.pki.files import CertPaths, ensure_dir, load_ca, refuse_overwrite, write_pair
from fleet.pki.subjects import (
    ETCD_KINDS,
    Kind,
    Role,
    ca_subject,
    is_etcd_ca,
    leaf_subject,
    parse_kind,
    parse_role,
)

__all__ = ["DEFAULT_SERVER_SANS", "alt_names", "init_ca", "issue", "sign_agent_csr"]

DEFAULT_SERVER_SANS = ("localhost", "127.0.0.1", "::1")

_CLOCK_SKEW = timedelta(minutes=5)  # leaves are valid from a little before now
_MAX_DAYS = 36500
_DNS_NAME = re.compile(
    r"(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
)


def init_ca(
    dir: Path | str, days: int = 3650, force: bool = False, *, etcd: bool = False
) -> CertPaths:
    """Make a self-signed CA in ``dir``; refuses to replace one unless ``force``. With
    ``etcd``, etcd's own CA, which signs etcd-member and etcd-client certificates only."""
    directory = ensure_dir(Path(dir))
    paths = CertPaths.for_ca(directory)
    refuse_overwrite(paths, force, f"a CA exists in {directory} (use --force to replace it)")
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    label = "fleet etcd CA" if etcd else "fleet CA"
    subject = ca_subject(f"{label} {secrets.token_hex(4)}", etcd=etcd)
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=_check_days(days)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(key_id, critical=False)
        .sign(key, hashes.SHA256())
    )
    write_pair(paths, cert, key)
    return paths


def issue(
    dir: Path | str,
    kind: Kind | str,
    name: str,
    sans: Iterable[str] = (),
    role: Role | str | None = None,
    days: int = 365,
    force: bool = False,
) -> CertPaths:
    """Issue a ``kind`` certificate for ``name`` signed by the CA in ``dir``.

    Servers get ``sans`` (IP addresses and DNS names; default ``DEFAULT_SERVER_SANS``);
    agents get their host id as SAN; clients get ``role`` (default admin). Refuses to
    replace an existing certificate or key unless ``force``.
    """
    kind = parse_kind(kind)
    directory = Path(dir)
    paths = CertPaths.for_leaf(directory, kind, name)
    sans_wanted = alt_names(kind, name, list(sans))
    if role is not None and kind is not Kind.client:
        raise InvalidArgument(f"--role applies to client certificates, not {kind}")
    chosen_role = parse_role(role) if kind is Kind.client else None
    days = _check_days(days)
    ca_cert, ca_key = load_ca(directory)
    _check_ca_purpose(ca_cert, kind, directory)
    refuse_overwrite(paths, force, f"{paths.cert.name} exists (use --force to replace it)")

    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign_leaf(
        ca_cert,
        ca_key,
        key.public_key(),
        leaf_subject(kind, name, chosen_role),
        kind,
        sans_wanted,
        not_before=now - _CLOCK_SKEW,
        not_after=now + timedelta(days=days),
    )
    write_pair(paths, cert, key)
    return paths


def sign_agent_csr(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    csr_pem: bytes,
    host_id: str,
    lifetime: timedelta,
    now: datetime,
) -> x509.Certificate:
    """An agent certificate for ``host_id`` (subject and SAN set here, whatever the CSR
    asks) for the CSR's key, valid for ``lifetime`` from ``now`` (less its CA's): how a
    joining or renewing agent gets one without its key leaving its host. InvalidArgument
    for a CSR that is not PEM, not signed by its own key, or not an ECDSA P-256 key."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise InvalidArgument("the certificate request is not a PEM CSR (PKCS#10)") from None
    if not csr.is_signature_valid:
        raise InvalidArgument("the certificate request is not signed by its own key")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise InvalidArgument("the certificate request's key must be ECDSA P-256, as fleet's are")
    # A little before now, for clocks a little behind, but never most of a short life.
    skew = min(_CLOCK_SKEW, lifetime / 10)
    return _sign_leaf(
        ca_cert,
        ca_key,
        public_key,
        leaf_subject(Kind.agent, host_id, None),
        Kind.agent,
        alt_names(Kind.agent, host_id, []),
        not_before=now - skew,
        not_after=now + lifetime,
    )


def _sign_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    subject: x509.Name,
    kind: Kind,
    sans: list[x509.GeneralName],
    *,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    # Servers may only serve, agents and clients may only connect; an etcd member does
    # both (its peers are its clients).
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind is Kind.server:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    elif kind is Kind.etcd_member:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        # A leaf never outlives its CA: clients would reject it after that anyway.
        .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def alt_names(kind: Kind, name: str, sans: list[str]) -> list[x509.GeneralName]:
    """The SANs a ``kind`` certificate for ``name`` gets from ``sans``: a server's are
    ``sans`` (default ``DEFAULT_SERVER_SANS``), an agent's its host id, a client's none."""
    if kind is Kind.agent:
        if sans:
            raise InvalidArgument("--san applies to server certificates (an agent's is its id)")
        return [x509.DNSName(name)]
    if kind in (Kind.client, Kind.etcd_client):
        if sans:
            raise InvalidArgument("--san applies to server certificates, not client ones")
        return []
    result: list[x509.GeneralName] = []
    for value in sans or DEFAULT_SERVER_SANS:
        general = _alt_name(value)
        if general not in result:
            result.append(general)
    return result


def _alt_name(value: str) -> x509.GeneralName:
    """An IP address if ``value`` parses as one, else a DNS name (``*.`` allowed)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    name = value.lower()
    if len(name) > 253 or not _DNS_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid --san {value!r}: expected an IP address or a DNS name (letters, "
            "digits, '-' and '.', optionally starting with '*.')"
        )
    return x509.DNSName(name)


def _check_days(days: int) -> int:
    if not 1 <= days <= _MAX_DAYS:
        raise InvalidArgument(f"--days must be between 1 and {_MAX_DAYS} (got {days})")
    return days


def _check_ca_purpose(ca: x509.Certificate, kind: Kind, directory: Path) -> None:
    """etcd's CA signs etcd certificates only, fleet's CA never does: a certificate of
    one must never open the other."""
    if kind in ETCD_KINDS and not is_etcd_ca(ca):
        raise InvalidArgument(
            f"{kind} certificates come from etcd's own CA, not from the one in {directory} "
            "that signs agents and clients (else every agent and client could use etcd): "
            "make one with `fleet certs init --etcd --dir DIR`"
        )
    if kind not in ETCD_KINDS and is_etcd_ca(ca):
        raise InvalidArgument(
            f"the CA in {directory} is etcd's own: it signs etcd-member and etcd-client "
            f"certificates only; {kind} certificates come from fleet's CA"
        )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
