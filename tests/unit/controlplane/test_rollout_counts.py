"""``rollout_counts`` and ``app_trouble`` over the informer's state: each app's counts
are kept slot by slot (``appcounts``), a change recounts only the slots it touched, and
only the time is applied per call."""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest

from fleet.controlplane import appcounts
from fleet.controlplane.appstatus import CountsCache, RolloutCounts, app_trouble, rollout_counts
from fleet.spec import load_documents
from fleet.store import ClusterState
from fleet.store import live as live_module
from fleet.store.live import LiveState
from fleet.store.records import (
    AppRecord,
    ContainerReport,
    ReplicaRecord,
    ReplicaTarget,
    ResourceAmounts,
)
from tests.unit.store.builders import LAYOUT, status_record

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
READY = "2027-01-15T08:00:00Z"


def app_record(min_ready: int) -> AppRecord:
    [spec] = load_documents(
        f"name: web\nimage: img:v1\nreplicas: 2\nupdate: {{min_ready: {min_ready}s}}\n", "a.yaml"
    )
    return AppRecord(spec=spec, generation=1, revision=1, created_at="t0", updated_at="t0")


def web_report(slot: int, **fields: Any) -> ContainerReport:
    """Slot ``slot``'s container of web at revision 1 on h1: running and ready since
    READY, but for ``fields``."""
    values: dict[str, Any] = {
        "app": "web",
        "slot": slot,
        "revision": 1,
        "spec_hash": "abc",
        "container_id": f"c{slot}",
        "name": f"web.{slot}",
        "state": "running",
        "ready_since": READY,
    }
    return ContainerReport(**{**values, **fields})


def seeded(min_ready: int) -> LiveState:
    live = LiveState(LAYOUT)
    revision = 0

    def put(key: bytes, value: bytes) -> None:
        nonlocal revision
        revision += 1
        live.apply(key, value, revision)

    put(LAYOUT.app("web"), app_record(min_ready).dump())
    for slot in (0, 1):
        record = ReplicaRecord(
            app="web", slot=slot, revision=1, host="h1", resources=ResourceAmounts()
        )
        put(LAYOUT.replica("web", slot), record.dump())
    put(LAYOUT.status("h1"), status_record("h1").dump())
    for slot in (0, 1):
        put(LAYOUT.report("h1", "web", slot, 1), web_report(slot).dump())
    return live


def test_availability_follows_the_clock_on_one_state() -> None:
    live = seeded(min_ready=10)
    state = live.snapshot()
    cache = CountsCache()
    assert rollout_counts(state, "web", T0 + 5, cache) == RolloutCounts(2, 0, 2, 0, 2)
    assert rollout_counts(state, "web", T0 + 10, cache) == RolloutCounts(2, 2, 2, 2, 2)
    assert rollout_counts(state, "web", T0 + 5, cache) == RolloutCounts(2, 0, 2, 0, 2)
    assert rollout_counts(state, "web", T0 + 5) == RolloutCounts(2, 0, 2, 0, 2)  # no memo


def test_a_changed_report_is_counted_at_once() -> None:
    live = seeded(min_ready=0)
    cache = CountsCache()
    assert rollout_counts(live.snapshot(), "web", T0 + 1, cache) == RolloutCounts(2, 2, 2, 2, 2)
    exited = web_report(1, state="exited", ready_since="")
    live.apply(LAYOUT.report("h1", "web", 1, 1), exited.dump(), 100)
    assert rollout_counts(live.snapshot(), "web", T0 + 1, cache) == RolloutCounts(1, 1, 2, 1, 2)
    live.apply(LAYOUT.replica("web", 1), None, 101)
    assert rollout_counts(live.snapshot(), "web", T0 + 1, cache) == RolloutCounts(1, 1, 1, 1, 1)


def test_the_memo_forgets_deleted_apps() -> None:
    """A memo that outgrows the apps it counts drops the deleted ones: one per control
    plane, not a module-global that grows for the life of the process."""
    live = seeded(min_ready=0)
    cache = CountsCache()
    app = live.snapshot().apps["web"].value
    for n in range(40):  # apps counted once, then deleted
        name = f"gone{n}"
        spec = app.spec.model_copy(update={"name": name})
        live.apply(LAYOUT.app(name), app.model_copy(update={"spec": spec}).dump(), 200 + 2 * n)
        rollout_counts(live.snapshot(), name, T0, cache)
        live.apply(LAYOUT.app(name), None, 201 + 2 * n)
    rollout_counts(live.snapshot(), "web", T0, cache)
    assert set(cache._tallies) <= {"web"} | {f"gone{n}" for n in range(40)}
    # Two apps at most were alive at each count: the memo stays near twice that (+16),
    # where a memo that never forgot would hold all 41.
    assert "web" in cache._tallies and len(cache._tallies) <= 2 * 2 + 16 + 1


