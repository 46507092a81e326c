"""PEM certificates and keys parsed, and the two checks made on them everywhere: is
this key the certificate's, and did this CA sign it.

The transport (``TlsFiles.read``) and the account of a refused handshake
(``fleet.refusals``) use these too; the store imports the transport, and the rest of
this package imports the store's name checks, so this module imports nothing of
fleet's but its errors.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from fleet.errors import InvalidArgument

__all__ = ["issued_by", "parse_cert", "parse_key", "same_key"]


def parse_cert(pem: bytes, what: str) -> x509.Certificate:
    """The first certificate in ``pem``; InvalidArgument naming ``what`` if there is none."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise InvalidArgument(f"{what} is not a PEM certificate") from None


def parse_key(pem: bytes, what: str) -> PrivateKeyTypes:
    """The private key in ``pem``; InvalidArgument naming ``what`` unless it is one, in
    PEM and unencrypted (the daemons start unattended: nobody types a passphrase)."""
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{what} is not an unencrypted PEM private key") from None


def same_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key."""
    return _public_der(key.public_key()) == _public_der(cert.public_key())


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``cert`` (directly)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
