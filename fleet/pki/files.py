"""A PKI directory on disk: which file holds what, how they are written and read, and
how to make a missing one again.

A directory holds one PKI: ``ca.crt``, ``ca.key`` and ``<kind>-<name>.crt`` / ``.key``;
the directory is 0700 when created here, keys 0600, certificates 0644, each written
atomically. Keys are unencrypted PKCS#8 PEM because the daemons start unattended, with
no one to type a passphrase; the file permissions protect them. Errors name the file
and the ``fleet certs`` command that makes it again (``fix_hint``).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.errors import InvalidArgument
from fleet.pki.pem import parse_cert, parse_key, same_key
from fleet.pki.subjects import Kind, check_leaf_name, parse_kind

__all__ = [
    "CertPaths",
    "ensure_dir",
    "fix_hint",
    "load_ca",
    "parse_ec_key",
    "read",
    "refuse_overwrite",
    "write_file",
    "write_pair",
]

_CA_NAMES = ("ca.crt", "ca.key")


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
        checked = parse_kind(kind)
        stem = f"{checked}-{check_leaf_name(checked, name)}"
        return cls(Path(dir) / f"{stem}.crt", Path(dir) / f"{stem}.key")


# ------------------------------------------------------------------ writing


def ensure_dir(directory: Path) -> Path:
    """``directory``, created 0700 if missing (an existing one keeps its mode)."""
    if directory.is_dir():
        return directory
    try:
        directory.mkdir(parents=True, mode=0o700)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    except OSError as error:
        raise InvalidArgument(f"cannot create {directory}: {error.strerror}") from None
    return directory


def refuse_overwrite(paths: CertPaths, force: bool, message: str) -> None:
    if not force and (paths.cert.exists() or paths.key.exists()):
        raise InvalidArgument(message)


def write_pair(paths: CertPaths, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """Key first, then certificate: a certificate on disk always has its key beside it."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file(paths.key, key_pem, 0o600)
    write_file(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def write_file(path: Path, data: bytes, mode: int) -> None:
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


# ------------------------------------------------------------------ reading


def read(path: Path) -> bytes:
    """The bytes of ``path``; InvalidArgument saying why not, and how to fix it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"{path} does not exist; {fix_hint(path)}") from None
    except PermissionError:
        raise InvalidArgument(
            f"cannot read {path}: permission denied; run as the user that owns it "
            "(keys are readable by their owner only)"
        ) from None
    except OSError as error:
        raise InvalidArgument(f"cannot read {path}: {error.strerror}") from None


def parse_ec_key(pem: bytes, path: Path) -> ec.EllipticCurvePrivateKey:
    """The key in ``pem`` (read from ``path``): fleet makes EC keys only."""
    key = parse_key(pem, str(path))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{path} is not an EC private key")
    return key


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key in ``directory``, which must belong together."""
    paths = CertPaths.for_ca(directory)
    if not paths.cert.exists() and not paths.key.exists():
        raise InvalidArgument(
            f"no CA in {directory}; run `fleet certs init --dir {directory}` first"
        )
    cert = parse_cert(read(paths.cert), str(paths.cert))
    key = parse_ec_key(read(paths.key), paths.key)
    if not same_key(cert, key):
        raise InvalidArgument(f"{paths.key} is not the key of {paths.cert}")
    return cert, key


def fix_hint(path: Path, force: bool = False) -> str:
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
