"""Tests of fleet.store.live: ``LiveState``, changed key by key, answers as
``decode_state`` of the same keys does; a snapshot never sees a later change (its
indexes are shared copy-on-write); ``Changes`` moves exactly the parts a key belongs to;
an unreadable value keeps the last readable record."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.spec import AppSpec, load_documents
from fleet.store import ClusterState, KeyLayout
from fleet.store._etcd import KeyValue
from fleet.store.live import LiveState
from fleet.store.records import (
    AppRecord,
    ContainerReport,
    HostLabelsRecord,
    LiveRecord,
    MaintenanceRecord,
    ReplicaRecord,
    ReplicaTarget,
    ResourceAmounts,
    RevisionRecord,
    SecretRecord,
)
from fleet.store.reportindex import AppReportIndex
from fleet.store.state import Changes, decode_state
from tests.unit.store.builders import LAYOUT, host_record, status_record

# The universe the property draws from: small, so that keys are put, changed and
# deleted again often.
APPS = ("web", "api")
HOSTS = ("h1", "h2", "h3")
SLOTS = (0, 1, 2)
REVISIONS = (1, 2)
# Every app and host a test asks about (h4 only appears in the hand-made states).
ASKED_APPS = ("web", "api", "db")
ASKED_HOSTS = ("h1", "h2", "h3", "h4")
TABLES = ("apps", "revisions", "replicas", "hosts", "alive", "status", "secrets")


# ---------------------------------------------------------------- records


@cache
def spec(app: str) -> AppSpec:
    [parsed] = load_documents(f"name: {app}\nimage: img:v1\n", "app.yaml")
    return parsed


def app_record(app: str, generation: int = 1) -> AppRecord:
    return AppRecord(
        spec=spec(app), generation=generation, revision=1, created_at="t0", updated_at="t0"
    )


def revision_record(app: str, revision: int) -> RevisionRecord:
    return RevisionRecord(
        app=app,
        revision=revision,
        template_hash=spec(app).template_hash(),
        spec=spec(app),
        created_at="t0",
    )


def replica(
    app: str, slot: int, host: str, *, revision: int = 1, next_host: str | None = None
) -> ReplicaRecord:
    resources = ResourceAmounts(cpu=0.5, memory=1 << 20)
    target = None
    if next_host is not None:
        target = ReplicaTarget(revision=revision + 1, host=next_host, resources=resources)
    return ReplicaRecord(
        app=app, slot=slot, revision=revision, host=host, resources=resources, next=target
    )


def admin_labels(host: str, **labels: str) -> HostLabelsRecord:
    return HostLabelsRecord(host_id=host, labels=labels, updated_at="t0")


def live_record(server: str = "cp1") -> LiveRecord:
    return LiveRecord(server=server, connected_at="t0")


def container(app: str, slot: int, revision: int, state: str = "running") -> ContainerReport:
    return ContainerReport(
        app=app,
        slot=slot,
        revision=revision,
        spec_hash="abc",
        container_id=f"{app}-{slot}-{revision}",
        name=f"fleet-{app}-{slot}",
        state=state,
    )


def secret(name: str, version: int = 1) -> SecretRecord:
    return SecretRecord(
        name=name,
        key_id="k1",
        nonce="n",
        ciphertext="c",
        version=version,
        created_at="t0",
        updated_at="t0",
    )


# ---------------------------------------------------------------- what a state answers


def answers(state: ClusterState) -> dict[str, Any]:
    """Everything a consumer can ask of ``state``, copied, so that a later change to a
    shared table or index cannot reach what was recorded."""
    found: dict[str, Any] = {name: dict(getattr(state, name)) for name in TABLES}
    found["revision"] = state.revision
    found["maintenance"] = state.maintenance
    found["hosts_with_replicas"] = set(state.hosts_with_replicas())
    for app in ASKED_APPS:
        found[f"replicas_of({app})"] = state.replicas_of(app)
        found[f"replica_count({app})"] = state.replica_count(app)
        found[f"replica_slots({app})"] = dict(state.replica_slots(app))
        found[f"reports_of({app})"] = dict(state.reports_of(app))
    for host in ASKED_HOSTS:
        found[f"replicas_on({host})"] = state.replicas_on(host)
        found[f"host_replicas({host})"] = dict(state.host_replicas(host))
        found[f"containers_on({host})"] = state.containers_on(host)
    return found


def assert_same_answers(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """One question at a time, so a failure names the question."""
    assert got.keys() == expected.keys()
    for question in expected:
        assert got[question] == expected[question], question


def reported_containers(kvs: dict[bytes, KeyValue], host: str) -> list[ContainerReport]:
    """The containers of ``host``'s report keys, by (app, slot, revision): worked out
    from the keys, independently of the code under test."""
    prefix = LAYOUT.reports(host)
    found = [
        ContainerReport.model_validate_json(kv.value)
        for k, kv in kvs.items()
        if k.startswith(prefix)
    ]
    return sorted(found, key=lambda c: (c.app, c.slot, c.revision))


# ---------------------------------------------------------------- random changes

apps = st.sampled_from(APPS)
hosts = st.sampled_from(HOSTS)
slots = st.sampled_from(SLOTS)
revisions = st.sampled_from(REVISIONS)

# (key, value) of every kind the state holds, and of events, which it does not.
key_values = st.one_of(
    st.builds(lambda a, g: (LAYOUT.app(a), app_record(a, g).dump()), apps, st.integers(1, 3)),
    st.builds(lambda a, n: (LAYOUT.revision(a, n), revision_record(a, n).dump()), apps, revisions),
    # Replicas twice as likely: their indexes are what copy-on-write is about.
    *[
        st.builds(
            lambda a, s, h, n, nxt: (
                LAYOUT.replica(a, s),
                replica(a, s, h, revision=n, next_host=nxt).dump(),
            ),
            apps,
            slots,
            hosts,
            revisions,
            st.none() | hosts,
        )
    ]
    * 2,
    st.builds(
        lambda h, c: (LAYOUT.host(h), host_record(h, c).dump()), hosts, st.sampled_from([2.0, 4.0])
    ),
    st.builds(
        lambda h, s: (LAYOUT.alive(h), live_record(s).dump()),
        hosts,
        st.sampled_from(["cp1", "cp2"]),
    ),
    st.builds(
        lambda h, c: (LAYOUT.status(h), status_record(h, c).dump()),
        hosts,
        st.sampled_from([0.0, 1.5]),
    ),
    *[
        st.builds(
            lambda h, a, s, n, state: (LAYOUT.report(h, a, s, n), container(a, s, n, state).dump()),
            hosts,
            apps,
            slots,
            revisions,
            st.sampled_from(["running", "exited"]),
        )
    ]
    * 2,
    st.builds(
        lambda v: (LAYOUT.secret("db-password"), secret("db-password", v).dump()), st.integers(1, 2)
    ),
    st.builds(lambda m: (LAYOUT.maintenance(), MaintenanceRecord(max=m).dump()), st.integers(1, 2)),
    st.builds(lambda n: (LAYOUT.event(n, "h1", 0), b"not a record"), st.integers(1, 3)),
)

# An op is a put (key, value), a delete (key, None) or None: take a snapshot.
Op = tuple[bytes, bytes | None] | None
_KINDS = ("put", "put", "delete", "snapshot")  # one_of would flatten key_values' branches
op_st = st.tuples(st.sampled_from(_KINDS), key_values).map(
    lambda op: None if op[0] == "snapshot" else (op[1][0], op[1][1] if op[0] == "put" else None)
)
# Lengths drawn first: left to itself, hypothesis keeps lists to a few elements.
ops_st = st.integers(5, 60).flatmap(lambda n: st.lists(op_st, min_size=n, max_size=n))


def run(
    ops: list[Op],
) -> tuple[LiveState, dict[bytes, KeyValue], list[tuple[ClusterState, dict[bytes, KeyValue]]]]:
    """Apply ``ops`` with rising mod revisions; return the state, the final keys and
    each snapshot taken with the keys there were when it was taken."""
    live = LiveState(LAYOUT)
    kvs: dict[bytes, KeyValue] = {}
    taken: list[tuple[ClusterState, dict[bytes, KeyValue]]] = []
    revision = 0
    for op in ops:
        if op is None:
            taken.append((live.snapshot(), dict(kvs)))
            continue
        key, value = op
        revision += 1
        live.apply(key, value, revision)
        if value is None:
            kvs.pop(key, None)
        else:
            kvs[key] = KeyValue(key, value, revision)
    return live, kvs, taken


@settings(max_examples=120, deadline=None)
@given(ops_st)
def test_live_state_answers_as_decode_state_of_the_same_keys(ops: list[Op]) -> None:
    """Every snapshot, and the last, equals a fresh decode of the keys at its revision:
    tables, mod revisions, status with its containers put back, and every index."""
    live, kvs, taken = run(ops)
    last = live.snapshot()
    assert last.revision == sum(op is not None for op in ops)
    for state, keys in [*taken, (last, kvs)]:
        expected = decode_state(LAYOUT, keys.values(), state.revision)
        assert_same_answers(answers(state), answers(expected))
    for host, status in last.status.items():
        assert status.value.containers == reported_containers(kvs, host)


def test_reports_of_a_host_without_status_record() -> None:
    """The informer's state and a prefix read at the same revision disagree while a
    host's report keys exist without its status record (an agent's first report of more
    than a transaction takes writes them in earlier transactions than the record)."""
    report = LAYOUT.report("h1", "web", 0, 1)
    kvs = [KeyValue(report, container("web", 0, 1).dump(), 1)]
    live = LiveState(LAYOUT)
    live.apply(report, kvs[0].value, 1)
    state = live.snapshot()
    assert "h1" not in state.status
    assert dict(state.reports_of("web")) == dict(decode_state(LAYOUT, kvs, 1).reports_of("web"))


@settings(max_examples=120, deadline=None)
@given(ops_st)
def test_snapshots_never_see_a_later_change(ops: list[Op]) -> None:
    """Copy-on-write: what a snapshot answered when it was taken it still answers after
    every later change, and while later snapshots are asked the same questions."""
    live = LiveState(LAYOUT)
    recorded: list[tuple[ClusterState, dict[str, Any]]] = []
    for revision, op in enumerate(ops, 1):  # a gap at each snapshot: revisions need only rise
        if op is None:
            state = live.snapshot()
            recorded.append((state, answers(state)))
            for earlier, then in recorded:  # asked again between changes, too
                assert_same_answers(answers(earlier), then)
        else:
            live.apply(op[0], op[1], revision)
    answers(live.snapshot())
    for earlier, then in recorded:
        assert_same_answers(answers(earlier), then)


# ---------------------------------------------------------------- a hand-made state


def seeded(layout: KeyLayout = LAYOUT) -> LiveState:
    """Apps web and api; web/0 on h1, web/1 on h2 moving to h3, api/0 on h4; hosts
    h1-h4 registered; h1 reports web/0."""
    live = LiveState(layout)
    puts: list[tuple[bytes, Any]] = [
        (LAYOUT.app("web"), app_record("web")),
        (LAYOUT.app("api"), app_record("api")),
        (LAYOUT.revision("web", 1), revision_record("web", 1)),
        (LAYOUT.revision("api", 1), revision_record("api", 1)),
        *[(LAYOUT.host(h), host_record(h)) for h in ASKED_HOSTS],
        *[(LAYOUT.alive(h), live_record()) for h in ASKED_HOSTS],
        (LAYOUT.replica("web", 0), replica("web", 0, "h1")),
        (LAYOUT.replica("web", 1), replica("web", 1, "h2", next_host="h3")),
        (LAYOUT.replica("api", 0), replica("api", 0, "h4")),
        (LAYOUT.status("h1"), status_record("h1")),
        (LAYOUT.status("h4"), status_record("h4")),
        (LAYOUT.report("h1", "web", 0, 1), container("web", 0, 1)),
        (LAYOUT.report("h4", "api", 0, 1), container("api", 0, 1)),
        (LAYOUT.secret("db-password"), secret("db-password")),
    ]
    for revision, (key, record) in enumerate(puts, 1):
        live.apply(key, record.dump(), revision)
    return live


def test_seeded_state() -> None:
    state = seeded().snapshot()
    assert [r.slot for r in state.replicas_of("web")] == [0, 1]
    assert [(r.app, r.slot) for r in state.replicas_on("h3")] == [("web", 1)]
    assert state.status["h1"].value.containers == [container("web", 0, 1)]
    assert list(state.reports_of("api")) == [(0, 1, "h4")]


def test_a_report_goes_by_its_key_whatever_its_fields_say() -> None:
    # A host's reports are listed without keys of their own: one written under a key its
    # fields do not match (by hand, or an older version) is still replaced and removed
    # by that key, and the host's status lists its reports by app, slot and revision.
    live = LiveState(LAYOUT)
    live.apply(LAYOUT.status("h1"), status_record("h1").dump(), 1)
    odd = LAYOUT.report("h1", "web", 0, 1)
    live.apply(odd, container("api", 5, 2).dump(), 2)
    live.apply(LAYOUT.report("h1", "api", 1, 1), container("api", 1, 1).dump(), 3)
    live.apply(LAYOUT.report("h1", "db", 0, 1), container("db", 0, 1).dump(), 4)
    assert [c.app for c in live.snapshot().status["h1"].value.containers] == ["api", "api", "db"]
    live.apply(odd, container("web", 0, 1, state="exited").dump(), 5)
    assert [(c.app, c.state) for c in live.snapshot().status["h1"].value.containers] == [
        ("api", "running"),
        ("db", "running"),
        ("web", "exited"),
    ]
    live.apply(odd, None, 6)
    live.apply(LAYOUT.report("h1", "api", 1, 1), None, 7)
    live.apply(LAYOUT.report("h1", "db", 0, 1), None, 8)
    state = live.snapshot()
    assert state.status["h1"].value.containers == []
    assert dict(state.reports_of("web")) == {}


def test_snapshot_is_the_same_object_until_something_is_applied() -> None:
    live = seeded()
    first = live.snapshot()
    assert live.snapshot() is first
    live.apply(LAYOUT.event(1, "h1", 0), b"an event", first.revision + 1)
    second = live.snapshot()
    assert second is not first
    assert second.revision == first.revision + 1
    # Nothing the state holds changed: the same tables, changes and answers.
    for name in (*TABLES, "rollouts", "jobs", "tokens"):
        assert getattr(second, name) is getattr(first, name), name
    assert second.changes == first.changes
    assert_same_answers(answers(second), {**answers(first), "revision": second.revision})
    assert live.snapshot() is second


def test_unchanged_tables_and_index_entries_are_shared() -> None:
    """A change copies only the table and index entries it touches."""
    live = seeded()
    first = live.snapshot()
    live.apply(LAYOUT.replica("web", 0), replica("web", 0, "h2").dump(), first.revision + 1)
    second = live.snapshot()
    assert second.replicas is not first.replicas
    assert second.apps is first.apps and second.hosts is first.hosts
    assert second.replica_slots("api") is first.replica_slots("api")
    assert second.host_replicas("h4") is first.host_replicas("h4")
    assert second.replica_slots("web") is not first.replica_slots("web")
    assert first.replicas_of("web")[0].host == "h1"
    assert second.replicas_of("web")[0].host == "h2"
    assert [(r.app, r.slot) for r in first.replicas_on("h2")] == [("web", 1)]
    assert [(r.app, r.slot) for r in second.replicas_on("h2")] == [("web", 0), ("web", 1)]


def test_a_report_changed_after_a_snapshot_copies_its_chunk_not_the_apps_reports() -> None:
    # In a ramp nearly every app has a report written between two snapshots, and the
    # server took 30-50 snapshots a second: each app's every report was copied as often.
    live = LiveState(LAYOUT)
    for slot in range(1000):
        live.apply(LAYOUT.report("h1", "web", slot, 1), container("web", slot, 1).dump(), slot + 1)
    first = live.snapshot()
    live.apply(LAYOUT.report("h1", "web", 700, 1), container("web", 700, 1, "exited").dump(), 1001)
    second = live.snapshot()
    before, after = first.reports_of("web"), second.reports_of("web")
    assert before[(700, 1, "h1")].state == "running" and after[(700, 1, "h1")].state == "exited"
    assert dict(before.items()).keys() == dict(after.items()).keys() and len(after) == 1000
    assert isinstance(before, AppReportIndex) and isinstance(after, AppReportIndex)
    pairs = zip(before._chunks.values(), after._chunks.values(), strict=True)
    chunks = [chunk_a is chunk_b for chunk_a, chunk_b in pairs]
    assert chunks.count(False) == 1 and len(chunks) == 16


# ---------------------------------------------------------------- Changes


def changes(live: LiveState) -> Changes:
    found = live.snapshot().changes
    assert found is not None  # the informer's states always carry them
    return found


def bumped(before: Changes, after: Changes) -> set[str]:
    """The parts of ``Changes`` that moved, as "field" or "field:key"."""
    parts: set[str] = set()
    for name in ("apps", "reports", "host_inputs"):
        old, new = getattr(before, name), getattr(after, name)
        parts |= {
            f"{name}:{key}" for key in old.keys() | new.keys() if old.get(key) != new.get(key)
        }
    for name in ("shared", "hosts", "placed", "status"):
        if getattr(before, name) != getattr(after, name):
            parts.add(name)
    return parts


PLACED_WEB = {"apps:web", "placed"}

CHANGE_CASES: list[tuple[str, bytes, Any, set[str]]] = [
    (
        "replica moves, with a next elsewhere",
        LAYOUT.replica("web", 0),
        replica("web", 0, "h2", next_host="h3"),
        PLACED_WEB | {"host_inputs:h1", "host_inputs:h2", "host_inputs:h3"},
    ),
    (
        "replica gets a next",
        LAYOUT.replica("web", 0),
        replica("web", 0, "h1", next_host="h3"),
        PLACED_WEB | {"host_inputs:h1", "host_inputs:h3"},
    ),
    (
        "replica's next takes over",
        LAYOUT.replica("web", 1),
        replica("web", 1, "h3", revision=2),
        PLACED_WEB | {"host_inputs:h2", "host_inputs:h3"},
    ),
    ("replica deleted", LAYOUT.replica("web", 0), None, PLACED_WEB | {"host_inputs:h1"}),
    (
        "new replica",
        LAYOUT.replica("web", 2),
        replica("web", 2, "h2"),
        PLACED_WEB | {"host_inputs:h2"},
    ),
    (
        "report changed",
        LAYOUT.report("h1", "web", 0, 1),
        container("web", 0, 1, "exited"),
        {"reports:web", "status"},
    ),
    ("report gone", LAYOUT.report("h1", "web", 0, 1), None, {"reports:web", "status"}),
    (
        "new report",
        LAYOUT.report("h2", "web", 1, 1),
        container("web", 1, 1),
        {"reports:web", "status"},
    ),
    ("status usage", LAYOUT.status("h1"), status_record("h1", cpu=2.0), {"status"}),
    ("status gone", LAYOUT.status("h1"), None, {"status"}),
    ("host record", LAYOUT.host("h2"), host_record("h2", cpu=8.0), {"hosts", "host_inputs:h2"}),
    ("host gone", LAYOUT.host("h2"), None, {"hosts", "host_inputs:h2"}),
    ("liveness", LAYOUT.alive("h2"), None, {"hosts"}),
    ("admin labels", LAYOUT.host_labels("h2"), admin_labels("h2", tier="secure"), {"hosts"}),
    ("admin labels gone", LAYOUT.host_labels("h2"), None, {"hosts"}),
    ("revision", LAYOUT.revision("web", 2), revision_record("web", 2), {"shared", "apps:web"}),
    ("secret", LAYOUT.secret("db-password"), secret("db-password", 2), {"shared"}),
    ("app record", LAYOUT.app("api"), app_record("api", 2), {"apps:api"}),
    ("maintenance", LAYOUT.maintenance(), MaintenanceRecord(max=2), {"hosts"}),
]


@pytest.mark.parametrize(
    ("key", "record", "expected"),
    [case[1:] for case in CHANGE_CASES],
    ids=[case[0] for case in CHANGE_CASES],
)
def test_changes_move_exactly_the_parts_a_key_belongs_to(
    key: bytes, record: Any, expected: set[str]
) -> None:
    live = seeded()
    before = changes(live)
    live.apply(key, None if record is None else record.dump(), live.revision + 1)
    assert bumped(before, changes(live)) == expected


@pytest.mark.parametrize(
    ("key", "record", "expected"),
    [case[1:] for case in CHANGE_CASES],
    ids=[case[0] for case in CHANGE_CASES],
)
def test_host_inputs_seq_moves_exactly_when_a_hosts_inputs_move(
    key: bytes, record: Any, expected: set[str]
) -> None:
    """What DesiredPush's dispatcher looks at before it looks at every session; and while
    it stays, the next snapshot shares the hosts' tables with the last (a storm of
    reconnects or reports takes a snapshot a batch, each 5,000 hosts' worth)."""
    live = seeded()
    first = live.snapshot()
    before = changes(live)
    live.apply(key, None if record is None else record.dump(), live.revision + 1)
    second = live.snapshot()
    after = changes(live)
    moved = any(part.startswith("host_inputs:") for part in expected)
    assert (after.host_inputs_seq != before.host_inputs_seq) == moved
    assert (after.host_inputs is before.host_inputs) == (not moved)
    assert (second._by_host is first._by_host) == (not moved)


