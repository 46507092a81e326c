"""``HostViews``: the scheduler's view of each host, kept between rounds and rebuilt only
for the hosts whose records changed; one per control plane, and removed hosts leave it."""

from __future__ import annotations

from fleet.controlplane.view import HostView, HostViews, scheduler_snapshot
from fleet.store.live import LiveState
from fleet.store.records import HostLabelsRecord, LiveRecord, ReplicaRecord, ResourceAmounts
from tests.unit.store.builders import LAYOUT, host_record, status_record


def pool(hosts: int) -> LiveState:
    live = LiveState(LAYOUT)
    for n in range(hosts):
        live.apply(LAYOUT.host(f"h{n}"), host_record(f"h{n}").dump(), n + 1)
    return live


def test_an_unchanged_host_keeps_its_view_and_a_changed_one_is_rebuilt() -> None:
    live = pool(3)
    views = HostViews()
    before = {h.host_id: h for h in scheduler_snapshot(live.snapshot(), views=views).hosts}
    replica = ReplicaRecord(
        app="web", slot=0, revision=1, host="h1", resources=ResourceAmounts(cpu=1, memory=0)
    )
    live.apply(LAYOUT.replica("web", 0), replica.dump(), 10)
    after = {h.host_id: h for h in scheduler_snapshot(live.snapshot(), views=views).hosts}
    assert after["h0"] is before["h0"] and after["h2"] is before["h2"]
    assert after["h1"] is not before["h1"]
    assert after["h1"].reserved_nanocpus == 1_000_000_000
    assert after["h1"].placed_apps == {"web": 1}
    # Without a memo the same view is built afresh, and it is equal.
    fresh = {h.host_id: h for h in scheduler_snapshot(live.snapshot()).hosts}
    assert fresh == after and fresh["h0"] is not after["h0"]


def test_removed_hosts_leave_the_memo() -> None:
    live = pool(40)
    views = HostViews()
    scheduler_snapshot(live.snapshot(), views=views)
    for n in range(1, 40):
        live.apply(LAYOUT.host(f"h{n}"), None, 100 + n)
    live.apply(LAYOUT.host("new"), host_record("new").dump(), 200)
    hosts = scheduler_snapshot(live.snapshot(), views=views).hosts
    assert {h.host_id for h in hosts} == {"h0", "new"}
    assert set(views._views) == {"h0", "new"}  # 41 kept views would be a leak


def test_a_view_follows_its_hosts_status_labels_and_liveness_and_holds_none_of_them() -> None:
    """Rebuilt when the host's status, admin labels or liveness change; kept by numbers,
    so an older state's records and replica index are not held once the informer moved
    on (a copy of each a host, after a ramp)."""
    live = pool(2)
    views = HostViews()

    def view_of_h1() -> HostView:
        [found] = [
            h for h in scheduler_snapshot(live.snapshot(), views=views).hosts if h.host_id == "h1"
        ]
        return found

    first = view_of_h1()
    assert view_of_h1() is first
    status = status_record("h1", cpu=1.5).model_copy(update={"reported_at": "2026-12-07T10:00:00Z"})
    live.apply(LAYOUT.status("h1"), status.dump(), 20)
    with_status = view_of_h1()
    assert with_status is not first and with_status.used_cpu == 1.5
    labels = HostLabelsRecord(host_id="h1", labels={"zone": "a"}, updated_at="t1")
    live.apply(LAYOUT.host_labels("h1"), labels.dump(), 21)
    labelled = view_of_h1()
    assert labelled is not with_status and labelled.labels["zone"] == "a"
    alive = LiveRecord(server="s1", connected_at="t2")
    live.apply(LAYOUT.alive("h1"), alive.dump(), 22)
    connected = view_of_h1()
    assert connected is not labelled and connected.connected
    assert view_of_h1() is connected
    held = [part for stamp, _ in views._views.values() for part in stamp]
    state = live.snapshot()
    assert not any(r is state.status["h1"] or r is state.host_replicas("h1") for r in held)
    assert all(isinstance(n, (int, bool, type(None))) for n in views._views["h1"][0])