# ---------------------------------------------------------------- counted slot by slot


SLOTS = 300


class Recounts:
    """Counts the slots ``appcounts`` recounts (its ``slot_counts`` calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.slots: list[int] = []
        real = appcounts.slot_counts

        def counting(
            replica: ReplicaRecord, *args: Any
        ) -> appcounts.SlotCounts | appcounts.PlainSlot:
            self.slots.append(replica.slot)
            return real(replica, *args)

        monkeypatch.setattr(appcounts, "slot_counts", counting)

    def take(self) -> list[int]:
        found, self.slots = self.slots, []
        return found


class Feed:
    """A ``LiveState`` of one app of ``SLOTS`` slots on 3 hosts, fed key by key."""

    def __init__(self) -> None:
        self.live = LiveState(LAYOUT)
        self.revision = 0
        self.record = app_record(min_ready=10).model_copy(
            update={"spec": app_record(10).spec.model_copy(update={"replicas": SLOTS})}
        )
        self.put(LAYOUT.app("web"), self.record.dump())
        for host in ("h0", "h1", "h2"):
            self.put(LAYOUT.status(host), status_record(host).dump())

    def put(self, key: bytes, value: bytes | None) -> None:
        self.revision += 1
        self.live.apply(key, value, self.revision)

    def replica(self, slot: int, revision: int = 1, host: str = "", next_host: str = "") -> None:
        record = ReplicaRecord(
            app="web",
            slot=slot,
            revision=revision,
            host=host or f"h{slot % 3}",
            resources=ResourceAmounts(),
            next=ReplicaTarget(revision=2, host=next_host, resources=ResourceAmounts())
            if next_host
            else None,
        )
        self.put(LAYOUT.replica("web", slot), record.dump())

    def report(
        self, slot: int, state: str, *, revision: int = 1, host: str = "", **more: Any
    ) -> None:
        report = ContainerReport(
            app="web",
            slot=slot,
            revision=revision,
            spec_hash="abc",
            container_id=f"c{slot}",
            name=f"web.{slot}",
            state=state,
            **more,
        )
        self.put(LAYOUT.report(host or f"h{slot % 3}", "web", slot, revision), report.dump())


def uncached(state: ClusterState, now: float) -> tuple[RolloutCounts, tuple[str, str]]:
    return rollout_counts(state, "web", now), app_trouble(state, "web")


def cached(
    cache: CountsCache, state: ClusterState, now: float
) -> tuple[RolloutCounts, tuple[str, str]]:
    return rollout_counts(state, "web", now, cache), app_trouble(state, "web", cache)


def recounted(cache: CountsCache, state: ClusterState, now: float, recounts: Recounts) -> list[int]:
    """The slots the cache recounts to answer for ``state``, once its answer is checked
    against a count of the whole state."""
    want = uncached(state, now)
    recounts.take()
    assert cached(cache, state, now) == want
    return sorted(recounts.take())


def test_a_change_recounts_only_the_slots_it_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    """``get apps`` during a large apply: every call comes after some reports changed.
    Each call recounts the slots that changed, never the app's other slots (a walk of
    every replica per call held the server's loop for seconds at 100,000)."""
    feed = Feed()
    for slot in range(SLOTS):
        feed.replica(slot)
    recounts = Recounts(monkeypatch)
    cache = CountsCache()
    now = T0 + 60
    assert cached(cache, feed.live.snapshot(), now)[0] == RolloutCounts(0, 0, SLOTS, 0, SLOTS)
    assert sorted(recounts.take()) == list(range(SLOTS))  # the first count walks them all

    cached(cache, feed.live.snapshot(), now)
    assert recounts.take() == []  # nothing changed: nothing recounted

    feed.report(7, "running", ready_since=READY)
    feed.report(8, "running", ready_since=READY)
    feed.report(7, "running", ready_since=READY, restarts=1)
    assert recounted(cache, feed.live.snapshot(), now, recounts) == [7, 8]  # each once

    feed.put(LAYOUT.replica("web", 8), None)  # a slot removed (scaled down)
    feed.report(9, "pull-failed", reason="image-not-found", message="no such image")
    state = feed.live.snapshot()
    assert recounted(cache, state, now, recounts) == [9]  # slot 8 has no replica to count
    assert cached(cache, state, now)[1][0] == "image-not-found"


