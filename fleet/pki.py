"""A small PKI for mutual TLS: one CA per fleet, and certificates that carry identities.

The control plane reads who a peer is, and what it may do, from the subject of the
certificate the peer presented; nothing else. The convention (``O`` and ``CN`` once each;
``OU`` repeated)::

    O=fleet, OU=server, CN=<name>                   a control plane
    O=fleet, OU=agent,  CN=<host id>                an agent; SAN DNS:<host id> too
    O=fleet, OU=client, OU=role:<role>, CN=<name>   a person or script; role is one of
                                                    admin, deployer, viewer

``identity_from_subject`` rejects any subject that does not follow it exactly. Every key
is ECDSA P-256 (what gRPC's BoringSSL accepts everywhere); the CA may sign leaves only
(path length 0); servers may only serve (serverAuth) and agents and clients may only
connect (clientAuth).

etcd gets a CA of its own, never fleet's (else every agent and client certificate would
be a read-write etcd credential): ``init_ca(dir, etcd=True)`` marks it ``OU=etcd``, and
it signs only ``etcd-member`` certificates (serverAuth and clientAuth: members are each
other's clients) and ``etcd-client`` ones (the control plane's), which fleet's own CA
refuses to sign. Neither names an identity the control plane accepts.

A directory holds one PKI: ``ca.crt``, ``ca.key`` and ``<kind>-<name>.crt`` / ``.key``;
the directory is 0700 when created here, keys 0600, certificates 0644. Keys are
unencrypted PKCS#8 PEM because the daemons start unattended, with no one to type a
passphrase; the file permissions protect them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet._x509 import issued_by
from fleet.errors import InvalidArgument, PermissionDenied
from fleet.store.keys import check_host_id, check_name

__all__ = [
    "DEFAULT_SERVER_SANS",
    "CertPaths",
    "Credentials",
    "EtcdPKI",
    "Identity",
    "Kind",
    "LocalPKI",
    "Role",
    "ensure_etcd_pki",
    "ensure_local_pki",
    "identity_from_auth_context",
    "identity_from_pem",
    "identity_from_subject",
    "init_ca",
    "is_etcd_ca",
    "issue",
    "load_credentials",
    "serial_from_auth_context",
    "serial_of",
]


class Kind(StrEnum):
    """What a leaf certificate is for; its subject's first ``OU``."""

    server = "server"
    agent = "agent"
    client = "client"
    etcd_member = "etcd-member"  # from etcd's own CA: an etcd member (serves, and peers)
    etcd_client = "etcd-client"  # from etcd's own CA: the control plane's way into etcd


class Role(StrEnum):
    """What a client may do; its subject's ``OU=role:<role>``."""

    admin = "admin"
    deployer = "deployer"
    viewer = "viewer"


DEFAULT_SERVER_SANS = ("localhost", "127.0.0.1", "::1")

_ORG = "fleet"
_ETCD_KINDS = frozenset({Kind.etcd_member, Kind.etcd_client})
_IDENTITY_KINDS = frozenset(k.value for k in Kind if k not in _ETCD_KINDS)
_ETCD_UNIT = "etcd"  # the OU that marks etcd's own CA
_ROLES = frozenset(r.value for r in Role)
_ROLE_PREFIX = "role:"
_CA_NAMES = ("ca.crt", "ca.key")
_CLOCK_SKEW = timedelta(minutes=5)  # leaves are valid from a little before now
_RENEW_BEFORE = timedelta(days=30)  # ensure_local_pki re-issues leaves this close to expiry
_MAX_DAYS = 36500
_DNS_NAME = re.compile(
    r"(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*"
)


@dataclass(frozen=True)
class CertPaths:
    """Where one certificate and its key live."""

    cert: Path
    key: Path

    @classmethod
    def for_ca(cls, dir: Path | str) -> CertPaths:
        return cls(Path(dir) / _CA_NAMES[0], Path(dir) / _CA_NAMES[1])

    @classmethod
    def for_leaf(cls, dir: Path | str, kind: Kind | str, name: str) -> CertPaths:
        checked = _kind(kind)
        stem = f"{checked}-{_check_leaf_name(checked, name)}"
        return cls(Path(dir) / f"{stem}.crt", Path(dir) / f"{stem}.key")


