"""``AppSlots``: an app's replica records by slot, answering as the dict of ``Versioned``
records it replaces, with the mod revisions in an array."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from fleet.store.appslots import AppSlots
from fleet.store.records import ReplicaRecord, ResourceAmounts
from fleet.store.state import Versioned

_RESOURCES = ResourceAmounts(cpu=0.1, memory=64 << 20)


def replica(slot: int, host: str = "h1") -> ReplicaRecord:
    return ReplicaRecord(app="web", slot=slot, revision=1, host=host, resources=_RESOURCES)


# put (slot, revision) or pop (slot, None); slots mostly dense, some far past the rest
_SLOTS = st.one_of(st.integers(0, 300), st.integers(0, 10**15))
_STEPS = st.lists(st.tuples(_SLOTS, st.one_of(st.none(), st.integers(1, 2**62))), max_size=80)


@given(_STEPS)
def test_slots_answer_as_a_dict_of_versioned_records(steps: list[tuple[int, int | None]]) -> None:
    slots, expected = AppSlots(), dict[int, Versioned[ReplicaRecord]]()
    records = dict[int, ReplicaRecord]()
    snapshots = []
    for slot, revision in steps:
        if revision is None:
            slots.pop(slot)
            expected.pop(slot, None)
        else:
            record = records.setdefault(slot, replica(slot))
            slots.put(slot, record, revision)
            expected[slot] = Versioned(record, revision)
        snapshots.append((slots.copy(), dict(expected)))
    assert dict(slots.items()) == expected
    assert len(slots) == len(expected) and set(slots) == set(expected)
    assert list(slots.values()) == [expected[s] for s in slots]
    for slot, versioned in expected.items():
        assert slot in slots
        assert slots[slot] == versioned == slots.get(slot)
        assert slots.record(slot) is versioned.value
    assert slots.get(-1) is None and -1 not in slots and slots.record(-1) is None
    # A copy is a snapshot: what the original went on to do does not show in it.
    for copied, then in snapshots:
        assert dict(copied.items()) == then


def test_a_slot_far_past_the_others_sizes_no_array() -> None:
    slots = AppSlots()
    slots.put(10**15, replica(0), 7)
    slots.put(3, replica(3), 8)
    assert len(slots._revisions) < 2048
    assert slots[10**15].mod_revision == 7 and slots[3].mod_revision == 8
    slots.pop(10**15)
    assert slots._sparse is None and list(slots) == [3]


def test_a_slot_put_past_the_array_keeps_its_revision_once_the_array_grows() -> None:
    slots = AppSlots()
    slots.put(1500, replica(1500), 9)  # past 2 x 0 + 1024: kept apart
    for slot in range(1500):
        slots.put(slot, replica(slot), 100 + slot)
    assert len(slots._revisions) > 1500  # grown past it
    assert slots[1500].mod_revision == 9 == dict(slots.items())[1500].mod_revision
    slots.put(1500, replica(1500), 10)  # now in the array
    assert slots._sparse is None and slots[1500].mod_revision == 10
    assert [v.mod_revision for v in slots.values()][:2] == [10, 100]


def test_an_apps_slots_hold_no_object_a_replica_but_its_record() -> None:
    records = [replica(slot) for slot in range(2000)]
    tracemalloc.start()
    try:
        slots = AppSlots()
        for record in records:  # (under the record's slot, a shared int, as the informer)
            slots.put(record.slot, record, 1_000_000 + record.slot)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # A dict by slot (about 37 bytes an entry) and 8 bytes a revision, with the array's
    # growth: a Versioned and an int each were 76 bytes more a replica.
    assert held < 2000 * 60, held
