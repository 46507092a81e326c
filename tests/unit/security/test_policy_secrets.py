"""The container policy check and the secret box: pure, fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import InvalidArgument
from fleet.policy import Policy, Privileges, violations
from fleet.secrets import SecretBox, ensure_key_file, load_key_file
from fleet.spec import load_documents


def test_the_default_policy_allows_nothing_beyond_an_ordinary_container() -> None:
    asked = Privileges(True, True, True, ("NET_ADMIN",), ("/etc",))
    assert violations(asked, Policy()) == [
        "privileged",
        "host network",
        "host PID namespace",
        "capability NET_ADMIN",
        "bind mount of /etc",
    ]
    assert violations(Privileges(), Policy()) == []


def test_bind_mount_prefixes_match_whole_path_segments() -> None:
    policy = Policy(allow_bind_mounts=["/var/log"])
    assert violations(Privileges(bind_mounts=("/var/log/app",)), policy) == []
    assert violations(Privileges(bind_mounts=("/var/log",)), policy) == []
    assert violations(Privileges(bind_mounts=("/var/logs",)), policy) == ["bind mount of /var/logs"]


def test_all_allows_any_capability() -> None:
    assert violations(Privileges(cap_add=("SYS_ADMIN",)), Policy(allow_capabilities=["ALL"])) == []


def test_privileges_of_a_spec() -> None:
    [spec] = load_documents(
        "name: a\nimage: x\nhost_pid: true\ncap_add: [cap_net_raw]\n"
        "volumes: ['data:/d', '/srv:/s:ro']\n",
        "a.yaml",
    )
    assert Privileges.of_spec(spec) == Privileges(False, False, True, ("NET_RAW",), ("/srv",))


@given(st.binary(max_size=2048), st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))
def test_sealed_secrets_open_only_under_their_own_name(value: bytes, name: str) -> None:
    box = SecretBox(b"k" * 32)
    nonce, sealed = box.seal(name, value)
    assert box.open(name, nonce, sealed) == value
    with pytest.raises(InvalidArgument, match="does not decrypt"):
        box.open(name + "x", nonce, sealed)
    with pytest.raises(InvalidArgument, match="does not decrypt"):
        SecretBox(b"j" * 32).open(name, nonce, sealed)


def test_key_files_are_private_and_made_once(tmp_path: Path) -> None:
    path = ensure_key_file(tmp_path / "keys" / "secrets.key")
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_bytes()
    ensure_key_file(path)
    assert path.read_bytes() == before
    assert load_key_file(path).key_id
    (tmp_path / "short.key").write_bytes(b"c2hvcnQ=\n")
    (tmp_path / "short.key").chmod(0o600)  # a key open to others is refused before it is read
    with pytest.raises(InvalidArgument, match="32 random bytes"):
        load_key_file(tmp_path / "short.key")
