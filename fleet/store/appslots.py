"""An app's replica records by slot, with each key's mod revision beside them.

The informer holds one replica record for every replica, 100,000 at 100,000 replicas.
Each was held in a ``Versioned`` (48 bytes) with its key's mod revision (an int of its
own, 28 bytes): 7 MiB for the wrappers and their numbers alone. Here an app's records
are a dict by slot and the mod revisions an array indexed by slot (slots are numbered
from 0 and kept dense: ``controlplane.slots``), 8 bytes a replica; a ``Versioned`` is
made when a reader asks for one (#24 item 3). A slot far past the others (a key written
by hand, a job's long run) has its revision in a dict instead, so no array is sized by
a number anyone can write.
"""

from __future__ import annotations

from array import array
from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import Any

from fleet.store.records import ReplicaRecord
from fleet.store.state import Versioned

__all__ = ["AppSlots", "room_for"]

_DENSE_SLACK = 1024  # slots an array may run past twice the count it holds


def room_for(slot: int, length: int, count: int) -> int:
    """The length an array indexed by slot, ``length`` long and holding ``count`` slots,
    should have for ``slot``: grown by a quarter at least (an app scaled up a slot at a
    time), or left as it is for a slot far past the others, which is kept apart so that
    no array is sized by a number anyone can write."""
    if length <= slot < 2 * count + _DENSE_SLACK:
        return max(slot + 1, length + length // 4)
    return length


class AppSlots(Mapping[int, Versioned[ReplicaRecord]]):
    """A read-only mapping for its readers; the informer's state changes it (``put``,
    ``pop``) only while no snapshot holds it, and ``copy``s it first once one does."""

    __slots__ = ("_records", "_revisions", "_sparse")

    def __init__(self) -> None:
        self._records: dict[int, ReplicaRecord] = {}
        self._revisions = array("q")  # by slot; a slot without a record holds 0
        self._sparse: dict[int, int] | None = None  # revisions of slots past the array

    # ------------------------------------------------------------- reading

    def __getitem__(self, slot: int) -> Versioned[ReplicaRecord]:
        return Versioned(self._records[slot], self._revision(slot))

    def get(self, slot: int, default: Any = None) -> Any:
        record = self._records.get(slot)
        return default if record is None else Versioned(record, self._revision(slot))

    def record(self, slot: int) -> ReplicaRecord | None:
        """``slot``'s record alone (no ``Versioned`` made)."""
        return self._records.get(slot)

    def __contains__(self, slot: object) -> bool:
        return slot in self._records

    def __iter__(self) -> Iterator[int]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def items(self) -> ItemsView[int, Versioned[ReplicaRecord]]:
        return _Items(self)

    def values(self) -> ValuesView[Versioned[ReplicaRecord]]:
        return _Values(self)

    def _revision(self, slot: int) -> int:
        # A slot put past the array keeps its revision in ``_sparse`` though the array
        # has grown past it since: that one is looked for first.
        sparse = self._sparse
        if sparse is not None and slot in sparse:
            return sparse[slot]
        return self._revisions[slot]

    # ------------------------------------------------------------- changing

    def copy(self) -> AppSlots:
        copied = AppSlots()
        copied._records = dict(self._records)
        copied._revisions = array("q", self._revisions)
        copied._sparse = None if self._sparse is None else dict(self._sparse)
        return copied

    def put(self, slot: int, record: ReplicaRecord, revision: int) -> None:
        revisions = self._revisions
        wanted = room_for(slot, len(revisions), len(self._records))
        revisions.frombytes(bytes(8 * (wanted - len(revisions))))
        if 0 <= slot < len(revisions):
            revisions[slot] = revision
            if self._sparse is not None:  # (put past the array before it grew)
                self._drop_sparse(slot)
        else:
            if self._sparse is None:
                self._sparse = {}
            self._sparse[slot] = revision
        self._records[slot] = record

    def pop(self, slot: int) -> None:
        if self._records.pop(slot, None) is None:
            return
        if 0 <= slot < len(self._revisions):
            self._revisions[slot] = 0
        if self._sparse is not None:
            self._drop_sparse(slot)

    def _drop_sparse(self, slot: int) -> None:
        assert self._sparse is not None
        self._sparse.pop(slot, None)
        if not self._sparse:
            self._sparse = None


def _versioned(slots: AppSlots) -> Iterator[tuple[int, Versioned[ReplicaRecord]]]:
    """Each slot's record, without a lookup by slot in a Python method for each."""
    revisions, sparse = slots._revisions, slots._sparse
    if sparse is None:  # (nearly always)
        for slot, record in slots._records.items():
            yield slot, Versioned(record, revisions[slot])
        return
    for slot, record in slots._records.items():
        yield slot, Versioned(record, sparse[slot] if slot in sparse else revisions[slot])


class _Items(ItemsView[int, Versioned[ReplicaRecord]]):
    _mapping: AppSlots

    def __iter__(self) -> Iterator[tuple[int, Versioned[ReplicaRecord]]]:
        return _versioned(self._mapping)


class _Values(ValuesView[Versioned[ReplicaRecord]]):
    _mapping: AppSlots

    def __iter__(self) -> Iterator[Versioned[ReplicaRecord]]:
        return (versioned for _, versioned in _versioned(self._mapping))
