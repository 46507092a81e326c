"""Secrets: values apps reference from ``env`` (``{secret: NAME}``), encrypted at rest,
each usable only by the apps its scope names.

The control plane holds one 256-bit key (``--secrets-key-file``; the pool's first
replica, or ``fleet up``, makes it; every other replica gets a copy, which its start
checks: ``fleet.controlplane.secretskey``). etcd only ever sees AES-256-GCM ciphertext,
bound to the secret's name so a ciphertext copied under another name does not decrypt.
Plaintext exists only in the control plane's memory while it builds a host's desired
set, and on the wire to the one agent (mutual TLS) whose host runs a replica that
references it.

An admin gives every secret a scope (``fleet secrets set NAME --apps a,b`` or
``--all-apps``; ``fleet secrets scope`` changes it). An app outside it is refused at
apply (``scope_refusals``), and its replicas are held, never sent the value, when a
host's desired set is built (``withheld``): a scope narrowed after an apply takes
effect for every container made after it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fleet._keyfiles import read_private
from fleet.errors import InvalidArgument
from fleet.spec import AppSpec, SecretRef
from fleet.store import ClusterState, check_name
from fleet.store.records import SecretRecord, SecretScope

__all__ = [
    "MAX_SCOPE_APPS",
    "MAX_SECRET_BYTES",
    "SecretBox",
    "ensure_key_file",
    "load_key_file",
    "new_key",
    "out_of_scope",
    "registry_refs",
    "scope_command",
    "scope_from",
    "scope_refusals",
    "scope_words",
    "withheld",
    "write_key_file",
]

log = logging.getLogger(__name__)

MAX_SECRET_BYTES = 64 * 1024
MAX_SCOPE_APPS = 1000  # beyond this, a scope is --all-apps in all but name
_KEY_BYTES = 32
_WHAT = "the secrets key"


def new_key() -> bytes:
    """A new random key."""
    return os.urandom(_KEY_BYTES)


def write_key_file(path: Path, key: bytes) -> None:
    """Write ``key`` to ``path`` (mode 0600), which must not exist yet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(base64.b64encode(key) + b"\n")
    # Every control-plane replica must hold this same key: one that made its own could
    # not open the secrets the others stored, nor they its.
    log.warning(
        "made a new secrets key %s; a control plane of several replicas needs this same "
        "file on each of them",
        path,
    )


def ensure_key_file(path: Path) -> Path:
    """Create a random key at ``path`` (mode 0600) unless one is there; one that is
    there is loaded once, so a bad one (unreadable, or open to others) is named now."""
    if path.exists():
        load_key_file(path)
        return path
    write_key_file(path, new_key())
    return path


def load_key_file(path: Path) -> SecretBox:
    """The key in ``path``; InvalidArgument if it is unreadable, malformed, or open to
    anyone but its owner."""
    try:
        key = base64.b64decode(read_private(path, _WHAT).strip(), validate=True)
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
        self._key = key
        # Names the key in each record, so a record made with another key says so.
        self.key_id = hashlib.sha256(key).hexdigest()[:12]

    def derive(self, info: bytes, length: int = 32) -> bytes:
        """A key for another purpose (HKDF-SHA256 with ``info`` naming it), the same on
        every replica that holds this key, from which nothing learns this key back."""
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(
            self._key
        )

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


# ---------------------------------------------------------------------- scopes


def scope_from(apps: Iterable[str], all_apps: bool) -> SecretScope:
    """The scope an admin asked for, checked: app names (DNS labels), or every app."""
    names = sorted({check_name(app, "app name") for app in apps})
    if all_apps and names:
        raise InvalidArgument("a secret's scope is --apps or --all-apps, not both")
    if not all_apps and not names:
        raise InvalidArgument(
            "say which apps may use the secret: --apps APP[,APP...], or --all-apps"
        )
    if len(names) > MAX_SCOPE_APPS:
        raise InvalidArgument(
            f"a secret's scope names at most {MAX_SCOPE_APPS} apps; use --all-apps"
        )
    return SecretScope(apps=names, all_apps=all_apps)


def scope_words(scope: SecretScope | None) -> str:
    """Who may use a secret, in words: ``every app`` or ``app a, b``."""
    if scope is None or scope.all_apps:
        return "every app"
    return f"app {', '.join(scope.apps)}"


def scope_command(record: SecretRecord, app: str) -> str:
    """The command that lets ``app`` use ``record`` as well (a scope is replaced whole,
    so it repeats the apps already in it)."""
    apps = sorted({*(record.scope.apps if record.scope else []), app})
    return f"fleet secrets scope {record.name} --apps {','.join(apps)}"


def out_of_scope(spec: AppSpec, state: ClusterState) -> list[tuple[str, SecretRecord]]:
    """(env variable, secret) of every env entry of ``spec`` that references a stored
    secret whose scope leaves ``spec``'s app out, in the env's order."""
    found = []
    for variable, value in spec.env.items():
        if isinstance(value, SecretRef):
            stored = state.secrets.get(value.secret)
            if stored is not None and not stored.value.allows(spec.name):
                found.append((variable, stored.value))
    return found


def registry_refs(spec: AppSpec, state: ClusterState) -> list[tuple[str, SecretRecord]]:
    """(env variable, secret) of every env entry of ``spec`` that names a registry's
    credentials (``fleet.registries``): a password for pulls, never an env value."""
    found = []
    for variable, value in spec.env.items():
        if isinstance(value, SecretRef):
            stored = state.secrets.get(value.secret)
            if stored is not None and stored.value.registry:
                found.append((variable, stored.value))
    return found


def _registry_words(record: SecretRecord) -> str:
    return (
        f"secret {record.name!r} holds the credentials of registry {record.registry} "
        "(fleet registry login): they are used for pulls only, never as an env value; "
        "store the value for env with `fleet secrets set NAME` under another name"
    )


def scope_refusals(spec: AppSpec, state: ClusterState) -> list[tuple[str, str]]:
    """Every env field of ``spec`` whose secret may not be used by its app, as (field
    path, message): the control plane's check at apply, beside the policy's
    (``fleet.policy.refused_fields``); the client puts each at its line."""
    registry = [
        (f"env.{variable}", f"app {spec.name!r}: {_registry_words(record)}")
        for variable, record in registry_refs(spec, state)
    ]
    return registry + [
        (
            f"env.{variable}",
            f"app {spec.name!r}: secret {record.name!r} is not for this app (its scope: "
            f"{scope_words(record.scope)}); an admin can allow it with "
            f"`{scope_command(record, spec.name)}`",
        )
        for variable, record in out_of_scope(spec, state)
    ]


def withheld(spec: AppSpec, state: ClusterState) -> str | None:
    """Why ``spec``'s replicas may not have their secrets now (a secret's scope leaves
    their app out), or None. Checked whenever a host's desired set is built, so a scope
    narrowed after the apply holds every replica made after it."""
    for _, record in registry_refs(spec, state):
        return _registry_words(record)
    refused = out_of_scope(spec, state)
    if not refused:
        return None
    names = ", ".join(sorted({record.name for _, record in refused}))
    _, first = refused[0]
    return (
        f"secret {names} is not for app {spec.name!r} (its scope: {scope_words(first.scope)}); "
        f"an admin can allow it with `{scope_command(first, spec.name)}`"
    )
