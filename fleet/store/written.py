"""Records this process wrote, held until its watch shows them, so that the informer
takes the record it already has instead of decoding and validating the bytes it was
dumped into.

An agent's report is checked as its heartbeat comes, made into a record, dumped and
written; the watch then brings the same bytes back. Decoding records was 184 of the
informer's 396 samples in a profile of a 100,000-replica ramp at 1,000 hosts, where
about 300,000 container reports are written. A record is taken only for the bytes it
was dumped into (by their digest), so the informer's state is what decoding them would
give (``SlottedRecord.model_construct`` is held equal to the decoded record by a
property test). The watch stays the one way the state changes; a record not taken is
decoded.

What is held is the record and a digest of its bytes, not the bytes: in a 5,000-host
ramp the watch fell 22,000-31,000 reports behind the writes, and their bytes (about 400
each) were held until it caught up, long after their transactions were done with them.

Only reports are held. The controller's replica records held the same way ran the
1,000-host benchmark into its hollow hosts' collapse in two runs of four, not
understood yet (``benchmarks/README.md``, session 30).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["Written"]

# At most this many records held: past it, the oldest are let go (decoded when their
# event comes), so that nothing stays for good whatever goes wrong.
_MOST = 50_000


class Written:
    """``hold`` each record with its key and bytes as it is sent; ``take`` it as the
    watch shows that key with those bytes; ``drop`` it if its write failed."""

    def __init__(self, most: int = _MOST) -> None:
        # hash(key) -> (its value's digest, record), oldest first. By the key's hash, not
        # the key (an int of 32 bytes, a report's key 90): a record is taken only if the
        # value's digest matches too, so two keys sharing a hash by chance (once in 2**64)
        # cost at most a decode. An OrderedDict, not a dict: letting the oldest go from a
        # dict (``next(iter(d))``) walks past every entry deleted before it (100,000
        # holds past the bound, the watch behind: 1.4 s so, 0.2 s this way).
        self._held: OrderedDict[int, tuple[int, Any]] = OrderedDict()
        self._most = most

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, key: bytes, value: bytes, record: Any) -> None:
        held = self._held
        at = hash(key)
        held[at] = (_digest(value), record)
        held.move_to_end(at)  # the newest write of a key goes last
        if len(held) > self._most:
            held.popitem(last=False)

    def take(self, key: bytes, value: bytes) -> Any | None:
        """The record written as ``value`` at ``key``, once; None if none is held (an
        older write of the key seen first keeps the newer one held)."""
        at = hash(key)
        held = self._held.get(at)
        if held is None or held[0] != _digest(value):
            return None
        del self._held[at]
        if not self._held:
            self._held.clear()  # gives back the table a ramp grew (a dict never shrinks)
        return held[1]

    def clear(self) -> None:
        """Let everything go: the informer listed the state again, and the watch shows
        nothing it listed (a record written since is decoded when its event comes)."""
        self._held = OrderedDict()

    def drop(self, key: bytes, value: bytes) -> None:
        at = hash(key)
        held = self._held.get(at)
        if held is not None and held[0] == _digest(value):
            del self._held[at]


def _digest(value: bytes) -> int:
    # Python's hash of the bytes (SipHash, keyed per process): two values one key is
    # written with share one by chance once in 2**64, and it costs a tenth of the
    # microsecond a BLAKE2b digest does (a 100,000-replica ramp writes about 300,000
    # reports, each digested twice).
    return hash(value)
