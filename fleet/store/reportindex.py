"""An app's container reports by (slot, revision, host), held in chunks of slots.

The informer's snapshots share each app's reports copy-on-write: the first change after
a snapshot copied the app's whole index (2,000 reports, 73 KiB, at 2,000 replicas an
app). In a ramp nearly every app has a report written between two snapshots, and the
server took 30-50 snapshots a second, so each second copied hundreds of such dicts
(1.9 million entries in a 1,000-host apply); the snapshots alive held a version each.
In chunks of 64 slots, a change copies the chunk it touches (and the app's table of 32
chunks), the rest stays shared (#24 item 3).
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping
from typing import Any

from fleet.store.records import ContainerReport

__all__ = ["AppReportIndex", "ReportKey", "chunk_of"]

ReportKey = tuple[int, int, str]  # slot, revision, host

_CHUNK_BITS = 6  # 64 slots a chunk


class AppReportIndex(Mapping[ReportKey, ContainerReport]):
    """A read-only mapping for its readers; the informer's state changes it (``put``,
    ``pop``) only while no snapshot holds it, and copies a chunk a snapshot shares
    before it changes it (``shared``)."""

    __slots__ = ("_chunks", "_len")

    def __init__(self) -> None:
        self._chunks: dict[int, dict[ReportKey, ContainerReport]] = {}
        self._len = 0

    # ------------------------------------------------------------- reading

    def __getitem__(self, key: ReportKey) -> ContainerReport:
        chunk = self._chunks.get(key[0] >> _CHUNK_BITS)
        if chunk is None:
            raise KeyError(key)
        return chunk[key]

    def get(self, key: ReportKey, default: Any = None) -> Any:
        chunk = self._chunks.get(key[0] >> _CHUNK_BITS)
        return default if chunk is None else chunk.get(key, default)

    def __contains__(self, key: object) -> bool:
        try:
            chunk = self._chunks.get(key[0] >> _CHUNK_BITS)  # type: ignore[index]
        except (TypeError, IndexError):  # not a report's key
            return False
        return chunk is not None and key in chunk

    def __iter__(self) -> Iterator[ReportKey]:
        for chunk in self._chunks.values():
            yield from chunk

    def __len__(self) -> int:
        return self._len

    def items(self) -> ItemsView[ReportKey, ContainerReport]:
        return _Items(self)

    # ------------------------------------------------------------- changing

    def copy(self) -> AppReportIndex:
        """A copy sharing every chunk (to be changed with ``shared=True``)."""
        copied = AppReportIndex()
        copied._chunks = dict(self._chunks)
        copied._len = self._len
        return copied

    def put(self, key: ReportKey, report: ContainerReport, *, shared: bool) -> None:
        """``key``'s report is ``report``; ``shared``: its chunk may be a snapshot's."""
        at = key[0] >> _CHUNK_BITS
        chunk = self._chunks.get(at)
        if chunk is None:
            chunk = self._chunks[at] = {}
        elif shared:
            chunk = self._chunks[at] = dict(chunk)
        self._len += key not in chunk
        chunk[key] = report

    def pop(self, key: ReportKey, *, shared: bool) -> None:
        """``key`` has no report; ``shared``: its chunk may be a snapshot's."""
        at = key[0] >> _CHUNK_BITS
        chunk = self._chunks.get(at)
        if chunk is None or key not in chunk:
            return
        if len(chunk) == 1:
            del self._chunks[at]
        else:
            if shared:
                chunk = self._chunks[at] = dict(chunk)
            del chunk[key]
        self._len -= 1


def chunk_of(slot: int) -> int:
    """The chunk a slot's reports are in (what ``shared`` is tracked by)."""
    return slot >> _CHUNK_BITS


class _Items(ItemsView[ReportKey, ContainerReport]):
    """Chunk by chunk, without a lookup per key."""

    _mapping: AppReportIndex

    def __iter__(self) -> Iterator[tuple[ReportKey, ContainerReport]]:
        for chunk in self._mapping._chunks.values():
            yield from chunk.items()