def test_admin_labels_reach_the_next_snapshot_and_not_an_earlier_one() -> None:
    """A host's admin labels (their folder, host-labels/, is the table host_labels) are
    in the snapshot after the change, as decode_state reads them, and not before."""
    live = seeded()
    before = live.snapshot()
    key, record = LAYOUT.host_labels("h2"), admin_labels("h2", tier="secure")
    live.apply(key, record.dump(), live.revision + 1)
    after = live.snapshot()
    assert before.host_labels == {}
    assert after.host_labels["h2"].value == record
    assert after.selectable_labels("h2") == {"tier": "secure"}
    decoded = decode_state(LAYOUT, [KeyValue(key, record.dump(), 7)], 7)
    assert decoded.host_labels["h2"].value == record
    live.apply(key, None, live.revision + 1)
    assert live.snapshot().host_labels == {}
    assert after.host_labels["h2"].value == record


def test_changes_keep_moving_on_every_change_of_a_part() -> None:
    """A part moves again on its next change (no number is reused)."""
    live = seeded()
    seen = {changes(live).placed}
    for n, host in enumerate(["h2", "h3", "h1", "h2"]):
        live.apply(LAYOUT.replica("web", 0), replica("web", 0, host).dump(), 100 + n)
        placed = changes(live).placed
        assert placed not in seen
        seen.add(placed)


