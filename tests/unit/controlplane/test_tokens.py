"""Tests of bearer tokens (fleet.controlplane.auth): a new token stands for its name and
role, and nothing else does."""

from __future__ import annotations

import pytest

from fleet.controlplane.auth import new_token, token_identity
from fleet.errors import InvalidArgument
from fleet.pki.subjects import Kind, Role
from fleet.store import Versioned


def test_a_new_token_stands_for_its_name_and_role() -> None:
    record, token = new_token("ci", "deployer", "t0")
    assert token.startswith(f"fleet_{record.id}_")
    assert token.split("_", 2)[2] not in record.model_dump_json()  # only its hash is kept
    identity = token_identity({record.id: Versioned(record, 1)}, token)
    assert identity is not None
    assert (identity.kind, identity.name, identity.role) == (Kind.client, "token:ci", Role.deployer)


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "fleet",
        "fleet_",
        "fleet__secret",
        "other_{id}_{secret}",
        "fleet_{id}_wrong",
        "fleet_nope_{secret}",
    ],
)
def test_anything_else_stands_for_no_one(presented: str) -> None:
    record, token = new_token("ci", "admin", "t0")
    secret = token.split("_", 2)[2]
    tokens = {record.id: Versioned(record, 1)}
    assert token_identity(tokens, presented.format(id=record.id, secret=secret)) is None


def test_a_deleted_token_stands_for_no_one() -> None:
    _, token = new_token("ci", "viewer", "t0")
    assert token_identity({}, token) is None


def test_a_token_needs_a_known_role() -> None:
    with pytest.raises(InvalidArgument, match="role 'root': use admin, deployer or viewer"):
        new_token("ci", "root", "t0")
