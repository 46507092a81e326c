"""Tests of fleet.store.keys: every key sits under the prefix in its folder, numbers are
zero-padded so keys sort like numbers, ``parse`` inverts the builders, and no name can
escape its folder. Also ``decode_state``, which sorts keys back into records."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import InvalidArgument
from fleet.spec import is_dns_label, load_documents
from fleet.store import DEFAULT_PREFIX, KeyLayout, check_host_id, check_name
from fleet.store._etcd import KeyValue
from fleet.store.keys import ParsedKey
from fleet.store.records import (
    AppRecord,
    HostRecord,
    LiveRecord,
    ReplicaRecord,
    ResourceAmounts,
    RevisionRecord,
)
from fleet.store.state import decode_state

LAYOUT = KeyLayout()


def test_default_prefix() -> None:
    assert DEFAULT_PREFIX == "/fleet/"
    assert LAYOUT.prefix == "/fleet/"
    assert LAYOUT.root == b"/fleet/"


def test_keys_of_every_kind() -> None:
    """Each kind of record has its folder; slots and revisions are zero-padded."""
    assert LAYOUT.app("web") == b"/fleet/apps/web"
    assert LAYOUT.revision("web", 7) == b"/fleet/revisions/web/0000000007"
    assert LAYOUT.replica("web", 3) == b"/fleet/replicas/web/000003"
    assert LAYOUT.host("h1.example.com") == b"/fleet/hosts/h1.example.com"
    assert LAYOUT.host_labels("h1") == b"/fleet/host-labels/h1"
    assert LAYOUT.alive("h1") == b"/fleet/alive/h1"
    assert LAYOUT.status("h1") == b"/fleet/status/h1"


def test_folders_end_with_a_slash() -> None:
    """Folders end with "/" so a prefix read of app "web" never includes app "web2"."""
    assert LAYOUT.apps() == b"/fleet/apps/"
    assert LAYOUT.revisions("web") == b"/fleet/revisions/web/"
    assert LAYOUT.replicas() == b"/fleet/replicas/"
    assert LAYOUT.replicas("web") == b"/fleet/replicas/web/"
    assert not LAYOUT.replica("web2", 0).startswith(LAYOUT.replicas("web"))
    assert not LAYOUT.revision("web2", 1).startswith(LAYOUT.revisions("web"))


def test_padded_numbers_sort_like_numbers() -> None:
    """Byte order of slot and revision keys is numeric order, as etcd returns them."""
    slots = [0, 1, 2, 9, 10, 99, 100, 999_999]
    assert sorted(slots, key=lambda s: LAYOUT.replica("web", s)) == slots
    revisions = [1, 2, 10, 11, 1000, 9_999_999_999]
    assert sorted(revisions, key=lambda n: LAYOUT.revision("web", n)) == revisions


def test_custom_prefix() -> None:
    """Every key of another prefix lives under it, so fleets can share an etcd."""
    layout = KeyLayout("/prod/fleet/")
    assert layout.app("web") == b"/prod/fleet/apps/web"
    assert layout.replicas("web") == b"/prod/fleet/replicas/web/"
    assert layout.parse(layout.app("web")) == ParsedKey("apps", ("web",))
    assert layout.parse(LAYOUT.app("web")) is None
    assert LAYOUT.parse(layout.app("web")) is None


@pytest.mark.parametrize("prefix", ["", "fleet/", "/fleet", "fleet", "/a//b/", "//"])
def test_invalid_prefix(prefix: str) -> None:
    """A prefix must look like /name/: anything else could overlap another's keys."""
    with pytest.raises(InvalidArgument, match="etcd prefix"):
        KeyLayout(prefix)


def test_parse_round_trips() -> None:
    """``parse`` gives back the folder and the segments each builder put in."""
    assert LAYOUT.parse(LAYOUT.app("web")) == ParsedKey("apps", ("web",))
    assert LAYOUT.parse(LAYOUT.revision("web", 12)) == ParsedKey("revisions", ("web", "0000000012"))
    assert LAYOUT.parse(LAYOUT.replica("web", 3)) == ParsedKey("replicas", ("web", "000003"))
    assert LAYOUT.parse(LAYOUT.host("h1.example.com")) == ParsedKey("hosts", ("h1.example.com",))
    assert LAYOUT.parse(LAYOUT.alive("h1")) == ParsedKey("alive", ("h1",))
    assert LAYOUT.parse(LAYOUT.status("h1")) == ParsedKey("status", ("h1",))
    parsed = LAYOUT.parse(LAYOUT.replica("web", 42))
    assert parsed is not None and int(parsed.parts[1]) == 42


def test_parse_of_folders_and_foreign_keys() -> None:
    """A folder parses with no parts; keys outside the prefix are not fleet's."""
    assert LAYOUT.parse(LAYOUT.apps()) == ParsedKey("apps", ())
    assert LAYOUT.parse(LAYOUT.replicas("web")) == ParsedKey("replicas", ("web", ""))
    assert LAYOUT.parse(b"/other/apps/web") is None
    assert LAYOUT.parse(b"/fleetx/apps/web") is None
    assert LAYOUT.parse(b"/fleet") is None
    assert LAYOUT.parse(b"/fleet/\xff\xfe") == ParsedKey("\ufffd\ufffd", ())


