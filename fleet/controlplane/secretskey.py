"""The secrets key every control-plane replica shares, checked when a replica starts.

A replica seals the secrets it is given with its key and opens every secret it sends
to a host, whichever replica sealed it: all replicas must hold the same key. etcd keeps
the key's id (``secrets-key``: ``SecretBox.key_id``, a 48-bit digest of the key that
each secret records too; never the key). The first replica records it; a replica
whose key has another id, or that has no key while the pool has one, refuses to start
and says how to fix it. Only the pool's first replica (or ``fleet up``) makes a key
when its file is missing: any other would make a key of its own and split the pool.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleet._time import now_iso
from fleet.errors import FailedPrecondition
from fleet.secrets import SecretBox, load_key_file, new_key, write_key_file
from fleet.store import Store
from fleet.store.records import SecretsKeyRecord

__all__ = ["KeyFile", "PoolKey", "open_key", "pool_key", "settle_key"]

log = logging.getLogger(__name__)

_COPY = "copy the key file from a running control-plane replica (its --secrets-key-file)"


@dataclass(frozen=True)
class KeyFile:
    """This replica's key: read from ``path``, or (``unwritten``) made now because
    ``path`` has none, to be written only if the pool has no key yet."""

    path: Path
    box: SecretBox
    unwritten: bytes | None = None


@dataclass(frozen=True)
class PoolKey:
    """The key id the pool uses, where that was learnt (in words), and whether etcd
    records it (else it is the id stored secrets carry)."""

    key_id: str
    source: str
    recorded: bool = True


def open_key(path: Path | None) -> KeyFile | None:
    """The key at ``path`` (a bad file is refused now, before etcd is asked anything),
    or a new one if there is none yet; None without a path."""
    if path is None:
        return None
    if path.exists():
        return KeyFile(path, load_key_file(path))
    key = new_key()
    return KeyFile(path, SecretBox(key), unwritten=key)


def pool_key(recorded: SecretsKeyRecord | None, sealed: Mapping[str, str]) -> PoolKey | None:
    """The pool's key id (pure): the recorded one, else that of the secrets stored
    before ids were recorded (``sealed``: secret name -> key id), else None."""
    if recorded is not None:
        return PoolKey(
            recorded.key_id, f"recorded by {recorded.recorded_by} at {recorded.recorded_at}"
        )
    if sealed:
        name = min(sealed)
        return PoolKey(sealed[name], f"that of the stored secret {name!r}", recorded=False)
    return None


def refusal(key: KeyFile | None, pool: PoolKey) -> str | None:
    """Why a replica with ``key`` may not serve a pool whose key is ``pool`` (pure);
    None if it may."""
    theirs = f"key id {pool.key_id}, {pool.source}"
    if key is None:
        return (
            f"this pool's secrets are sealed with a key ({theirs}) and this control plane "
            "was started without one (--secrets-key-file), so it could not open them for "
            f"the hosts it serves: {_COPY} to this machine, mode 0600, and start it with "
            "--secrets-key-file PATH"
        )
    if key.unwritten is not None:
        return (
            f"the secrets key {key.path} does not exist, and this pool has one already "
            f"({theirs}); a replica must not make a key of its own: {_COPY} to "
            f"{key.path}, mode 0600, and start again"
        )
    if key.box.key_id != pool.key_id:
        return (
            f"the secrets key {key.path} (key id {key.box.key_id}) is not this pool's "
            f"({theirs}); every control-plane replica must hold the same key, or none "
            f"could open what another sealed: {_COPY} over {key.path}, mode 0600, and "
            "start again"
        )
    return None


async def settle_key(
    store: Store, key: KeyFile | None, sealed: Mapping[str, str], server_id: str
) -> None:
    """Check ``key`` against the pool's (FailedPrecondition, saying how to fix it, if
    it is not), and record it as the pool's if the pool has none yet; a new key is
    written to its file first, and removed again if another replica recorded its own
    meanwhile."""
    pool = pool_key(await store.get_secrets_key(), sealed)
    if pool is not None:
        problem = refusal(key, pool)
        if problem is not None:
            raise FailedPrecondition(problem)
    if key is None or (pool is not None and pool.recorded):
        return
    if key.unwritten is not None:
        _write_first_key(key.path, key.unwritten)
    record = SecretsKeyRecord(key_id=key.box.key_id, recorded_by=server_id, recorded_at=now_iso())
    if await store.record_secrets_key(record):
        log.info("recorded the pool's secrets key id %s (%s)", key.box.key_id, key.path)
        return
    # Another replica of a new pool recorded its key between our read and our write.
    if key.unwritten is not None:
        key.path.unlink(missing_ok=True)
    pool = pool_key(await store.get_secrets_key(), sealed)
    problem = refusal(key, pool) if pool is not None else None
    if problem is not None:
        raise FailedPrecondition(problem)


def _write_first_key(path: Path, key: bytes) -> None:
    """Write the pool's first key; where it cannot be written (a read-only unit), say
    how to make it instead."""
    try:
        write_key_file(path, key)
    except OSError as error:
        raise FailedPrecondition(
            f"this pool has no secrets key yet and {path} does not exist, and it cannot be "
            f"made here ({error.strerror}): make the pool's key once, with `fleet certs "
            "bundle server NAME` (it is in every control plane's bundle, deploy/ha) or "
            f"`(umask 077; head -c 32 /dev/urandom | base64 > {path})`, and copy it to "
            "every control-plane replica"
        ) from None
