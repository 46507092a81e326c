"""Recent events in etcd: appended in batches, kept about an hour by a lease, listed and
followed by ``fleet events``. History survives a control-plane restart; old events
expire by themselves."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Sequence

from google.protobuf import json_format

from fleet.proto import fleet_pb2 as pb
from fleet.store._etcd import Etcd, Put
from fleet.store.keys import KeyLayout

__all__ = ["EventLog"]

KEEP_SECONDS = 3600
_LEASE_EVERY = 600  # a new lease every 10 minutes, each living KEEP + 10 minutes


_EVENTS_PER_KEY = 100  # events stored under one key, as a JSON list
# Keys per transaction: etcd refuses a request over 1.5 MiB, and 100 events of a
# kilobyte (messages are cut at 1,024 characters) make 100 KiB a key.
_KEYS_PER_TXN = 8


def _encode(events: Sequence[pb.Event]) -> bytes:
    return json.dumps([json_format.MessageToDict(e) for e in events]).encode()


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

    def __init__(self, etcd: Etcd, layout: KeyLayout) -> None:
        self._etcd = etcd
        self._keys = layout
        self._lease = 0
        self._lease_at = 0.0
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
        ops = [
            Put(
                self._keys.event(now_ns, source, next(self._seq) % 1_000_000),
                _encode(events[start : start + _EVENTS_PER_KEY]),
                lease,
            )
            for start in range(0, len(events), _EVENTS_PER_KEY)
        ]
        for start in range(0, len(ops), _KEYS_PER_TXN):
            await self._etcd.txn([], ops[start : start + _KEYS_PER_TXN])

    async def history(self) -> tuple[list[pb.Event], int]:
        kvs, revision = await self._etcd.get_prefix(self._keys.events())
        found = [e for kv in kvs for e in _decode(kv.value)]
        return found, revision

    async def follow(self, after_revision: int) -> AsyncIterator[pb.Event]:
        async for batch in self._etcd.watch_prefix(self._keys.events(), after_revision + 1):
            for change in batch:
                for event in _decode(change.value) if change.value is not None else []:
                    yield event