# ---------------------------------------------------------------- unreadable values

BAD_VALUES = [b"{not json", b'{"unexpected": 1}', b""]
HELD_KEYS = [
    LAYOUT.app("web"),
    LAYOUT.replica("web", 1),
    LAYOUT.host("h1"),
    LAYOUT.status("h1"),
    LAYOUT.report("h1", "web", 0, 1),
    LAYOUT.secret("db-password"),
]


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize("key", HELD_KEYS, ids=lambda k: k.decode())
def test_unreadable_value_keeps_the_last_readable_record(
    key: bytes, bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    live = seeded()
    before = answers(live.snapshot())
    with caplog.at_level(logging.ERROR, logger="fleet.store.state"):
        live.apply(key, bad, live.revision + 1)
    assert "skipping unreadable record" in caplog.text
    after = live.snapshot()
    assert after.revision == before["revision"] + 1
    assert_same_answers(answers(after), {**before, "revision": after.revision})
    # Its key is still there: a delete removes the record kept.
    live.apply(key, None, live.revision + 1)
    assert answers(live.snapshot()) != {**before, "revision": live.revision}


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_unreadable_value_of_a_new_key_adds_nothing(bad: bytes) -> None:
    live = seeded()
    before = answers(live.snapshot())
    live.apply(LAYOUT.replica("db", 0), bad, live.revision + 1)
    live.apply(LAYOUT.report("h3", "db", 0, 1), bad, live.revision + 1)
    after = live.snapshot()
    assert_same_answers(answers(after), {**before, "revision": after.revision})


# ---------------------------------------------------------------- keys that do not parse


def test_keys_that_do_not_parse_change_nothing_and_are_warned_of_once_a_folder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stray key is skipped at every event that touches it, with one warning for its
    folder (not one an event); the state is as if it were not there."""
    live = seeded(KeyLayout())  # a layout that has warned of nothing yet
    before = answers(live.snapshot())
    stray = [b"/fleet/replicas/web/first", b"/fleet/replicas/web/2", b"/fleet/nothing/x"]
    with caplog.at_level(logging.WARNING, logger="fleet.store.keys"):
        for _ in range(3):
            for key in stray:
                live.apply(key, replica("web", 2, "h1").dump(), live.revision + 1)
                live.apply(key, None, live.revision + 1)
    after = live.snapshot()
    assert_same_answers(answers(after), {**before, "revision": after.revision})
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2
    assert "'/fleet/replicas/web/first' does not parse: invalid slot 'first'" in warned[0]
    assert "'/fleet/nothing/x' does not parse: no folder 'nothing'" in warned[1]
