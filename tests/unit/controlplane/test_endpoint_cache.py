"""``EndpointsCache`` over the informer's state: an app's endpoints worked out slot by
slot, a change redoing only the slots it touched (as ``appcounts`` does for counts),
and equal at every step to ``appstatus.endpoints`` over the whole state."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fleet.controlplane import endpointcache
from fleet.controlplane.appstatus import endpoints
from fleet.controlplane.endpointcache import EndpointsCache
from fleet.store.records import HostRecord, PortBinding, ReplicaRecord, ResourceAmounts
from tests.unit.controlplane.test_rollout_counts import READY, SLOTS, T0, Feed
from tests.unit.store.builders import LAYOUT

PORTS = [PortBinding(host_port=32768, container_port=8080, protocol="tcp")]


def hosts(feed: Feed, address: str = "10.0.0") -> None:
    for n in range(3):
        record = HostRecord(
            host_id=f"h{n}",
            capacity=ResourceAmounts(cpu=8, memory=1 << 34),
            registered_at="t0",
            address=f"{address}.{n}",
        )
        feed.put(LAYOUT.host(f"h{n}"), record.dump())


class Redone:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.slots: list[int] = []
        real = endpointcache.slot_endpoints

        def counting(replica: ReplicaRecord, *args: Any) -> endpointcache.SlotEndpoints:
            self.slots.append(replica.slot)
            return real(replica, *args)

        monkeypatch.setattr(endpointcache, "slot_endpoints", counting)

    def take(self) -> list[int]:
        found, self.slots = self.slots, []
        return sorted(found)


def test_a_change_redoes_only_the_slots_it_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    feed = Feed()
    hosts(feed)
    for slot in range(SLOTS):
        feed.replica(slot)
        feed.report(slot, "running", ready_since=READY, ports=PORTS)
    redone = Redone(monkeypatch)
    cache = EndpointsCache()
    state = feed.live.snapshot()
    assert cache.endpoints(state, "web", T0 + 60) == endpoints(state, "web", T0 + 60)
    assert len(cache.endpoints(state, "web", T0 + 60)) == SLOTS
    assert redone.take() == list(range(SLOTS))  # the first call works out every slot

    feed.report(4, "exited", ports=PORTS)
    feed.put(LAYOUT.replica("web", 5), None)
    state = feed.live.snapshot()
    found = cache.endpoints(state, "web", T0 + 60)
    assert redone.take() == [4]  # slot 5 has no replica left
    assert found == endpoints(state, "web", T0 + 60) and len(found) == SLOTS - 2

    hosts(feed, address="10.9.9")  # the hosts' addresses: every slot again
    state = feed.live.snapshot()
    assert cache.endpoints(state, "web", T0 + 60) == endpoints(state, "web", T0 + 60)
    assert len(redone.take()) == SLOTS - 1


def test_a_slot_redone_is_kept_under_its_records_slot_number() -> None:
    """As a tally's: a slot read off the log is an int of its own past 256."""
    feed = Feed()
    hosts(feed)
    feed.replica(300)
    feed.report(300, "running", ready_since=READY, ports=PORTS)
    cache = EndpointsCache()
    cache.endpoints(feed.live.snapshot(), "web", T0 + 60)
    feed.replica(301)  # a slot new since: first seen on the log
    feed.report(301, "running", ready_since=READY, ports=PORTS)
    state = feed.live.snapshot()
    assert len(cache.endpoints(state, "web", T0 + 60)) == 2
    [kept] = cache._apps.values()
    assert [slot is state.replica_slots("web")[slot].value.slot for slot in kept.slots] == [
        True,
        True,
    ]


def test_endpoints_slot_by_slot_equal_endpoints_of_the_whole_state() -> None:
    rng = random.Random(20)
    feed = Feed()
    hosts(feed)
    cache = EndpointsCache()
    for step in range(300):
        slot = rng.randrange(40)
        what = rng.random()
        if what < 0.3:
            feed.replica(slot, revision=rng.choice((1, 2)), host=f"h{rng.randrange(4)}")
        elif what < 0.35:
            feed.put(LAYOUT.replica("web", slot), None)
        elif what < 0.9:
            feed.report(
                slot,
                rng.choice(("running", "running", "exited")),
                revision=rng.choice((1, 2)),
                host=f"h{rng.randrange(3)}",
                ready_since=rng.choice(("", READY, "2027-01-15T08:00:30Z")),
                health=rng.choice(("", "healthy", "unhealthy")),
                ports=rng.choice(([], PORTS, PORTS * 2)),
            )
        elif what < 0.97:
            feed.put(LAYOUT.report(f"h{rng.randrange(3)}", "web", slot, rng.choice((1, 2))), None)
        else:
            hosts(feed, address=f"10.0.{rng.randrange(9)}")
        if step % 7 == 0:
            state = feed.live.snapshot()
            for now in (T0, T0 + 15, T0 + 60):
                assert cache.endpoints(state, "web", now) == endpoints(state, "web", now), step
