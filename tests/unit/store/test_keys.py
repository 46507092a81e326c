"""Tests of fleet.store.keys: every key sits under the prefix in its folder, numbers are
zero-padded so keys sort like numbers, ``parse`` inverts the builders and refuses every
key they do not make, and no name can escape its folder. Also ``decode_state``, which
sorts keys back into records."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import InvalidArgument
from fleet.spec import is_dns_label, load_documents
from fleet.store import DEFAULT_PREFIX, KeyLayout, check_host_id, check_name, keys
from fleet.store._etcd import KeyValue
from fleet.store.keys import (
    ALIVE,
    APPS,
    DENIED,
    EVENTS,
    FOLDERS,
    HOST_LABELS,
    HOSTS,
    JOBS,
    JOIN_TOKENS,
    LEADER,
    MAINTENANCE,
    POLICY,
    POOL,
    REGISTRY_MIRROR,
    REPLICAS,
    REPORTS,
    REVISIONS,
    ROLLOUTS,
    ROUTES,
    SECRETS,
    SECRETS_KEY,
    SERVING,
    STATUS,
    TOKENS,
    UPGRADE,
    EventName,
    Folder,
    MalformedKey,
    ParsedKey,
)
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
    assert layout.parse(layout.app("web")) == ParsedKey(APPS, ("web",))
    assert layout.parse(LAYOUT.app("web")) is None
    assert LAYOUT.parse(layout.app("web")) is None


@pytest.mark.parametrize("prefix", ["", "fleet/", "/fleet", "fleet", "/a//b/", "//"])
def test_invalid_prefix(prefix: str) -> None:
    """A prefix must look like /name/: anything else could overlap another's keys."""
    with pytest.raises(InvalidArgument, match="etcd prefix"):
        KeyLayout(prefix)


def test_parse_round_trips() -> None:
    """``parse`` gives back the folder and the values each builder was given."""
    assert LAYOUT.parse(LAYOUT.app("web")) == ParsedKey(APPS, ("web",))
    assert LAYOUT.parse(LAYOUT.revision("web", 12)) == ParsedKey(REVISIONS, ("web", 12))
    assert LAYOUT.parse(LAYOUT.replica("web", 3)) == ParsedKey(REPLICAS, ("web", 3))
    assert LAYOUT.parse(LAYOUT.host("h1.example.com")) == ParsedKey(HOSTS, ("h1.example.com",))
    assert LAYOUT.parse(LAYOUT.alive("h1")) == ParsedKey(ALIVE, ("h1",))
    assert LAYOUT.parse(LAYOUT.status("h1")) == ParsedKey(STATUS, ("h1",))


# Each named builder, the folder it builds in and the values it puts there.
BUILT: list[tuple[bytes, Folder, tuple[object, ...]]] = [
    (LAYOUT.app("web"), APPS, ("web",)),
    (LAYOUT.revision("web", 7), REVISIONS, ("web", 7)),
    (LAYOUT.replica("web", 3), REPLICAS, ("web", 3)),
    (LAYOUT.rollout("web"), ROLLOUTS, ("web",)),
    (LAYOUT.job("web"), JOBS, ("web",)),
    (LAYOUT.host("h1.example.com"), HOSTS, ("h1.example.com",)),
    (LAYOUT.host_labels("h1"), HOST_LABELS, ("h1",)),
    (LAYOUT.alive("h1"), ALIVE, ("h1",)),
    (LAYOUT.status("h1"), STATUS, ("h1",)),
    (LAYOUT.report("h1", "web", 3, 7), REPORTS, ("h1", "web", 3, 7)),
    (LAYOUT.secret("db-password"), SECRETS, ("db-password",)),
    (LAYOUT.secrets_key(), SECRETS_KEY, ()),
    (LAYOUT.pool(), POOL, ()),
    (LAYOUT.policy(), POLICY, ()),
    (LAYOUT.registry_mirror(), REGISTRY_MIRROR, ()),
    (LAYOUT.maintenance(), MAINTENANCE, ()),
    (LAYOUT.upgrade(), UPGRADE, ()),
    (LAYOUT.leader(), LEADER, ()),
    (LAYOUT.serving("cp1.example.com-7400"), SERVING, ("cp1.example.com-7400",)),
    (LAYOUT.token("ci-bot"), TOKENS, ("ci-bot",)),
    (LAYOUT.join_token("3f2a9c0d11ab"), JOIN_TOKENS, ("3f2a9c0d11ab",)),
    (LAYOUT.denied("3f2a"), DENIED, ("3f2a",)),
    (LAYOUT.route("http:web.example.com/api/v1"), ROUTES, ("http:web.example.com/api/v1",)),
    (LAYOUT.event(10**18, "cp-1", 5, 2048), EVENTS, (EventName(10**18, "cp-1", 5, 2048),)),
]


