"""The PKIs ``fleet up`` runs on, kept present and fresh: fleet's (a CA, the server, the
local agent and an admin client) and etcd's own (a CA, a member and the control plane's
client), each leaf made only when missing, broken, not from this CA, within 30 days of
expiry, or lacking a SAN it should have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleet.errors import InvalidArgument
from fleet.pki.files import CertPaths, load_ca
from fleet.pki.issuing import DEFAULT_SERVER_SANS, alt_names, init_ca, issue
from fleet.pki.pem import issued_by, same_key
from fleet.pki.subjects import Kind, Role

__all__ = ["EtcdPKI", "LocalPKI", "ensure_etcd_pki", "ensure_leaves", "ensure_local_pki"]

_RENEW_BEFORE = timedelta(days=30)  # leaves this close to expiry are issued again


@dataclass(frozen=True)
class LocalPKI:
    """What ``ensure_local_pki`` made or found; ``written`` lists the files it wrote."""

    dir: Path
    ca: CertPaths
    server: CertPaths
    agent: CertPaths
    client: CertPaths
    written: tuple[Path, ...] = ()


@dataclass(frozen=True)
class EtcdPKI:
    """etcd's own CA, a member certificate and the control plane's client certificate."""

    dir: Path
    ca: CertPaths
    member: CertPaths
    client: CertPaths
    written: tuple[Path, ...] = ()


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
    leaves, written = ensure_leaves(
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
    leaves, written = ensure_leaves(
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


def ensure_leaves(
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
    ca_cert, _ = load_ca(directory)
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
        if not _still_good(paths, ca_cert, alt_names(kind, name, list(sans)), now):
            issue(directory, kind, name, sans=sans, role=role, force=True)
            written += [paths.cert, paths.key]
        leaves[kind] = paths
    return leaves, tuple(written)


def _still_good(
    paths: CertPaths, ca: x509.Certificate, wanted_sans: list[x509.GeneralName], now: datetime
) -> bool:
    """Whether a leaf ``ensure_leaves`` found can stay as it is."""
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    if not same_key(cert, key) or not issued_by(cert, ca):
        return False
    if cert.not_valid_after_utc - now < _RENEW_BEFORE:
        return False
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return not wanted_sans
    return all(name in present for name in wanted_sans)
