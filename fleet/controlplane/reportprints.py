"""What a session last wrote of each container of its host: a print by report key.

Held by every agent session for every container it reports (``ReportWriter``), so
100,000 of them at 100,000 replicas. As a dict of (app, slot, revision) tuples to ints
that was about 120 bytes a container (a key tuple of 64 bytes, an int of 32, the dict's
entry) and 2.6 KiB at 20 containers a host: 13 MiB at 5,000 hosts. Here a host's prints
are two sorted arrays (each key's hash, each print) and its keys packed in one bytes
object, read back only when a container may be gone: about 850 bytes at 20 (#24 item 3).

A key is found by its hash (Python's, 64 bits, keyed per process): two keys of one host
with the same hash would share a print, so one of them could go unwritten once in
about 2**57 pairs, and only for that host's own reports.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import chain

from fleet.store.records import shared

__all__ = ["ContainerPrints", "ReportKey"]

ReportKey = tuple[str, int, int]  # app, slot, revision


class ContainerPrints:
    """An immutable map of report keys to prints (``_print`` in ``reports``)."""

    __slots__ = ("_hashes", "_keys", "_prints")

    def __init__(self, keys: Sequence[ReportKey] = (), prints: Sequence[int] = ()) -> None:
        """``prints[i]`` is ``keys[i]``'s print."""
        hashes = list(map(hash, keys))
        order = sorted(range(len(hashes)), key=hashes.__getitem__)
        self._hashes = array("q", [hashes[i] for i in order])
        self._prints = array("q", [prints[i] for i in order])
        # App names are fleet names (no spaces), slots and revisions numbers. (One
        # format of them all: a tenth of the time of one a key.)
        ordered = tuple(chain.from_iterable(keys[i] for i in order))
        self._keys = (" ".join(["%s %d %d"] * len(order)) % ordered).encode()

    def get(self, key: ReportKey) -> int | None:
        hashes, wanted = self._hashes, hash(key)
        at = bisect_left(hashes, wanted)
        if at < len(hashes) and hashes[at] == wanted:
            return self._prints[at]
        return None

    def __contains__(self, key: object) -> bool:
        hashes = self._hashes
        try:
            wanted = hash(key)
        except TypeError:
            return False
        at = bisect_left(hashes, wanted)
        return at < len(hashes) and hashes[at] == wanted

    def __len__(self) -> int:
        return len(self._hashes)

    def __iter__(self) -> Iterator[ReportKey]:
        """The keys (made again from their packed form: for finding what is gone)."""
        words = self._keys.decode().split()
        for at in range(0, len(words), 3):
            yield sys.intern(words[at]), shared(int(words[at + 1])), shared(int(words[at + 2]))

    def items(self) -> Iterator[tuple[ReportKey, int]]:
        return zip(self, self._prints, strict=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContainerPrints):
            return NotImplemented
        return self._hashes == other._hashes and self._prints == other._prints

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ContainerPrints({dict(self.items())!r})"


EMPTY = ContainerPrints()
