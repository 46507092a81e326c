"""Agents' reports written to etcd for many hosts at once, off the heartbeat's path.

A session checks a heartbeat and hands it here; handling it ends there. The queue
keeps the newest unwritten heartbeat of each host (a heartbeat says everything the
host runs, so a newer one replaces an older one that was not written yet), and
writes what changed for every waiting host in transactions shared by many hosts.
One at a time per host: a host's next report is worked out only after its last one
is stored, so each ``ReportWriter`` diffs against what etcd holds.

At 1,000 hosts a transaction per report was thousands of small calls a second during
a ramp, each a round trip for the control plane's one CPU and an entry for etcd to
apply; shared transactions of up to ``TXN_KEYS`` keys are a few dozen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from fleet.controlplane.reports import Report, ReportWriter
from fleet.errors import FleetError
from fleet.proto import fleet_pb2 as pb
from fleet.store import HostReport, Store

__all__ = ["ReportQueue"]

log = logging.getLogger(__name__)

# Batches being written at once. With 4, in a 1,000-host ramp the queue sat waiting for
# one of them to finish up to half of every second while hundreds of hosts waited (etcd
# answers transactions that arrive together in one round); with 16 a report's p50 fell
# from 0.17-0.29 s to 0.14-0.17 s, its p99 from 1.2-2.1 s to 0.9-1.5 s.
_WRITES_IN_FLIGHT = 16
# A batch's reports are stored when its last transaction is, so a batch is bounded by
# the keys it writes as well as by its hosts. In the busiest second of a 1,000-host ramp
# batches of up to 200 hosts wrote up to 5,000 keys and each took 0.6-0.9 s: a report's
# p99 was 0.87-1.55 s (median 1.17 in 12 runs); bounded at 2,000 keys, 0.88-1.62 s
# (median 0.93 in 5), the peak about 35 MiB lower. (At 5,000 hosts no better: 1.00-1.74
# s against 0.79-1.15. A restart's first reports are a key a host, under the bound.)
# 100 hosts a batch whatever its keys held a 5,000-host ramp back (p99 4.42 s); 32
# batches in flight made both sizes worse.
_HOSTS_PER_BATCH = 200
_KEYS_PER_BATCH = 2_000
_HOSTS_PER_TURN = 20  # reports worked out between two turns of the loop's other work
# A batch is written once it has worked out this long (its first hosts' reports wait for
# its last): on a busy loop, 200 hosts' reports took up to 0.8 s to work out.
_TAKE_SECONDS = 0.1


@dataclass(slots=True)
class _Waiting:
    writer: ReportWriter
    session: int  # the host's session (its liveness key's revision)
    lease: int  # the serving replica's
    # The heartbeat as sent, parsed again when its report is worked out: parsed, one of
    # 20 containers holds 10.5 KiB (4 KB as sent), and in a restart's storm at 5,000
    # hosts nearly every host's first heartbeat waits here at once (the server grew by
    # about 50 MiB while they did). Serializing and parsing it again: 4 us.
    heartbeat: bytes
    received: float  # monotonic: when the session read it
    checked: bool  # its containers were checked one by one (``ReportWriter.check``)


@dataclass(slots=True)
class _Taken:
    """A host's report being written: what its write needs of the heartbeat it was worked
    out from, not the heartbeat. A parsed heartbeat of 100 containers holds 48 KB (21 KB
    as sent), and a ramp has up to ``_WRITES_IN_FLIGHT`` batches of ``_HOSTS_PER_BATCH``
    hosts in flight, each heartbeat held until its batch was stored."""

    writer: ReportWriter
    session: int
    lease: int
    received: float
    report: Report


class ReportQueue:
    """``submit`` from sessions, ``run`` as one task; ``observe_write`` is called with
    the seconds from a heartbeat's arrival to its report being stored."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[str, _Waiting] = {}  # host -> its newest unwritten heartbeat
        self._writing: set[str] = set()  # hosts with a batch in flight
        self._ready = asyncio.Event()
        self._failing = False  # the last batch failed (logged once per streak)
        self.observe_write: Callable[[float], None] | None = None
        self.observe_batch: Callable[[float], None] | None = None  # a batch's etcd time

    def submit(
        self,
        writer: ReportWriter,
        session: int,
        lease: int,
        heartbeat: pb.Heartbeat,
        *,
        checked: bool = False,
    ) -> None:
        """Queue a heartbeat of ``writer``'s host's ``session`` that ``writer.check``
        passed (``checked``: what it said), its keys to be bound to ``lease`` (it
        replaces one not written yet)."""
        waiting = self._waiting.get(writer.host_id)
        if waiting is not None and waiting.session > session:
            return  # a session the host has since replaced: its writes would fail anyway
        self._waiting[writer.host_id] = _Waiting(
            writer, session, lease, heartbeat.SerializeToString(), time.monotonic(), checked
        )
        self._ready.set()

    def forget(self, host_id: str, session: int) -> None:
        """The host's ``session`` ended: its unwritten heartbeat goes with it."""
        waiting = self._waiting.get(host_id)
        if waiting is not None and waiting.session == session:
            del self._waiting[host_id]

    async def run(self) -> None:
        writes: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while len(writes) >= _WRITES_IN_FLIGHT:
                    _, writes = await asyncio.wait(writes, return_when=asyncio.FIRST_COMPLETED)
                batch = await self._take()
                if batch:
                    writes.add(asyncio.create_task(self._write(batch)))
        finally:
            for task in writes:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _take(self) -> list[_Taken]:
        """Up to a batch of waiting hosts with nothing in flight, with what to write
        (up to ``_HOSTS_PER_BATCH`` hosts or ``_KEYS_PER_BATCH`` keys, or what
        ``_TAKE_SECONDS`` worked out). The loop runs its other work every few hosts:
        working out 200 hosts' reports at once held it for a large part of a second in
        a ramp."""
        now = started = time.monotonic()
        batch: list[_Taken] = []
        keys = 0
        for n, host_id in enumerate(list(self._waiting)):
            if n and n % _HOSTS_PER_TURN == 0:
                await asyncio.sleep(0)
                now = time.monotonic()
                if batch and now - started >= _TAKE_SECONDS:
                    self._ready.set()  # the rest go in the next batch
                    break
            if host_id in self._writing:
                continue
            waiting = self._waiting.pop(host_id, None)
            if waiting is None:
                continue  # its session ended meanwhile (``forget``)
            try:
                heartbeat = pb.Heartbeat.FromString(waiting.heartbeat)
                report = waiting.writer.report(heartbeat, now, checked=waiting.checked)
            except FleetError as error:  # the session checked it: not expected
                log.warning("host %s: report not stored: %s", host_id, error)
                continue
            if report is None:  # nothing changed, and the usage is fresh enough
                self._observe(waiting.received, now)
                continue
            # In flight from now, not from when its batch's write starts: a newer
            # heartbeat that came during this take's turns must wait for this one to be
            # written, or the next take could send it in a batch of its own that lands
            # first, and this older report over it.
            self._writing.add(host_id)
            batch.append(
                _Taken(waiting.writer, waiting.session, waiting.lease, waiting.received, report)
            )
            keys += len(report.changed) + len(report.gone) + (report.status is not None)
            if len(batch) >= _HOSTS_PER_BATCH or keys >= _KEYS_PER_BATCH:
                self._ready.set()  # the rest go in the next batch
                break
        return batch

    async def _write(self, batch: list[_Taken]) -> None:
        hosts = {taken.writer.host_id for taken in batch}  # in flight (``_take``)
        began = time.monotonic()
        try:
            errors = await self._store.report_many(
                [
                    HostReport(
                        t.writer.host_id,
                        t.session,
                        t.lease,
                        t.report.status,
                        t.report.changed,
                        t.report.gone,
                    )
                    for t in batch
                ]
            )
        except Exception:  # a bug: say so, and let the hosts' next heartbeats try again
            log.exception("writing %d host report(s) failed", len(batch))
            return
        finally:
            self._writing -= hosts
            if self._waiting:
                self._ready.set()  # heartbeats that came meanwhile
        now = time.monotonic()
        if self.observe_batch is not None:
            self.observe_batch(now - began)
        for taken, error in zip(batch, errors, strict=True):
            if error is None:
                taken.writer.written(taken.report, now)
                self._observe(taken.received, now)
        # A report not stored is not marked written: the host's next heartbeat has it.
        failed = [error for error in errors if error is not None]
        if failed and not self._failing:
            log.warning(
                "%d of %d host report(s) not stored (%s); retrying at their next heartbeat",
                len(failed),
                len(batch),
                failed[0],
            )
        self._failing = bool(failed)

    def _observe(self, received: float, now: float) -> None:
        if self.observe_write is not None:
            self.observe_write(now - received)
