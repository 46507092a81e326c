"""Secrets: values apps reference from ``env`` (``{secret: NAME}``), encrypted at rest.

The control plane holds one 256-bit key (``--secrets-key-file``; ``fleet up`` makes one
in its data dir). etcd only ever sees AES-256-GCM ciphertext, bound to the secret's
name so a ciphertext copied under another name does not decrypt. Plaintext exists only
in the control plane's memory while it builds a host's desired set, and on the wire to
the one agent (mutual TLS) whose host runs a replica that references it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fleet.errors import InvalidArgument

__all__ = ["MAX_SECRET_BYTES", "SecretBox", "ensure_key_file", "load_key_file"]

MAX_SECRET_BYTES = 64 * 1024
_KEY_BYTES = 32


def ensure_key_file(path: Path) -> Path:
    """Create a random key at ``path`` (mode 0600) unless one is there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(base64.b64encode(os.urandom(_KEY_BYTES)) + b"\n")
    return path


def load_key_file(path: Path) -> SecretBox:
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except OSError as error:
        raise InvalidArgument(f"cannot read the secrets key {path}: {error.strerror}") from None
    except ValueError:
        raise InvalidArgument(f"the secrets key {path} is not base64") from None
    if len(key) != _KEY_BYTES:
        raise InvalidArgument(f"the secrets key {path} must hold {_KEY_BYTES} random bytes")
    return SecretBox(key)


class SecretBox:
    """Encrypts and decrypts secret values with the control plane's key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        # Names the key in each record, so a record made with another key says so.
        self.key_id = hashlib.sha256(key).hexdigest()[:12]

    def seal(self, name: str, value: bytes) -> tuple[str, str]:
        """(nonce, ciphertext), base64, for the secret ``name``."""
        if len(value) > MAX_SECRET_BYTES:
            raise InvalidArgument(f"secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value, name.encode())
        return base64.b64encode(nonce).decode(), base64.b64encode(sealed).decode()

    def open(self, name: str, nonce: str, ciphertext: str) -> bytes:
        try:
            return self._aead.decrypt(
                base64.b64decode(nonce), base64.b64decode(ciphertext), name.encode()
            )
        except (InvalidTag, ValueError):
            raise InvalidArgument(
                f"secret {name!r} does not decrypt with this control plane's key"
            ) from None
