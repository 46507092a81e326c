"""Certificate checks shared by the PKI (``fleet.pki``) and the client's account of a
refused handshake (``fleet.refusals``), which cannot import the PKI (it would import
the store, and the store the transport that uses it)."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature

__all__ = ["issued_by"]


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``cert`` (directly)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