def test_every_folder_has_a_builder() -> None:
    assert {folder for _, folder, _ in BUILT} == set(FOLDERS)


@pytest.mark.parametrize(("key", "folder", "values"), BUILT, ids=lambda v: getattr(v, "name", None))
def test_each_builder_builds_in_its_folder(
    key: bytes, folder: Folder, values: tuple[object, ...]
) -> None:
    """A named builder makes the key the folder table makes of the same values."""
    assert key == LAYOUT.key(folder, *values)
    assert LAYOUT.parse(key) == ParsedKey(folder, values)


def test_the_layout_docstring_shows_every_folder() -> None:
    """The layout drawn in keys.py's docstring is the folder table's, line for line."""
    assert keys.__doc__ is not None
    # An entry starts 4 spaces in; what it holds goes on further in.
    lines = keys.__doc__.splitlines()
    drawn = [line.split()[0] for line in lines if line[:4] == "    " and line[4:5].isalpha()]
    assert drawn == [folder.shape for folder in FOLDERS]


def test_parse_of_folders_and_foreign_keys() -> None:
    """Keys outside the prefix are not fleet's; a folder is no key of its own."""
    assert LAYOUT.parse(b"/other/apps/web") is None
    assert LAYOUT.parse(b"/fleetx/apps/web") is None
    assert LAYOUT.parse(b"/fleet") is None
    for folder in (LAYOUT.apps(), LAYOUT.replicas("web"), LAYOUT.reports(), LAYOUT.events()):
        with pytest.raises(MalformedKey):
            LAYOUT.parse(folder)


@pytest.mark.parametrize(
    "key",
    [
        b"/fleet/",  # no folder
        b"/fleet/unknown/web",  # no such folder
        b"/fleet/apps/web/extra",  # too deep
        b"/fleet/apps",  # too shallow
        b"/fleet/replicas/web",
        b"/fleet/policy/x",  # a single key has no segments
        b"/fleet/apps/Web",  # not a DNS label
        b"/fleet/apps/..",
        b"/fleet/hosts/h1..x",  # not a host id
        b"/fleet/denied/3F2A",  # not a lowercase serial
        b"/fleet/replicas/web/first",  # not a number
        b"/fleet/replicas/web/",
        b"/fleet/replicas/web/3",  # not padded as the builder pads
        b"/fleet/replicas/web/0000003",  # padded more than the builder pads
        b"/fleet/replicas/web/+00003",
        b"/fleet/replicas/web/-00003",
        b"/fleet/replicas/web/00 003",
        b"/fleet/replicas/web/\xd9\xa3\xd9\xa3\xd9\xa3\xd9\xa3\xd9\xa3\xd9\xa3",  # arabic digits
        b"/fleet/revisions/web/10000000000000000000",  # 20 digits
        b"/fleet/reports/h1/web/000003",  # a report without its revision
        b"/fleet/events/00000000000000000001-h1",  # no batch number
        b"/fleet/events/1-h1-000001-000000001",  # time not padded
        b"/fleet/events/00000000000000000001-H1-000001-000000001",
        b"/fleet/\xff\xfe",  # not UTF-8
        b"/fleet/apps/w\xffb",
    ],
)
def test_keys_no_builder_makes_are_refused(key: bytes) -> None:
    with pytest.raises(MalformedKey, match="does not parse"):
        LAYOUT.parse(key)


def test_a_refusal_names_the_key_and_its_folder() -> None:
    with pytest.raises(MalformedKey) as refused:
        LAYOUT.parse(b"/fleet/replicas/web/first")
    assert refused.value.key == b"/fleet/replicas/web/first"
    assert refused.value.folder == "replicas"
    assert "/fleet/replicas/web/first" in str(refused.value)
    assert "invalid slot 'first'" in str(refused.value)