def test_a_new_revision_or_min_ready_recounts_every_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    feed = Feed()
    for slot in range(SLOTS):
        feed.replica(slot)
        feed.report(slot, "running", ready_since=READY)
    recounts = Recounts(monkeypatch)
    cache = CountsCache()
    cached(cache, feed.live.snapshot(), T0 + 60)
    recounts.take()
    feed.put(LAYOUT.app("web"), feed.record.model_copy(update={"revision": 2}).dump())
    state = feed.live.snapshot()
    assert len(recounted(cache, state, T0 + 60, recounts)) == SLOTS
    assert cached(cache, state, T0 + 60)[0].updated == 0  # every slot judged anew


def test_a_new_slot_log_recounts_every_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log that grew long is replaced: a cache that was behind it recounts all."""
    monkeypatch.setattr(live_module, "_SLOT_LOG_MAX", 50)
    feed = Feed()
    for slot in range(SLOTS):
        feed.replica(slot)
    recounts = Recounts(monkeypatch)
    cache = CountsCache()
    cached(cache, feed.live.snapshot(), T0)
    recounts.take()
    for slot in range(60):  # past the log's 50 entries
        feed.report(slot, "running", ready_since=READY)
    assert len(recounted(cache, feed.live.snapshot(), T0 + 60, recounts)) == SLOTS


def test_counted_slot_by_slot_equals_counted_whole() -> None:
    """Random changes of replicas (moves, replacements, removals), reports (states,
    health, restarts, readiness) and the app record: after each batch the cache's
    counts and trouble equal a count of the whole state."""
    rng = random.Random(24)
    feed = Feed()
    cache = CountsCache()
    slots = 40
    for step in range(300):
        slot = rng.randrange(slots)
        what = rng.random()
        if what < 0.3:
            feed.replica(
                slot,
                revision=rng.choice((1, 2)),
                host=f"h{rng.randrange(3)}",
                next_host=rng.choice(("", "h0", "h1")),
            )
        elif what < 0.35:
            feed.put(LAYOUT.replica("web", slot), None)
        elif what < 0.9:
            state = rng.choice(("running", "running", "exited", "failed", "created"))
            feed.report(
                slot,
                state,
                revision=rng.choice((1, 2)),
                host=f"h{rng.randrange(3)}",
                ready_since=rng.choice(("", READY, "2027-01-15T08:00:30Z")),
                health=rng.choice(("", "", "healthy", "unhealthy")),
                restarts=rng.choice((0, 0, 3)),
            )
        elif what < 0.97:
            host = f"h{rng.randrange(3)}"
            revision = rng.choice((1, 2))
            feed.put(LAYOUT.report(host, "web", slot, revision), None)
        else:
            record = feed.record.model_copy(update={"revision": rng.choice((1, 2))})
            feed.put(LAYOUT.app("web"), record.dump())
        if step % 7 == 0:
            state_now = feed.live.snapshot()
            for now in (T0, T0 + 15, T0 + 60):
                assert cached(cache, state_now, now) == uncached(state_now, now), step


def test_a_slot_with_one_available_container_is_held_as_its_time() -> None:
    """The common slot (one container of the app's revision, running, no trouble) is
    held as the time it is available (a tally holds a part per slot: 100,000 at
    100,000 replicas); any other slot as its whole counts, which sum the same."""
    replica = ReplicaRecord(app="web", slot=0, revision=1, host="h1", resources=ResourceAmounts())
    running = web_report(0)
    reports = {(0, 1, "h1"): running}
    plain = appcounts.slot_counts(replica, reports, 1, 10.0)
    assert plain == T0 + 10 and not isinstance(plain, appcounts.SlotCounts)
    # An older revision, a replacement on its way, a container not ready: whole counts.
    assert isinstance(appcounts.slot_counts(replica, reports, 2, 10.0), appcounts.SlotCounts)
    moving = replica.model_copy(
        update={"next": ReplicaTarget(revision=1, host="h2", resources=ResourceAmounts())}
    )
    assert isinstance(appcounts.slot_counts(moving, reports, 1, 10.0), appcounts.SlotCounts)
    starting = {(0, 1, "h1"): running.model_copy(update={"ready_since": ""})}
    assert isinstance(appcounts.slot_counts(replica, starting, 1, 10.0), appcounts.SlotCounts)
    tally = appcounts.Tally((1, 10.0), None, 0)
    tally.put(0, plain)
    tally.put(1, appcounts.slot_counts(moving, reports, 1, 10.0))
    assert tally.counts(T0 + 10) == RolloutCounts(
        running=2, available=2, updated=2, updated_available=2, total=3
    )
    tally.put(0, None)
    assert tally.counts(T0 + 10) == RolloutCounts(
        running=1, available=1, updated=1, updated_available=1, total=2
    )


def test_slots_not_yet_ready_share_their_counts() -> None:
    """Placed and not yet running, or running and not yet ready (most slots while a large
    apply ramps up): slots alike hold one instance, and count as each their own would."""
    replicas = [
        ReplicaRecord(app="web", slot=slot, revision=1, host="h1", resources=ResourceAmounts())
        for slot in range(4)
    ]
    starting = {
        (slot, 1, "h1"): web_report(slot, ready_since="", health="starting") for slot in (2, 3)
    }
    parts = [appcounts.slot_counts(replica, starting, 1, 10.0) for replica in replicas]
    placed, running = parts[0], parts[2]
    assert parts[1] is placed and parts[3] is running and placed is not running
    assert placed == appcounts.SlotCounts(0, 1, (), True, None, ())
    assert running == appcounts.SlotCounts(1, 1, (), True, None, ())
    tally = appcounts.Tally((1, 10.0), None, 0)
    for slot, part in enumerate(parts):
        tally.put(slot, part)
    assert tally.counts(T0 + 60) == RolloutCounts(
        running=2, available=0, updated=4, updated_available=0, total=4
    )
    # A trouble is a slot's own.
    failed = {(0, 1, "h1"): web_report(0, state="failed", ready_since="")}
    part = appcounts.slot_counts(replicas[0], failed, 1, 10.0)
    assert isinstance(part, appcounts.SlotCounts) and part is not placed
    assert [word for word, _ in part.troubles] == ["failed"]


def test_a_tally_keeps_its_slots_parts_and_their_times_in_arrays() -> None:
    """A plain part is a time in an array by slot, its times are sorted arrays: no
    object a slot (a tally of 2,000 slots was 154 KB as a dict and lists of floats)."""
    feed = Feed()
    for slot in range(2000):
        feed.replica(slot)
        feed.report(slot, "running", ready_since=READY)
    cache = CountsCache()
    state = feed.live.snapshot()
    assert rollout_counts(state, "web", T0 + 60, cache) == RolloutCounts(
        2000, 2000, 2000, 2000, 2000
    )
    [tally] = cache._tallies.values()
    assert len(tally) == 2000
    assert all(isinstance(tally.part(slot), float) for slot in range(2000))
    tracemalloc.start()
    try:
        fresh = appcounts.count_all(state, state.apps["web"].value)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(fresh) == 2000 and held < 48_000, held
    # A slot that goes leaves the arrays as they were but for it.
    feed.report(7, "exited")
    assert rollout_counts(feed.live.snapshot(), "web", T0 + 60, cache) == RolloutCounts(
        1999, 1999, 2000, 1999, 2000
    )
    assert isinstance(tally.part(7), appcounts.SlotCounts)
    assert tally.part(6) == tally.part(8)


def test_a_slot_far_past_the_others_is_not_an_index_into_an_array() -> None:
    """A slot number anyone could write (a key by hand, a job's long run) sizes nothing."""
    tally = appcounts.Tally((1, 10.0), None, 0)
    tally.put(10**12, 5.0)
    tally.put(3, 6.0)
    assert len(tally._plain) < 2048
    assert tally.part(10**12) == appcounts.SlotCounts(1, 1, (5.0,), True, 5.0, ())
    assert tally.part(3) == 6.0 and len(tally) == 2
    assert tally.counts(5.5) == RolloutCounts(2, 1, 2, 1, 2)
    tally.put(10**12, None)
    assert tally.part(10**12) is None and len(tally) == 1
    assert tally.counts(10.0) == RolloutCounts(1, 1, 1, 1, 1)


def test_a_plain_part_given_as_a_whole_number_is_a_time_too() -> None:
    tally = appcounts.Tally((1, 10.0), None, 0)
    tally.put(4, 6)  # (a time that happens to be whole)
    assert tally.part(4) == 6.0 and tally.counts(6.0) == RolloutCounts(1, 1, 1, 1, 1)
    tally.put(4, None)
    assert tally.counts(6.0) == RolloutCounts(0, 0, 0, 0, 0) and len(tally) == 0