@dataclass(frozen=True)
class Identity:
    """Who a certificate names: ``role`` is set for clients only."""

    kind: Kind
    name: str
    role: Role | None = None


@dataclass(frozen=True)
class EtcdPKI:
    """etcd's own CA, a member certificate and the control plane's client certificate."""

    dir: Path
    ca: CertPaths
    member: CertPaths
    client: CertPaths
    written: tuple[Path, ...] = ()


@dataclass(frozen=True)
class LocalPKI:
    """What ``ensure_local_pki`` made or found; ``written`` lists the files it wrote."""

    dir: Path
    ca: CertPaths
    server: CertPaths
    agent: CertPaths
    client: CertPaths
    written: tuple[Path, ...] = ()


class Credentials(NamedTuple):
    """The PEM bytes gRPC's ``ssl_*_credentials`` take."""

    ca: bytes
    cert: bytes
    key: bytes


# ------------------------------------------------------------------ identities


def identity_from_subject(subject: x509.Name) -> Identity:
    """The identity a subject names under the convention above, else InvalidArgument."""
    orgs = _values(subject, NameOID.ORGANIZATION_NAME)
    units = _values(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    names = _values(subject, NameOID.COMMON_NAME)
    shown = subject.rfc4514_string()
    if orgs != [_ORG]:
        raise InvalidArgument(f"not a fleet certificate (subject {shown!r}: expected O={_ORG})")
    kinds = [u for u in units if not u.startswith(_ROLE_PREFIX)]
    roles = [u.removeprefix(_ROLE_PREFIX) for u in units if u.startswith(_ROLE_PREFIX)]
    if len(kinds) != 1 or kinds[0] not in _IDENTITY_KINDS:
        raise InvalidArgument(
            f"subject {shown!r} must have one OU of {', '.join(sorted(_IDENTITY_KINDS))} "
            "(the certificate's kind)"
        )
    if len(names) != 1:
        raise InvalidArgument(f"subject {shown!r} must have exactly one CN")
    kind = Kind(kinds[0])
    name = _check_leaf_name(kind, names[0])
    if kind is not Kind.client:
        if roles:
            raise InvalidArgument(f"subject {shown!r}: only client certificates carry a role")
        return Identity(kind, name)
    if len(roles) != 1 or roles[0] not in _ROLES:
        raise InvalidArgument(
            f"subject {shown!r} must have one OU=role:<role>, role one of {', '.join(Role)}"
        )
    return Identity(kind, name, Role(roles[0]))


def identity_from_pem(cert_pem: bytes) -> Identity:
    """The identity in a PEM certificate's subject. Verifies nothing: call it on
    certificates the TLS handshake has already checked against the CA."""
    return identity_from_subject(_parse_cert(cert_pem, "certificate").subject)


def identity_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> Identity:
    """The peer's identity from ``grpc.ServicerContext.auth_context()``; PermissionDenied
    when the peer sent no certificate or one that names no fleet identity."""
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        raise PermissionDenied("the peer presented no client certificate")
    try:
        return identity_from_pem(pems[0])
    except InvalidArgument as error:
        raise PermissionDenied(f"peer certificate: {error}") from None


def serial_of(cert_pem: bytes) -> str:
    """A PEM certificate's serial as fleet writes it everywhere: lowercase hex."""
    return format(_parse_cert(cert_pem, "certificate").serial_number, "x")


def serial_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> str:
    """The serial of the peer's certificate ("" without one: a plaintext server)."""
    pems = auth_context.get("x509_pem_cert") or []
    return serial_of(pems[0]) if pems else ""


# ------------------------------------------------------------------ issuing


def init_ca(
    dir: Path | str, days: int = 3650, force: bool = False, *, etcd: bool = False
) -> CertPaths:
    """Make a self-signed CA in ``dir``; refuses to replace one unless ``force``. With
    ``etcd``, etcd's own CA, which signs etcd-member and etcd-client certificates only."""
    directory = _ensure_dir(Path(dir))
    paths = CertPaths.for_ca(directory)
    _refuse_overwrite(paths, force, f"a CA exists in {directory} (use --force to replace it)")
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    label = "fleet etcd CA" if etcd else "fleet CA"
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG)]
        + ([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _ETCD_UNIT)] if etcd else [])
        + [x509.NameAttribute(NameOID.COMMON_NAME, f"{label} {secrets.token_hex(4)}")]
    )
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
    _write_pair(paths, cert, key)
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
    kind = _kind(kind)
    directory = Path(dir)
    paths = CertPaths.for_leaf(directory, kind, name)
    alt_names = _alt_names(kind, name, list(sans))
    if role is not None and kind is not Kind.client:
        raise InvalidArgument(f"--role applies to client certificates, not {kind}")
    chosen_role = _role(role) if kind is Kind.client else None
    days = _check_days(days)
    ca_cert, ca_key = _load_ca(directory)
    _check_ca_purpose(ca_cert, kind, directory)
    _refuse_overwrite(paths, force, f"{paths.cert.name} exists (use --force to replace it)")

    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    # Servers may only serve, agents and clients may only connect; an etcd member does
    # both (its peers are its clients).
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if kind is Kind.server:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    elif kind is Kind.etcd_member:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    units = [kind.value] + ([_ROLE_PREFIX + chosen_role] if chosen_role else [])
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG)]
        + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in units]
        + [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        # A leaf never outlives its CA: clients would reject it after that anyway.
        .not_valid_after(min(now + timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    _write_pair(paths, builder.sign(ca_key, hashes.SHA256()), key)
    return paths


def ensure_local_pki(
    dir: Path | str,
    *,
    host_id: str,
    server_sans: Sequence[str] = DEFAULT_SERVER_SANS,
    server_name: str = "controlplane",
    client_name: str = "admin",
) -> LocalPKI:
    """The PKI ``fleet up`` runs on: a CA, a server, an agent (``host_id``) and an admin
    client certificate in ``dir``, each made only when missing, broken, not from this CA,
    within 30 days of expiry, or (the server's) lacking one of ``server_sans``.

    Idempotent: a second call writes nothing. A half-present or expired CA is an error
    rather than silently replaced, since certificates elsewhere may chain to it.
    """
    directory = Path(dir)
    leaves, written = _ensure(
        directory,
        [
            (Kind.server, server_name, tuple(server_sans), None),
            (Kind.agent, host_id, (), None),
            (Kind.client, client_name, (), Role.admin),
        ],
    )
    return LocalPKI(
        dir=directory,
        ca=CertPaths.for_ca(directory),
        server=leaves[Kind.server],
        agent=leaves[Kind.agent],
        client=leaves[Kind.client],
        written=written,
    )


def ensure_etcd_pki(
    dir: Path | str,
    *,
    member: str = "etcd",
    member_sans: Sequence[str] = DEFAULT_SERVER_SANS,
    client_name: str = "controlplane",
) -> EtcdPKI:
    """etcd's own PKI for ``fleet up``: a CA (``OU=etcd``), one member's certificate and
    the control plane's client certificate in ``dir``, made or renewed as
    ``ensure_local_pki`` does. Only the control plane gets the client certificate."""
    directory = Path(dir)
    leaves, written = _ensure(
        directory,
        [
            (Kind.etcd_member, member, tuple(member_sans), None),
            (Kind.etcd_client, client_name, (), None),
        ],
        etcd=True,
    )
    return EtcdPKI(
        dir=directory,
        ca=CertPaths.for_ca(directory),
        member=leaves[Kind.etcd_member],
        client=leaves[Kind.etcd_client],
        written=written,
    )


def _ensure(
    directory: Path,
    wanted: list[tuple[Kind, str, tuple[str, ...], Role | None]],
    *,
    etcd: bool = False,
) -> tuple[dict[Kind, CertPaths], tuple[Path, ...]]:
    """A CA in ``directory`` (made if missing) and the ``wanted`` leaves, each issued
    when missing, broken, not from this CA, near expiry or lacking a wanted SAN."""
    ca = CertPaths.for_ca(directory)
    written: list[Path] = []
    if not ca.cert.exists() and not ca.key.exists():
        made = init_ca(directory, etcd=etcd)
        written += [made.cert, made.key]
    ca_cert, _ = _load_ca(directory)
    now = datetime.now(UTC)
    if ca_cert.not_valid_after_utc <= now:
        flag = " --etcd" if etcd else ""
        raise InvalidArgument(
            f"the CA in {directory} expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}; "
            f"make a new one with `fleet certs init{flag} --dir {directory} --force`"
        )
    leaves: dict[Kind, CertPaths] = {}
    for kind, name, sans, role in wanted:
        paths = CertPaths.for_leaf(directory, kind, name)
        if not _still_good(paths, ca_cert, _alt_names(kind, name, list(sans)), now):
            issue(directory, kind, name, sans=sans, role=role, force=True)
            written += [paths.cert, paths.key]
        leaves[kind] = paths
    return leaves, tuple(written)


# ------------------------------------------------------------------ loading


def load_credentials(ca: Path | str, cert: Path | str, key: Path | str) -> Credentials:
    """Read a CA bundle, a certificate and its key for gRPC, checking that they belong
    together, so a mistake is one clear error here rather than a failed handshake later."""
    ca_path, cert_path, key_path = Path(ca), Path(cert), Path(key)
    ca_pem, cert_pem, key_pem = _read(ca_path), _read(cert_path), _read(key_path)
    try:
        ca_certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise InvalidArgument(f"{ca_path} holds no PEM certificate") from None
    leaf = _parse_cert(cert_pem, str(cert_path))
    private = _parse_key(key_pem, key_path)
    if _public_der(private.public_key()) != _public_der(leaf.public_key()):
        raise InvalidArgument(
            f"{key_path} is not the key of {cert_path}; {_fix_hint(cert_path, force=True)}"
        )
    issuer = next((c for c in ca_certs if issued_by(leaf, c)), None)
    if issuer is None:
        raise InvalidArgument(
            f"{cert_path} was not issued by the CA in {ca_path}; {_fix_hint(cert_path, force=True)}"
        )
    # An expired certificate fails every handshake with an obscure error; say so here.
    now = datetime.now(UTC)
    for path, checked in ((ca_path, issuer), (cert_path, leaf)):
        if not checked.not_valid_before_utc <= now <= checked.not_valid_after_utc:
            raise InvalidArgument(
                f"{path} is valid only from {checked.not_valid_before_utc:%Y-%m-%d %H:%M} "
                f"to {checked.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; {_fix_hint(path)}"
            )
    return Credentials(ca_pem, cert_pem, key_pem)


# ------------------------------------------------------------------ helpers


def _values(subject: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in subject.get_attributes_for_oid(oid)]


def _kind(kind: Kind | str) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        raise InvalidArgument(f"unknown certificate kind {kind!r}: use {', '.join(Kind)}") from None


def _role(role: Role | str | None) -> Role:
    try:
        return Role(role or Role.admin)
    except ValueError:
        raise InvalidArgument(f"unknown role {role!r}: use {', '.join(Role)}") from None


def _check_leaf_name(kind: Kind, name: str) -> str:
    """Agents are named by host id (dots allowed); servers and clients by a DNS label.
    Either way the name is safe in a file name and in an etcd key."""
    if kind is Kind.agent:
        return check_host_id(name)
    return check_name(name, f"{kind} name")


def _check_days(days: int) -> int:
    if not 1 <= days <= _MAX_DAYS:
        raise InvalidArgument(f"--days must be between 1 and {_MAX_DAYS} (got {days})")
    return days


def is_etcd_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is etcd's own CA (``init_ca(..., etcd=True)``)."""
    return _ETCD_UNIT in _values(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)


def _check_ca_purpose(ca: x509.Certificate, kind: Kind, directory: Path) -> None:
    """etcd's CA signs etcd certificates only, fleet's CA never does: a certificate of
    one must never open the other."""
    if kind in _ETCD_KINDS and not is_etcd_ca(ca):
        raise InvalidArgument(
            f"{kind} certificates come from etcd's own CA, not from the one in {directory} "
            "that signs agents and clients (else every agent and client could use etcd): "
            "make one with `fleet certs init --etcd --dir DIR`"
        )
    if kind not in _ETCD_KINDS and is_etcd_ca(ca):
        raise InvalidArgument(
            f"the CA in {directory} is etcd's own: it signs etcd-member and etcd-client "
            f"certificates only; {kind} certificates come from fleet's CA"
        )


def _alt_names(kind: Kind, name: str, sans: list[str]) -> list[x509.GeneralName]:
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


def _ensure_dir(directory: Path) -> Path:
    """``directory``, created 0700 if missing (an existing one keeps its mode)."""
    if directory.is_dir():
        return directory
    try:
        directory.mkdir(parents=True, mode=0o700)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    except OSError as error:
        raise InvalidArgument(f"cannot create {directory}: {error.strerror}") from None
    return directory


def _refuse_overwrite(paths: CertPaths, force: bool, message: str) -> None:
    if not force and (paths.cert.exists() or paths.key.exists()):
        raise InvalidArgument(message)


def _write_pair(paths: CertPaths, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """Key first, then certificate: a certificate on disk always has its key beside it."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(paths.key, key_pem, 0o600)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` atomically; the file never exists with a wider mode."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            os.fchmod(file.fileno(), mode)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise InvalidArgument(f"cannot write {path}: {error.strerror}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"{path} does not exist; {_fix_hint(path)}") from None
    except PermissionError:
        raise InvalidArgument(
            f"cannot read {path}: permission denied; run as the user that owns it "
            "(keys are readable by their owner only)"
        ) from None
    except OSError as error:
        raise InvalidArgument(f"cannot read {path}: {error.strerror}") from None


def _fix_hint(path: Path, force: bool = False) -> str:
    """How to make ``path`` (named by this module's file layout) again; ``--force`` when
    it, or the other file of its pair, is still there and would block the command."""
    directory = path.parent
    pair = [path.with_suffix(".crt"), path.with_suffix(".key")]
    again = " --force" if force or any(p.exists() for p in pair) else ""
    if path.name in _CA_NAMES:
        return f"run `fleet certs init --dir {directory}{again}`"
    for kind in sorted(Kind, key=len, reverse=True):  # etcd-member before a shorter kind
        name = path.stem.removeprefix(f"{kind}-")
        if name != path.stem and name:
            return f"run `fleet certs issue {kind} {name} --dir {directory}{again}`"
    return f"check the path, or make a PKI with `fleet certs init --dir {directory}`"


def _parse_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise InvalidArgument(f"{what} is not a PEM certificate") from None


def _parse_key(pem: bytes, path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{path} is not an EC private key")
    return key


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    paths = CertPaths.for_ca(directory)
    if not paths.cert.exists() and not paths.key.exists():
        raise InvalidArgument(
            f"no CA in {directory}; run `fleet certs init --dir {directory}` first"
        )
    cert = _parse_cert(_read(paths.cert), str(paths.cert))
    key = _parse_key(_read(paths.key), paths.key)
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise InvalidArgument(f"{paths.key} is not the key of {paths.cert}")
    return cert, key


def _public_der(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return b""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _still_good(
    paths: CertPaths, ca: x509.Certificate, alt_names: list[x509.GeneralName], now: datetime
) -> bool:
    """Whether a leaf ``ensure_local_pki`` found can stay as it is."""
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if _public_der(key.public_key()) != _public_der(cert.public_key()) or not issued_by(cert, ca):
        return False
    if cert.not_valid_after_utc - now < _RENEW_BEFORE:
        return False
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return not alt_names
    return all(name in present for name in alt_names)