HOSTILE_NAMES = [
    "",
    ".",
    "..",
    "a/b",
    "../apps",
    "web/",
    "/web",
    "a\x00b",
    "web\x00",
    "Web",
    "WEB",
    "web.1",
    "-web",
    "web-",
    "we b",
    "wéb",
    "a" * 64,
    "web\t",
    "\nweb",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_app_names_are_rejected(name: str) -> None:
    """No app name that is not a DNS label becomes a key, through any builder."""
    builders: list[Callable[[], object]] = [
        lambda: check_name(name),
        lambda: LAYOUT.app(name),
        lambda: LAYOUT.revision(name, 1),
        lambda: LAYOUT.revisions(name),
        lambda: LAYOUT.replica(name, 0),
        lambda: LAYOUT.replicas(name),
    ]
    for build in builders:
        with pytest.raises(InvalidArgument, match="invalid app name"):
            build()


@pytest.mark.parametrize("build", ["check_name", "app", "replica", "check_host_id", "host"])
def test_trailing_newline_is_rejected(build: str) -> None:
    """A trailing newline is no part of a DNS label or name (spec.DNS_LABEL uses \\Z for this)."""
    calls: dict[str, Callable[[], object]] = {
        "check_name": lambda: check_name("web\n"),
        "app": lambda: LAYOUT.app("web\n"),
        "replica": lambda: LAYOUT.replica("web\n", 0),
        "check_host_id": lambda: check_host_id("h1\n"),
        "host": lambda: LAYOUT.host("h1\n"),
    }
    with pytest.raises(InvalidArgument):
        calls[build]()


def test_name_limits() -> None:
    """63 characters is the longest label; one character is the shortest."""
    assert check_name("a" * 63) == "a" * 63
    assert check_name("a") == "a"
    assert check_name("0-9") == "0-9"
    assert check_name("my-app", "host label") == "my-app"
    with pytest.raises(InvalidArgument, match="invalid host label 'My'"):
        check_name("My", "host label")


@pytest.mark.parametrize(
    "host_id",
    ["", ".", "..", "a..b", "h1/x", "../h1", "h\x00", "H1", ".h1", "h1.", "-h1", "h_1", "a" * 254],
)
def test_hostile_host_ids_are_rejected(host_id: str) -> None:
    """Host ids are lowercase DNS names: no '/', no '..', no NUL, at most 253 characters."""
    for build in (check_host_id, LAYOUT.host, LAYOUT.alive, LAYOUT.status):
        with pytest.raises(InvalidArgument, match="invalid host id"):
            build(host_id)


@pytest.mark.parametrize("host_id", ["h1", "h1.example.com", "10.0.0.1", "a" * 253, "a-b.c-d"])
def test_valid_host_ids(host_id: str) -> None:
    assert check_host_id(host_id) == host_id


# ------------------------------------------------------------------ properties

names = st.one_of(
    st.from_regex(r"[a-z0-9-]{1,63}", fullmatch=True),
    st.text(st.sampled_from("ab0-./\x00A\n é"), max_size=70),
    st.text(max_size=70),
)


@settings(max_examples=300, deadline=None)
@given(names, st.integers(0, 999_999), st.integers(0, 9_999_999_999))
def test_property_accepted_names_stay_in_their_folder(name: str, slot: int, n: int) -> None:
    """Whatever ``check_name`` accepts makes keys under the prefix, in the right folder,
    that parse back to the same name, slot and revision."""
    try:
        check_name(name)
    except InvalidArgument:
        return
    assert "/" not in name and ".." not in name and "\x00" not in name
    for key, kind, parts in [
        (LAYOUT.app(name), "apps", (name,)),
        (LAYOUT.replica(name, slot), "replicas", (name, f"{slot:06d}")),
        (LAYOUT.revision(name, n), "revisions", (name, f"{n:010d}")),
    ]:
        assert key.startswith(LAYOUT.root)
        parsed = LAYOUT.parse(key)
        assert parsed == ParsedKey(kind, parts)
    replica = LAYOUT.parse(LAYOUT.replica(name, slot))
    assert replica is not None and int(replica.parts[1]) == slot


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.from_regex(r"[a-z0-9][-a-z0-9.]{0,30}[a-z0-9]", fullmatch=True),
        st.text(st.sampled_from("ab0-./\x00H\n"), max_size=40),
    )
)
def test_property_accepted_host_ids_stay_in_their_folder(host_id: str) -> None:
    """Whatever ``check_host_id`` accepts makes one segment under hosts/, host-labels/,
    alive/, status/."""
    try:
        check_host_id(host_id)
    except InvalidArgument:
        return
    assert "/" not in host_id and ".." not in host_id and "\x00" not in host_id
    for build, kind in [
        (LAYOUT.host, "hosts"),
        (LAYOUT.host_labels, "host-labels"),
        (LAYOUT.alive, "alive"),
        (LAYOUT.status, "status"),
    ]:
        key = build(host_id)
        assert key.startswith(LAYOUT.root)
        assert LAYOUT.parse(key) == ParsedKey(kind, (host_id,))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=70))
