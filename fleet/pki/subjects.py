"""Who a certificate names: fleet's subject convention, written and read back.

The control plane reads who a peer is, and what it may do, from the subject of the
certificate the peer presented; nothing else. The convention (``O`` and ``CN`` once each;
``OU`` repeated)::

    O=fleet, OU=server, CN=<name>                   a control plane
    O=fleet, OU=agent,  CN=<host id>                an agent; SAN DNS:<host id> too
    O=fleet, OU=client, OU=role:<role>, CN=<name>   a person or script; role is one of
                                                    admin, deployer, viewer

``identity_from_subject`` rejects any subject that does not follow it exactly. etcd's
certificates (``OU=etcd-member``, ``OU=etcd-client``, from etcd's own CA, marked
``OU=etcd``) name no identity the control plane accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID

from fleet.errors import InvalidArgument, PermissionDenied
from fleet.pki.pem import parse_cert
from fleet.store.keys import check_host_id, check_name

__all__ = [
    "ETCD_KINDS",
    "Identity",
    "Kind",
    "Role",
    "ca_subject",
    "check_leaf_name",
    "expiry_from_auth_context",
    "identity_from_auth_context",
    "identity_from_pem",
    "identity_from_subject",
    "is_etcd_ca",
    "leaf_subject",
    "parse_kind",
    "parse_role",
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


@dataclass(frozen=True)
class Identity:
    """Who a certificate names: ``role`` is set for clients only."""

    kind: Kind
    name: str
    role: Role | None = None


ETCD_KINDS = frozenset({Kind.etcd_member, Kind.etcd_client})

_ORG = "fleet"
_IDENTITY_KINDS = frozenset(k.value for k in Kind if k not in ETCD_KINDS)
_ETCD_UNIT = "etcd"  # the OU that marks etcd's own CA
_ROLES = frozenset(r.value for r in Role)
_ROLE_PREFIX = "role:"


# ------------------------------------------------------------------ written


def ca_subject(label: str, *, etcd: bool) -> x509.Name:
    """A CA's subject: ``O=fleet`` (``OU=etcd`` for etcd's own), ``CN=label``."""
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG)]
        + ([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _ETCD_UNIT)] if etcd else [])
        + [x509.NameAttribute(NameOID.COMMON_NAME, label)]
    )


def leaf_subject(kind: Kind, name: str, role: Role | None) -> x509.Name:
    """The subject of a ``kind`` certificate for ``name`` (``role``: clients only)."""
    units = [kind.value] + ([_ROLE_PREFIX + role] if role else [])
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG)]
        + [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, u) for u in units]
        + [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )


def parse_kind(kind: Kind | str) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        raise InvalidArgument(f"unknown certificate kind {kind!r}: use {', '.join(Kind)}") from None


def parse_role(role: Role | str | None) -> Role:
    """``role`` as a Role; None is admin."""
    try:
        return Role(role or Role.admin)
    except ValueError:
        raise InvalidArgument(f"unknown role {role!r}: use {', '.join(Role)}") from None


def check_leaf_name(kind: Kind, name: str) -> str:
    """Agents are named by host id (dots allowed); servers and clients by a DNS label.
    Either way the name is safe in a file name and in an etcd key."""
    if kind is Kind.agent:
        return check_host_id(name)
    return check_name(name, f"{kind} name")


# ------------------------------------------------------------------ read


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
    name = check_leaf_name(kind, names[0])
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
    return identity_from_subject(parse_cert(cert_pem, "certificate").subject)


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


def is_etcd_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is etcd's own CA (``init_ca(..., etcd=True)``)."""
    return _ETCD_UNIT in _values(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)


def serial_of(cert_pem: bytes) -> str:
    """A PEM certificate's serial as fleet writes it everywhere: lowercase hex."""
    return format(parse_cert(cert_pem, "certificate").serial_number, "x")


def expiry_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> str:
    """When the peer's certificate expires, RFC 3339 UTC ("" without one)."""
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        return ""
    expires = parse_cert(pems[0], "certificate").not_valid_after_utc
    return expires.isoformat(timespec="seconds").replace("+00:00", "Z")


def serial_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> str:
    """The serial of the peer's certificate ("" without one: a plaintext server)."""
    pems = auth_context.get("x509_pem_cert") or []
    return serial_of(pems[0]) if pems else ""


def _values(subject: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in subject.get_attributes_for_oid(oid)]
