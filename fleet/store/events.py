"""Recent events in etcd: appended in batches, kept about an hour by a lease and within
a cap on their total size (the oldest go first), read a page at a time and followed by
``fleet events``. History survives a control-plane restart; old events expire by
themselves.

Each key holds a batch (a JSON list) and names its value's size, so the total can be
bounded from a keys-only read; a reader never holds more than a page of batches.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from fleet.errors import Unavailable
from fleet.proto import fleet_pb2 as pb
from fleet.store._etcd import DeleteRange, Etcd, Put, prefix_end
from fleet.store.keys import KeyLayout

__all__ = ["MAX_BYTES", "EventLog"]

log = logging.getLogger(__name__)

KEEP_SECONDS = 3600
_LEASE_EVERY = 600  # a new lease every 10 minutes, each living KEEP + 10 minutes
# The most the stored events may weigh: 345 MB of them once made `fleet events` fail
# for everyone. About 100,000 events of typical length (30,000 of the longest).
MAX_BYTES = 32 * 1024 * 1024
_TRIM_EVERY = 5.0  # seconds between checks of the total, at most
_PAGE_KEYS = 20  # batches read at once: at most 2,000 events, about 2 MiB

_EVENTS_PER_KEY = 100  # events stored under one key, as a JSON list
# Keys per transaction: etcd refuses a request over 1.5 MiB, and 100 events of a
# kilobyte (messages are cut at 1,024 characters) make 100 KiB a key.
_KEYS_PER_TXN = 8

Wanted = Callable[[pb.Event], bool]


# An event's fields as ``json_format.MessageToDict`` names them. Every field is a
# string or a 32-bit number (JSON values as they are), so an event's dict is its fields
# not at their default, in field order: what MessageToDict makes, at a fraction of its
# cost (it was 4% of the control plane's cpu while 100,000 containers started).
_EVENT_FIELDS = tuple((f.name, f.json_name) for f in pb.Event.DESCRIPTOR.fields)
_PLAIN = {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32}
assert all(
    f.type in _PLAIN and not f.is_repeated and not f.has_presence
    for f in pb.Event.DESCRIPTOR.fields
), "an Event field that is not a plain string or 32-bit number: _event_dict must learn it"


def _event_dict(event: pb.Event) -> dict[str, object]:
    return {
        json_name: value for name, json_name in _EVENT_FIELDS if (value := getattr(event, name))
    }


def _encode(events: Sequence[pb.Event]) -> bytes:
    return json.dumps([_event_dict(e) for e in events]).encode()


def _decode(raw: bytes) -> list[pb.Event]:
    """The events under one key: a list (a batch), or one event (as stored before)."""
    try:
        found = json.loads(raw)
        items = found if isinstance(found, list) else [found]
        return [json_format.ParseDict(item, pb.Event()) for item in items]
    except (ValueError, TypeError, json_format.ParseError):
        return []


class EventLog:
    """Appends events under ``events/`` with a rolling lease; lists and follows them."""

    def __init__(self, etcd: Etcd, layout: KeyLayout, *, max_bytes: int = MAX_BYTES) -> None:
        self._etcd = etcd
        self._keys = layout
        self._max_bytes = max_bytes
        self._lease = 0
        self._lease_at = 0.0
        self._trimmed_at = 0.0
        self._seq = itertools.count()

    async def _current_lease(self) -> int:
        now = time.monotonic()
        if not self._lease or now - self._lease_at > _LEASE_EVERY:
            self._lease = await self._etcd.grant(KEEP_SECONDS + _LEASE_EVERY)
            self._lease_at = now
        return self._lease

    async def append(self, source: str, events: Sequence[pb.Event]) -> None:
        """Store ``events``: up to ``_EVENTS_PER_KEY`` under one key (at 100,000
        containers starting, a key per event made the agents' events half of etcd's
        writes), ``_KEYS_PER_TXN`` keys a transaction; keys sort by time."""
        if not events:
            return
        lease = await self._current_lease()
        now_ns = time.time_ns()
        ops = []
        for start in range(0, len(events), _EVENTS_PER_KEY):
            value = _encode(events[start : start + _EVENTS_PER_KEY])
            key = self._keys.event(now_ns, source, next(self._seq) % 1_000_000, len(value))
            ops.append(Put(key, value, lease))
        for start in range(0, len(ops), _KEYS_PER_TXN):
            await self._etcd.txn([], ops[start : start + _KEYS_PER_TXN])
        if time.monotonic() - self._trimmed_at >= _TRIM_EVERY:
            self._trimmed_at = time.monotonic()
            await self.trim()

    async def trim(self) -> int:
        """Delete the oldest batches until the rest weigh at most ``max_bytes``; how
        many went. Any control plane may do it: deleting a range is idempotent."""
        folder = self._keys.events()
        kvs, _, _ = await self._etcd.get_range(folder, prefix_end(folder), keys_only=True)
        total = sum(KeyLayout.event_size(kv.key) for kv in kvs)
        cut = 0
        while cut < len(kvs) and total > self._max_bytes:
            total -= KeyLayout.event_size(kvs[cut].key)
            cut += 1
        if cut:
            await self._etcd.txn([], [DeleteRange(folder, kvs[cut - 1].key + b"\0")])
        return cut

    async def keep_trimmed(self, every: float = 30.0) -> None:
        """``trim`` at once, then every ``every`` seconds, until cancelled (the leader)."""
        while True:
            try:
                if await self.trim():
                    log.info("dropped the oldest event batches: over %d bytes", self._max_bytes)
            except Unavailable as error:
                log.warning("events not trimmed: %s", error)
            await asyncio.sleep(every)

    async def pages(
        self, since_ns: int = 0, revision: int = 0
    ) -> AsyncIterator[tuple[list[pb.Event], int]]:
        """The kept events from ``since_ns`` on, oldest first, a page of batches at a
        time, all read at one revision (yielded with each page, to follow from)."""
        start, end = self._keys.events_since(since_ns), prefix_end(self._keys.events())
        while True:
            kvs, revision, more = await self._etcd.get_range(
                start, end, revision=revision, limit=_PAGE_KEYS
            )
            yield [e for kv in kvs for e in _decode(kv.value)], revision
            if not more or not kvs:
                return
            start = kvs[-1].key + b"\0"

    async def newest(
        self, count: int, wanted: Wanted, since_ns: int = 0
    ) -> tuple[list[pb.Event], int]:
        """The last ``count`` events that ``wanted`` keeps (oldest first), read from the
        newest batches back, a page at a time; and the revision read."""
        folder_end = prefix_end(self._keys.events())
        keys, revision, _ = await self._etcd.get_range(
            self._keys.events_since(since_ns), folder_end, keys_only=True
        )
        found: list[pb.Event] = []
        upto = len(keys)
        while upto > 0 and len(found) < count:
            first = max(0, upto - _PAGE_KEYS)
            kvs, _, _ = await self._etcd.get_range(
                keys[first].key, keys[upto - 1].key + b"\0", revision=revision
            )
            found = [e for kv in kvs for e in _decode(kv.value) if wanted(e)] + found
            upto = first
        return found[-count:], revision

    async def history(self) -> tuple[list[pb.Event], int]:
        """Every kept event (tests and small tools; ``pages`` for the API)."""
        found: list[pb.Event] = []
        read_at = 0
        async for page, read_at in self.pages():  # noqa: B007 (the last page's revision)
            found += page
        return found, read_at

    async def follow(self, after_revision: int) -> AsyncIterator[pb.Event]:
        async for batch in self._etcd.watch_prefix(self._keys.events(), after_revision + 1):
            for change in batch:
                for event in _decode(change.value) if change.value is not None else []:
                    yield event