def test_property_check_name_agrees_with_the_spec(name: str) -> None:
    """An app name the spec accepts is one the key layout accepts, and (newlines aside,
    see test_trailing_newline_is_rejected) the other way round."""
    try:
        check_name(name)
        accepted = True
    except InvalidArgument:
        accepted = False
    if is_dns_label(name):
        assert accepted
    elif not name.endswith("\n"):
        assert not accepted


# ------------------------------------------------------------------ decode_state


def kv(key: bytes, value: bytes, mod: int) -> KeyValue:
    return KeyValue(key, value, mod)


def test_decode_state_sorts_keys_into_records() -> None:
    """Every folder's keys become typed records, indexed as the keys say, with their mod
    revisions; keys of other prefixes, folders or depths are skipped."""
    [spec] = load_documents("name: web\nimage: img\n")
    app = AppRecord(spec=spec, generation=2, revision=1, created_at="t", updated_at="t")
    revision = RevisionRecord(app="web", revision=1, template_hash="h", spec=spec, created_at="t")
    replica = ReplicaRecord(
        app="web", slot=3, revision=1, host="h1", resources=ResourceAmounts(cpu=0.5)
    )
    host = HostRecord(host_id="h1", capacity=ResourceAmounts(cpu=2), registered_at="t")
    live = LiveRecord(server="cp", connected_at="t")
    kvs = [
        kv(LAYOUT.app("web"), app.dump(), 5),
        kv(LAYOUT.revision("web", 1), revision.dump(), 6),
        kv(LAYOUT.replica("web", 3), replica.dump(), 7),
        kv(LAYOUT.host("h1"), host.dump(), 8),
        kv(LAYOUT.alive("h1"), live.dump(), 9),
        kv(b"/other/apps/web", app.dump(), 10),  # another prefix
        kv(b"/fleet/unknown/web", app.dump(), 11),  # an unknown folder
        kv(b"/fleet/apps/web/extra", app.dump(), 12),  # too deep
        kv(b"/fleet/replicas/web", replica.dump(), 13),  # too shallow
    ]
    state = decode_state(LAYOUT, kvs, revision=99)
    assert state.revision == 99
    assert {k: (v.value, v.mod_revision) for k, v in state.apps.items()} == {"web": (app, 5)}
    assert {k: (v.value, v.mod_revision) for k, v in state.revisions.items()} == {
        ("web", 1): (revision, 6)
    }
    assert {k: (v.value, v.mod_revision) for k, v in state.replicas.items()} == {
        ("web", 3): (replica, 7)
    }
    assert {k: v.mod_revision for k, v in state.hosts.items()} == {"h1": 8}
    assert {k: v.mod_revision for k, v in state.alive.items()} == {"h1": 9}
    assert state.status == {}
    assert state.replicas_of("web") == [replica]
    assert state.replicas_on("h1") == [replica]
    assert state.revision_spec("web", 1) == revision
    assert state.revision_spec("web", 2) is None


def test_decode_state_skips_unreadable_records(caplog: pytest.LogCaptureFixture) -> None:
    """A record this version cannot read is logged and skipped; the rest stays usable."""
    live = LiveRecord(server="cp", connected_at="t")
    kvs = [
        kv(LAYOUT.alive("h1"), b"{not json", 3),
        kv(LAYOUT.alive("h2"), b'{"server": "cp"}', 4),  # a field is missing
        kv(LAYOUT.alive("h3"), live.dump(), 5),
    ]
    with caplog.at_level(logging.ERROR, logger="fleet.store.state"):
        state = decode_state(LAYOUT, kvs, revision=5)
    assert list(state.alive) == ["h3"]
    assert (
        sum("skipping unreadable record /fleet/alive/h" in r.message for r in caplog.records) == 2
    )


@pytest.mark.parametrize("key", [b"/fleet/replicas/web/first", b"/fleet/replicas/web/"])
def test_decode_state_skips_keys_with_a_bad_number(key: bytes) -> None:
    """A stray key whose slot is not a number is skipped, like an unreadable record,
    instead of making the whole state unreadable."""
    replica = ReplicaRecord(app="web", slot=0, revision=1, host="h1", resources=ResourceAmounts())
    live = LiveRecord(server="cp", connected_at="t")
    kvs = [kv(key, replica.dump(), 3), kv(LAYOUT.alive("h1"), live.dump(), 4)]
    state = decode_state(LAYOUT, kvs, 4)
    assert list(state.alive) == ["h1"]
    assert state.replicas == {}