def test_numbers_out_of_range_make_no_key() -> None:
    """Only what parses back becomes a key: no negative slot or revision, nothing past
    int64 (what the proto carries, and an agent may report any of it); numbers wider
    than their padding are keys too."""
    with pytest.raises(InvalidArgument, match="invalid slot -1"):
        LAYOUT.replica("web", -1)
    with pytest.raises(InvalidArgument, match="invalid revision"):
        LAYOUT.report("h1", "web", 0, 2**63)
    for n in (10**18, 2**63 - 1):
        assert LAYOUT.parse(LAYOUT.revision("web", n)) == ParsedKey(REVISIONS, ("web", n))
        key = LAYOUT.report("h1", "web", 0, n)
        assert LAYOUT.parse(key) == ParsedKey(REPORTS, ("h1", "web", 0, n))
    assert LAYOUT.parse(LAYOUT.replica("web", 1_234_567)) == ParsedKey(REPLICAS, ("web", 1_234_567))


def test_parse_or_warn_warns_once_a_folder(caplog: pytest.LogCaptureFixture) -> None:
    """A key that does not parse is skipped with a warning that names it, once for its
    folder: a stray key would otherwise be logged at every event."""
    layout = KeyLayout()
    with caplog.at_level(logging.WARNING, logger="fleet.store.keys"):
        assert layout.parse_or_warn(b"/fleet/replicas/web/first") is None
        assert layout.parse_or_warn(b"/fleet/replicas/web/second") is None
        assert layout.parse_or_warn(b"/fleet/replicas/web/first") is None
        assert layout.parse_or_warn(b"/fleet/unknown/x") is None
        assert layout.parse_or_warn(b"/fleet/unknown/y") is None
        assert layout.parse_or_warn(LAYOUT.replica("web", 1)) == ParsedKey(REPLICAS, ("web", 1))
        assert layout.parse_or_warn(b"/other/apps/web") is None  # not fleet's: no warning
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert "'/fleet/replicas/web/first' does not parse" in warned[0]
    assert "'/fleet/unknown/x' does not parse" in warned[1]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_event_size() -> None:
    """The size an event key names; a key from before sizes (or one that does not
    parse) counts 128 KiB."""
    assert KeyLayout.event_size(LAYOUT.event(10**18, "h1", 5, 2048)) == 2048
    assert KeyLayout.event_size(b"/fleet/events/00000000000000000001-h-1-000001") == 128 * 1024
    assert LAYOUT.parse(b"/fleet/events/00000000000000000001-h-1-000001") == ParsedKey(
        EVENTS, (EventName(1, "h-1", 1, None),)
    )
    assert KeyLayout.event_size(b"/fleet/events/garbage-000000009") == 128 * 1024


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
    for key, folder, parts in [
        (LAYOUT.app(name), APPS, (name,)),
        (LAYOUT.replica(name, slot), REPLICAS, (name, slot)),
        (LAYOUT.revision(name, n), REVISIONS, (name, n)),
    ]:
        assert key.startswith(LAYOUT.root)
        assert LAYOUT.parse(key) == ParsedKey(folder, parts)


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
    for build, folder in [
        (LAYOUT.host, HOSTS),
        (LAYOUT.host_labels, HOST_LABELS),
        (LAYOUT.alive, ALIVE),
        (LAYOUT.status, STATUS),
    ]:
        key = build(host_id)
        assert key.startswith(LAYOUT.root)
        assert LAYOUT.parse(key) == ParsedKey(folder, (host_id,))


labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
host_ids = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,60}[a-z0-9])?", fullmatch=True).filter(
    lambda h: ".." not in h
)
# A value of each kind of segment, by the name the layout gives it.
SEGMENT_VALUES: dict[str, st.SearchStrategy[object]] = {
    "<app>": labels,
    "<name>": labels,
    "<id>": labels,
    "<host>": host_ids,
    "<seat>": host_ids,
    "<serial>": st.from_regex(r"[0-9a-f]{1,40}", fullmatch=True),
    "<route>": st.one_of(
        st.integers(1, 65535).map(lambda p: f"tcp:{p}"),
        st.tuples(
            st.sampled_from(["web", "*.example.com", "a.b-c.d"]),
            st.from_regex(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,20}", fullmatch=True),
        ).map(lambda hp: f"http:{hp[0]}{hp[1]}"),
    ),
    "<slot>": st.integers(0, 2**63 - 1),
    "<revision>": st.integers(0, 2**63 - 1),
    "<time>-<source>-<n>-<size>": st.builds(
        EventName,
        st.integers(0, 10**20 - 1),
        host_ids,
        st.integers(0, 999_999),
        st.one_of(st.none(), st.integers(0, 10**9 - 1)),
    ),
}


