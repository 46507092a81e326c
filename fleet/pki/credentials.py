"""A set of TLS files checked as a whole before it is used: the key is the
certificate's, the CA signed it, and both are valid now. The agent checks renewed
certificate files with it before it reconnects with them (``fleet.agent.certwatch``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from cryptography import x509

from fleet.errors import InvalidArgument
from fleet.pki.files import fix_hint, parse_ec_key, read
from fleet.pki.pem import issued_by, parse_cert, same_key

__all__ = ["Credentials", "load_credentials"]


class Credentials(NamedTuple):
    """The PEM bytes gRPC's ``ssl_*_credentials`` take."""

    ca: bytes
    cert: bytes
    key: bytes


def load_credentials(ca: Path | str, cert: Path | str, key: Path | str) -> Credentials:
    """Read a CA bundle, a certificate and its key for gRPC, checking that they belong
    together, so a mistake is one clear error here rather than a failed handshake later."""
    ca_path, cert_path, key_path = Path(ca), Path(cert), Path(key)
    ca_pem, cert_pem, key_pem = read(ca_path), read(cert_path), read(key_path)
    try:
        ca_certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise InvalidArgument(f"{ca_path} holds no PEM certificate") from None
    leaf = parse_cert(cert_pem, str(cert_path))
    private = parse_ec_key(key_pem, key_path)
    if not same_key(leaf, private):
        raise InvalidArgument(
            f"{key_path} is not the key of {cert_path}; {fix_hint(cert_path, force=True)}"
        )
    issuer = next((c for c in ca_certs if issued_by(leaf, c)), None)
    if issuer is None:
        raise InvalidArgument(
            f"{cert_path} was not issued by the CA in {ca_path}; {fix_hint(cert_path, force=True)}"
        )
    # An expired certificate fails every handshake with an obscure error; say so here.
    now = datetime.now(UTC)
    for path, checked in ((ca_path, issuer), (cert_path, leaf)):
        if not checked.not_valid_before_utc <= now <= checked.not_valid_after_utc:
            raise InvalidArgument(
                f"{path} is valid only from {checked.not_valid_before_utc:%Y-%m-%d %H:%M} "
                f"to {checked.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; {fix_hint(path)}"
            )
    return Credentials(ca_pem, cert_pem, key_pem)
