"""Hosts that join with a token, and agents that renew their certificates: the tokens
(pure) and the control plane's signer.

A join token ``fleetjoin_<id>_<secret>`` is made by an admin (``fleet hosts token
create``); only the SHA-256 of its secret is stored, with its expiry, how many hosts
may join with it and the admin labels each gets. A new host's agent sends it with a
CSR for a key it made itself, over the token port's TLS, whose CA it pinned first by
fingerprint (``fleet.agent.joining``); the control plane checks the token, signs an
agent certificate for the host id with the CA key it was given (``--ca-key``), and
counts the use in one compare-and-swap with the host's labels. The key never leaves
the host, and the CA key stays on the control-plane machines that hold it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet._time import epoch, iso_at
from fleet.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from fleet.pki.issuing import sign_agent_csr
from fleet.pki.pem import parse_cert, parse_key, same_key
from fleet.store.records import JoinTokenRecord

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "JOIN_PREFIX",
    "Signer",
    "ca_fingerprint",
    "check_join",
    "joined",
    "new_join_token",
    "parse_join_token",
]

JOIN_PREFIX = "fleetjoin"
DEFAULT_TOKEN_TTL = timedelta(hours=24)
MAX_TOKEN_TTL = timedelta(days=365)
_HOSTS_KEPT = 20  # the hosts a token's record names (the last ones)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ca_fingerprint(ca_pem: bytes) -> str:
    """``sha256:<hex>`` of the CA certificate's DER: what ``--ca-fingerprint`` takes."""
    der = parse_cert(ca_pem, "CA certificate").public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def new_join_token(
    *,
    ttl: timedelta,
    uses: int,
    labels: dict[str, str],
    description: str,
    by: str,
    now: float,
) -> tuple[JoinTokenRecord, str]:
    """A new join token: the record to store (its secret's hash only) and the token to
    show once. InvalidArgument for a ttl out of (0, 1 year]."""
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise InvalidArgument(f"--ttl must be more than 0 and at most 365d, not {ttl}")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32).replace("_", "-")
    record = JoinTokenRecord(
        id=token_id,
        secret_sha256=_digest(secret),
        expires_at=iso_at(now + ttl.total_seconds()),
        uses=uses,
        labels=labels,
        created_at=iso_at(now),
        created_by=by,
        description=description,
    )
    return record, f"{JOIN_PREFIX}_{token_id}_{secret}"


def parse_join_token(token: str) -> tuple[str, str]:
    """(id, secret) of ``fleetjoin_<id>_<secret>``; PermissionDenied for anything else
    (an API token, a typo): it says what a join token looks like."""
    prefix, _, rest = token.strip().partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != JOIN_PREFIX or not token_id or not secret:
        raise PermissionDenied(
            "that is not a join token (fleetjoin_<id>_<secret>, made by `fleet hosts token create`)"
        )
    return token_id, secret


def check_join(stored: JoinTokenRecord | None, secret: str, now: float) -> None:
    """PermissionDenied saying why the token cannot let a host in now: unknown or
    revoked (the same answer for a wrong secret: it tells a guesser nothing), expired,
    or used by as many hosts as it may."""
    if stored is None or not hmac.compare_digest(_digest(secret), stored.secret_sha256):
        raise PermissionDenied("unknown or revoked join token (see `fleet hosts token list`)")
    if now >= (epoch(stored.expires_at) or 0.0):
        raise PermissionDenied(
            f"join token {stored.id} expired at {stored.expires_at}; make a new one with "
            "`fleet hosts token create`"
        )
    if stored.uses and stored.used >= stored.uses:
        raise PermissionDenied(
            f"join token {stored.id} has let in its {stored.uses} host(s) already "
            f"({', '.join(stored.hosts) or 'none kept'}); make a new one"
        )


def joined(stored: JoinTokenRecord, host_id: str) -> JoinTokenRecord:
    """``stored`` once ``host_id`` joined with it."""
    hosts = [*stored.hosts, host_id][-_HOSTS_KEPT:]
    return stored.model_copy(update={"used": stored.used + 1, "hosts": hosts})


@dataclass(frozen=True)
class Signer:
    """The CA a control plane signs agent certificates with (``--ca-key``)."""

    ca_pem: bytes
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    lifetime: timedelta  # of the certificates it signs

    @classmethod
    def load(cls, ca_path: Path, key_path: Path, lifetime: timedelta) -> Signer:
        """The CA certificate (the server's --tls-ca) and its key; FailedPrecondition
        naming the file when they cannot sign (unreadable, another CA's key)."""
        try:
            ca_pem, key_pem = ca_path.read_bytes(), key_path.read_bytes()
        except OSError as error:
            why = f"cannot read {error.filename}: {error.strerror}"
            raise FailedPrecondition(f"--ca-key: {why}") from None
        try:
            cert = parse_cert(ca_pem, str(ca_path))
            key = parse_key(key_pem, str(key_path))
        except InvalidArgument as error:
            raise FailedPrecondition(f"--ca-key: {error}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not same_key(cert, key):
            raise FailedPrecondition(
                f"--ca-key {key_path} is not the key of the CA {ca_path} (--tls-ca): give "
                "the ca.key that `fleet certs init` wrote beside it"
            )
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            raise FailedPrecondition(f"--tls-ca {ca_path} is not a CA certificate")
        if lifetime < timedelta(minutes=1):
            raise FailedPrecondition("--agent-cert-ttl must be at least 1m")
        return cls(ca_pem, cert, key, lifetime)

    @property
    def fingerprint(self) -> str:
        return ca_fingerprint(self.ca_pem)

    def sign(self, csr_pem: bytes, host_id: str, now: datetime) -> bytes:
        cert = sign_agent_csr(self.ca_cert, self.ca_key, csr_pem, host_id, self.lifetime, now)
        return cert.public_bytes(serialization.Encoding.PEM)