@st.composite
def folder_values(draw: st.DrawFn) -> tuple[Folder, tuple[object, ...]]:
    folder = draw(st.sampled_from(FOLDERS))
    return folder, tuple(draw(SEGMENT_VALUES[s.placeholder]) for s in folder.segments)


def test_every_segment_has_values_to_draw() -> None:
    assert {s.placeholder for f in FOLDERS for s in f.segments} == set(SEGMENT_VALUES)


@settings(max_examples=500, deadline=None)
@given(folder_values(), st.sampled_from(["/fleet/", "/prod/fleet/"]))
def test_property_parse_inverts_build(
    drawn: tuple[Folder, tuple[object, ...]], prefix: str
) -> None:
    """For every folder, parse(build(values)) == values, under any prefix."""
    folder, values = drawn
    layout = KeyLayout(prefix)
    key = layout.key(folder, *values)
    assert key.startswith(layout.root)
    assert layout.parse(key) == ParsedKey(folder, values)


# Text that looks like keys: folder names, separators, digits, and what may not be in one.
key_texts = st.lists(
    st.one_of(
        st.sampled_from([f.name for f in FOLDERS]),
        st.sampled_from(["/", "-", ".", "..", "0", "000001", "0000000001", "web", "h1", "A"]),
        st.text(max_size=4),
    ),
    max_size=8,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(key_texts)
def test_property_parse_takes_only_what_a_builder_makes(text: str) -> None:
    """Any key under the prefix is refused, or is the key its values build: parsing
    accepts no spelling of a key but the builders' own."""
    key = LAYOUT.root + text.encode()
    try:
        parsed = LAYOUT.parse(key)
    except MalformedKey:
        return
    assert parsed is not None
    assert LAYOUT.key(parsed.folder, *parsed.parts) == key


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
def test_decode_state_skips_keys_with_a_bad_number(
    key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A stray key whose slot is not a number is skipped, like an unreadable record,
    instead of making the whole state unreadable; and said so."""
    layout = KeyLayout()
    replica = ReplicaRecord(app="web", slot=0, revision=1, host="h1", resources=ResourceAmounts())
    live = LiveRecord(server="cp", connected_at="t")
    kvs = [kv(key, replica.dump(), 3), kv(LAYOUT.alive("h1"), live.dump(), 4)]
    with caplog.at_level(logging.WARNING, logger="fleet.store.keys"):
        state = decode_state(layout, kvs, 4)
    assert list(state.alive) == ["h1"]
    assert state.replicas == {}
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    message = caplog.records[0].getMessage()
    assert f"key {key.decode()!r} does not parse: invalid slot" in message
    assert "skipped" in message


def test_decode_state_warns_of_keys_that_do_not_parse_once_a_folder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Keys that do not parse are skipped with one warning for each folder they are
    in; keys of folders the state does not hold (the leader, events) quietly."""
    layout = KeyLayout()
    live = LiveRecord(server="cp", connected_at="t").dump()
    kvs = [
        kv(b"/fleet/alive/H1", live, 2),
        kv(b"/fleet/alive/h1/x", live, 3),
        kv(b"/fleet/unknown/web", live, 4),
        kv(LAYOUT.leader(), b'{"candidate": "cp"}', 5),
        kv(LAYOUT.event(1, "cp", 0, 2), b"[]", 6),
        kv(LAYOUT.alive("h1"), live, 7),
    ]
    with caplog.at_level(logging.WARNING):
        state = decode_state(layout, kvs, 7)
        decode_state(layout, kvs, 7)  # read again: nothing new to say
    assert list(state.alive) == ["h1"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert "'/fleet/alive/H1' does not parse: invalid host id 'H1'" in warned[0]
    assert "'/fleet/unknown/web' does not parse: no folder 'unknown'" in warned[1]
