"""``HostViews``: the scheduler's view of each host, kept between rounds and rebuilt only
for the hosts whose records changed; one per control plane, and removed hosts leave it."""

from __future__ import annotations

from fleet.controlplane.view import HostViews, scheduler_snapshot
from fleet.store.live import LiveState
from fleet.store.records import ReplicaRecord, ResourceAmounts
from tests.unit.store.builders import LAYOUT, host_record


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
