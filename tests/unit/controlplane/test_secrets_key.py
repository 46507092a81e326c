"""Which key a pool uses, and why a replica's key may not serve it (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.controlplane.secretskey import KeyFile, PoolKey, _write_first_key, pool_key, refusal
from fleet.errors import FailedPrecondition
from fleet.secrets import SecretBox
from fleet.store.records import SecretsKeyRecord

BOX = SecretBox(b"k" * 32)
OTHER = SecretBox(b"o" * 32)
RECORD = SecretsKeyRecord(key_id=BOX.key_id, recorded_by="cp1", recorded_at="2026-12-01T10:00:00Z")


def test_the_recorded_id_wins_then_that_of_secrets_stored_before_ids_were_recorded() -> None:
    assert pool_key(RECORD, {"a": OTHER.key_id}) == PoolKey(
        BOX.key_id, "recorded by cp1 at 2026-12-01T10:00:00Z"
    )
    assert pool_key(None, {"b": "x", "a": OTHER.key_id}) == PoolKey(
        OTHER.key_id, "that of the stored secret 'a'", recorded=False
    )
    assert pool_key(None, {}) is None  # a new pool: the first replica's key becomes its


def test_only_the_pools_own_key_from_a_file_may_serve() -> None:
    pool = pool_key(RECORD, {})
    assert pool is not None
    path = Path("/etc/fleet/secrets.key")
    assert refusal(KeyFile(path, BOX), pool) is None
    differs = refusal(KeyFile(path, OTHER), pool)
    assert differs is not None and f"(key id {OTHER.key_id}) is not this pool's" in differs
    made = refusal(KeyFile(path, BOX, unwritten=b"k" * 32), pool)  # even were it the same
    assert made is not None and f"{path} does not exist, and this pool has one" in made
    missing = refusal(None, pool)
    assert missing is not None and "started without one (--secrets-key-file)" in missing


def test_a_first_key_that_cannot_be_written_says_how_to_make_it(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(FailedPrecondition, match="make the pool's key once, with `fleet certs"):
        _write_first_key(not_a_dir / "secrets.key", b"k" * 32)
