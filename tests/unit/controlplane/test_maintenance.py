"""Tests of fleet.controlplane.maintenance: who may take a slot of the maintenance
semaphore (a drain by the stored limit, the upgrade walk by its raised one), giving a
slot back, and the record a drain puts a host in."""

from __future__ import annotations

from fleet._time import epoch
from fleet.controlplane.maintenance import drain_record, may_take_slot, release_slot, semaphore_full
from fleet.store.records import HostDrain, HostRecord, MaintenanceRecord, ResourceAmounts


def semaphore(limit: int, *holders: str) -> MaintenanceRecord:
    return MaintenanceRecord(max=limit, holders={h: "fleet drain" for h in holders})


def host(**update: object) -> HostRecord:
    record = HostRecord(host_id="h1", capacity=ResourceAmounts(cpu=1, memory=1), registered_at="t0")
    return record.model_copy(update=update)


def test_a_drain_takes_a_free_slot_and_not_a_held_one() -> None:
    assert may_take_slot(semaphore(2, "h1"), {"h1": "fleet drain"}, "h2")
    full = semaphore(1, "h1")
    assert not may_take_slot(full, full.holders, "h2")


def test_a_holder_keeps_its_slot_even_when_the_semaphore_is_full() -> None:
    full = semaphore(1, "h1")
    assert may_take_slot(full, full.holders, "h1")
    assert may_take_slot(full, full.holders, "h1", walk_parallel=1)


def test_the_walk_counts_against_its_raised_limit_a_drain_against_the_stored_one() -> None:
    # The walk stores max(stored, --max-parallel) in the same step it takes the slot.
    stored = semaphore(1, "h1")
    assert may_take_slot(stored, stored.holders, "h2", walk_parallel=2)
    assert not may_take_slot(stored, stored.holders, "h2")
    assert not may_take_slot(stored, {"h1": "x", "h2": "y"}, "h3", walk_parallel=2)


def test_a_stored_limit_above_the_walks_is_kept() -> None:
    stored = semaphore(3, "h1", "h2")
    assert may_take_slot(stored, stored.holders, "h3", walk_parallel=1)


def test_releasing_gives_back_only_that_hosts_slot() -> None:
    released = release_slot(semaphore(3, "h1", "h2"), "h1")
    assert released == semaphore(3, "h2")
    assert release_slot(released, "h9") == released


def test_a_drain_record_cordons_with_the_deadline_from_now() -> None:
    now = 1_800_000_000.0
    record = drain_record(
        host(), deadline_seconds=60, force=True, include_global=False, by="fleet drain", now=now
    )
    assert record.state == "draining" and record.drain is not None
    assert epoch(record.drain.started_at) == now
    assert epoch(record.drain.deadline_at) == now + 60
    assert record.drain.force and record.drain.by == "fleet drain"


def test_a_drain_again_keeps_when_it_started_and_a_drained_host_stays() -> None:
    under_way = host(state="draining", drain=HostDrain(started_at="t0", by="fleet drain"))
    again = drain_record(
        under_way, deadline_seconds=0, force=False, include_global=True, by="x", now=1e9
    )
    assert again.drain is not None
    assert again.drain.started_at == "t0" and again.drain.deadline_at == ""
    drained = under_way.model_copy(update={"state": "drained"})
    assert (
        drain_record(drained, deadline_seconds=5, force=True, include_global=True, by="x", now=1e9)
        is drained
    )


def test_a_full_semaphore_says_who_holds_it_and_never_advises_a_walk() -> None:
    """The drain's refusal names the holders and how each gives its slot back: never a
    command that starts something pool-wide (`fleet upgrade-hosts --max-parallel`)."""
    semaphore = MaintenanceRecord(max=2, holders={"h1": "fleet drain", "h2": "upgrade-hosts"})
    said = semaphore_full(semaphore, semaphore.holders)
    assert "2 of 2 slot(s) held by h1 (fleet drain), h2 (upgrade-hosts)" in said
    assert "fleet uncordon HOST" in said and "fleet upgrade-hosts --cancel" in said
    assert "--max-parallel" not in said and "fleet hosts release" not in said
    only_drains = MaintenanceRecord(max=1, holders={"h1": "fleet drain"})
    assert "upgrade-hosts" not in semaphore_full(only_drains, only_drains.holders)
