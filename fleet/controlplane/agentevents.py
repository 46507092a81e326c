"""Agents' events on their way to the event log: stamped with the session's host,
cleaned of what must not reach a terminal, counted and held to a rate by the gate
(``eventgate``), and stored for all hosts together, in as few transactions as fit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from fleet._text import strip_control
from fleet.controlplane._tasks import running
from fleet.controlplane.eventgate import EventGate, GateLimits
from fleet.controlplane.registration import MAX_TEXT
from fleet.errors import FleetError, InvalidArgument
from fleet.proto import fleet_pb2 as pb
from fleet.store.events import EventLog

__all__ = ["AgentEvents"]

log = logging.getLogger(__name__)

_MAX_EVENTS_PER_BATCH = 500
# Agents' events waiting to be stored; past this (etcd away for long) new ones are dropped.
_EVENT_BACKLOG = 100_000


class AgentEvents:
    def __init__(self, events: EventLog, limits: GateLimits | None = None) -> None:
        self._log = events
        self.gate = EventGate(limits)
        self._backlog: list[pb.Event] = []
        self._waiting = asyncio.Event()
        self._dropped = 0
        self._writer: asyncio.Task[None] | None = None

    def queue(self, host_id: str, events: Sequence[pb.Event]) -> None:
        """Queue an agent's events as its own: host and source come from the session
        (its certificate), never from what the agent wrote. They are stored by
        ``_store``, for all hosts together: the session reads on meanwhile."""
        if len(events) > _MAX_EVENTS_PER_BATCH:
            raise InvalidArgument(f"at most {_MAX_EVENTS_PER_BATCH} events per batch")
        if len(self._backlog) + len(events) > _EVENT_BACKLOG:
            self._dropped += len(events)
            return
        copies = []
        for event in events:
            copy = pb.Event()
            copy.CopyFrom(event)
            copy.host = host_id
            copy.source = "agent"
            copy.count = 0  # counted here, by the gate, not by the agent
            # What an agent writes reaches operators' terminals: no escape sequences.
            copy.message = strip_control(copy.message[:MAX_TEXT])
            copy.kind = strip_control(copy.kind[:64])
            copy.app = strip_control(copy.app[:63])
            copy.container_id = strip_control(copy.container_id[:80])
            copy.time = strip_control(copy.time[:40])
            copies.append(copy)
        # Repeats are counted and floods held to a rate, with a notice of what was not
        # stored (the gate's doc says how).
        self._backlog += self.gate.admit(host_id, copies, time.time())
        self._waiting.set()
        self._writer = running(self._writer, self._store, "agent-events")

    async def _store(self) -> None:
        """Store what agents sent since the last write, in as few transactions as fit
        (at 100,000 containers starting, a write per agent's batch was thousands a
        second)."""
        while True:
            # Also woken every second: repeats whose window ended and drop notices are
            # owed even when no agent sends anything.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # (not wait_for: it may swallow a cancel)
                    await self._waiting.wait()
            self._waiting.clear()
            batch, self._backlog = self._backlog, []
            batch += self.gate.due(time.time())
            if not batch:
                continue
            if self._dropped:
                log.warning("%d agent event(s) dropped: etcd fell behind", self._dropped)
                self._dropped = 0
            try:
                await self._log.append("agents", batch)
            except FleetError as error:
                log.warning("%d agent event(s) not stored: %s", len(batch), error)

    async def close(self, grace: float = 2.0) -> None:
        """Stop the writer, then store what was still queued (a stopping control plane
        keeps what its agents said last, their ``agent-stopped`` among it, and the repeats
        its gate counted in windows not yet ended), giving up after ``grace`` seconds. A
        write the writer was cut off in is lost."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        batch, self._backlog = self._backlog, []
        batch += self.gate.flush(time.time())  # the repeats counted in open windows too
        if not batch:
            return
        try:
            async with asyncio.timeout(grace):
                await self._log.append("agents", batch)
        except FleetError as error:
            log.warning("%d agent event(s) not stored before stopping: %s", len(batch), error)
        except TimeoutError:
            log.warning("%d agent event(s) not stored: etcd took over %gs", len(batch), grace)
