"""``get hosts``' per-host sums (``api/hostsums.py``): equal to a walk of the host's
containers, and worked out again only for a host whose replicas changed."""

from __future__ import annotations

import pytest

from fleet.controlplane.api import hostsums
from fleet.controlplane.api.hostsums import HostSums, Sums
from fleet.store import ClusterState
from tests.unit.controlplane.test_rollout_counts import Feed


def test_sums_are_redone_only_for_a_host_whose_replicas_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed = Feed()
    for slot in range(30):
        feed.replica(slot)  # slot s on h{s % 3}
    done: list[str] = []
    real = hostsums._sums

    def counting(state: ClusterState, host_id: str) -> Sums:
        done.append(host_id)
        return real(state, host_id)

    monkeypatch.setattr(hostsums, "_sums", counting)
    memo = HostSums()
    state = feed.live.snapshot()
    assert [memo.of(state, h).containers for h in ("h0", "h1", "h2")] == [10, 10, 10]
    feed.report(0, "running")  # a report: no replica changed
    feed.replica(1, host="h1", next_host="h0")  # h0 and h1 change; h2 does not
    done.clear()
    state = feed.live.snapshot()
    found = {h: memo.of(state, h) for h in ("h0", "h1", "h2")}
    assert sorted(done) == ["h0", "h1"]
    assert found == {h: real(state, h) for h in ("h0", "h1", "h2")}
    assert (found["h0"].containers, found["h0"].remaining) == (11, 10)  # slot 1's next


def test_the_memo_holds_no_replica_index() -> None:
    """Kept by the informer's number for the host's inputs: an index the informer has
    since replaced would be an old copy held for each host."""
    feed = Feed()
    for slot in range(6):
        feed.replica(slot)
    memo = HostSums()
    state = feed.live.snapshot()
    memo.of(state, "h0")
    [(number, _)] = memo._sums.values()
    assert isinstance(number, int)
    feed.replica(0, host="h1")  # h0 loses slot 0: its number moves, its sums are redone
    state = feed.live.snapshot()
    assert memo.of(state, "h0").containers == 1
