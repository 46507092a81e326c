"""``rollout_counts`` over the informer's state: each app's walk of its replicas is kept
until its records or reports change, and only the time is applied per call."""

from __future__ import annotations

from fleet.controlplane.appstatus import CountsCache, RolloutCounts, rollout_counts
from fleet.spec import load_documents
from fleet.store.live import LiveState
from fleet.store.records import AppRecord, ContainerReport, ReplicaRecord, ResourceAmounts
from tests.unit.store.builders import LAYOUT, status_record

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
READY = "2027-01-15T08:00:00Z"


def app_record(min_ready: int) -> AppRecord:
    [spec] = load_documents(
        f"name: web\nimage: img:v1\nreplicas: 2\nupdate: {{min_ready: {min_ready}s}}\n", "a.yaml"
    )
    return AppRecord(spec=spec, generation=1, revision=1, created_at="t0", updated_at="t0")


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
        report = ContainerReport(
            app="web",
            slot=slot,
            revision=1,
            spec_hash="abc",
            container_id=f"c{slot}",
            name=f"web.{slot}",
            state="running",
            ready_since=READY,
        )
        put(LAYOUT.report("h1", "web", slot, 1), report.dump())
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
    exited = ContainerReport(
        app="web",
        slot=1,
        revision=1,
        spec_hash="abc",
        container_id="c1",
        name="web.1",
        state="exited",
    )
    live.apply(LAYOUT.report("h1", "web", 1, 1), exited.dump(), 100)
    assert rollout_counts(live.snapshot(), "web", T0 + 1, cache) == RolloutCounts(1, 1, 2, 1, 2)
    live.apply(LAYOUT.replica("web", 1), None, 101)
    assert rollout_counts(live.snapshot(), "web", T0 + 1, cache) == RolloutCounts(1, 1, 1, 1, 1)


def test_the_memo_is_reused_while_nothing_changes_and_forgets_deleted_apps() -> None:
    """The walk is kept (the same basis object comes back) until the app's records
    change, and a memo that outgrows the apps it counts drops the deleted ones: one
    per control plane, not a module-global that grows for the life of the process."""
    live = seeded(min_ready=0)
    cache = CountsCache()
    app = live.snapshot().apps["web"].value
    first = cache.basis(live.snapshot(), app)
    assert cache.basis(live.snapshot(), app) is first
    live.apply(LAYOUT.replica("web", 1), None, 100)
    assert cache.basis(live.snapshot(), app) is not first
    for n in range(40):  # apps counted once, then deleted
        name = f"gone{n}"
        spec = app.spec.model_copy(update={"name": name})
        live.apply(LAYOUT.app(name), app.model_copy(update={"spec": spec}).dump(), 200 + 2 * n)
        rollout_counts(live.snapshot(), name, T0, cache)
        live.apply(LAYOUT.app(name), None, 201 + 2 * n)
    rollout_counts(live.snapshot(), "web", T0, cache)
    assert set(cache._bases) <= {"web"} | {f"gone{n}" for n in range(40)}
    # Two apps at most were alive at each walk: the memo stays near twice that (+16),
    # where a memo that never forgot would hold all 41.
    assert "web" in cache._bases and len(cache._bases) <= 2 * 2 + 16 + 1
