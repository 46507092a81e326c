"""A control plane replica's seat (where it serves) and the lease its hosts' keys are
bound to, taken over by the replica restarted in that seat.

A replica binds every key of the hosts it serves (liveness, status, container reports)
to one etcd lease of its own. Restarted, it used to grant a new one: as its agents
reconnected, each host's keys were deleted and written again under the new lease,
100,000 report keys at 5,000 hosts, each read by every watcher twice, and the old
lease's keys expired on top (#24 item 6). So the lease is recorded under the replica's
seat (``serving/<seat>``, bound to the lease itself), and a replica starting in the same
seat on the same machine takes it over while it is alive: the hosts' keys stay, a
reconnecting agent's session keeps its reports, and its writer starts from them, so a
reconnect writes only what changed.

The hosts whose keys come with the lease are waited for (``Comeback``): while they keep
coming back (at 5,000 hosts a storm of reconnects takes a while), and then one TTL more
for the rest, which are then marked down as hosts silent for a TTL are.

Only a lease whose holder is gone is taken: the record names the machine's boot and the
holder's pid, and a holder still running (or on another machine: a seat copied there,
two replicas given one ``--server-id``) keeps its lease; the newcomer grants its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fleet.errors import FleetError
from fleet.store import Store
from fleet.store.leases import LeaseKeeper
from fleet.store.records import ServingRecord

__all__ = [
    "AGENTS_BACK_WITHIN",
    "Comeback",
    "ServingLease",
    "boot_id",
    "held_here",
    "process_alive",
    "seat_of",
    "why_not_taken",
]

log = logging.getLogger(__name__)

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_NOT_IN_SEAT = re.compile(r"[^a-z0-9.-]+")
_SEAT_MAX = 253

# The longest wait for the hosts taken over, in times their first wait (see Comeback).
COMEBACK_MAX_FACTOR = 4.0
# An agent that lost its control plane tries again within this (its reconnect backoff's
# cap, ``AgentConfig.reconnect_max``).
AGENTS_BACK_WITHIN = 10.0
_COMEBACK_TICK = 1.0  # seconds between looks at the hosts taken over that are not back

# Seats held by replicas running in this process (tests run several): a pid check
# cannot tell them apart, as every one has this pid.
held_here: set[str] = set()


def seat_of(server_id: str, hostname: str, port: int) -> str:
    """The seat of a replica: its ``--server-id`` when given, else its machine's name and
    its port; made fit for a key (lowercase, letters, digits, dots and dashes)."""
    text = server_id or f"{hostname}-{port}"
    seat = _NOT_IN_SEAT.sub("-", text.lower())
    seat = re.sub(r"\.{2,}", ".", seat)[:_SEAT_MAX].strip("-.")
    return seat or f"replica-{port}"


def boot_id() -> str:
    """This machine's boot, as the kernel names it ("" where it does not)."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (in this pid namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's: running
    return True


def why_not_taken(
    record: ServingRecord,
    *,
    seat: str,
    boot: str,
    pid: int,
    alive: Callable[[int], bool] = process_alive,
) -> str | None:
    """Why the lease ``record`` names may not be taken over by this process (``pid``,
    on the machine booted as ``boot``); None when it may: its holder is gone (pure but
    for ``alive``)."""
    if seat in held_here:
        return "a replica in this process holds it"
    if not boot or record.boot_id != boot:
        return "it was held on another machine, or before a reboot"
    if record.pid != pid and alive(record.pid):
        return f"its holder (pid {record.pid}) is still running"
    return None


@dataclass
class Comeback:
    """The hosts whose keys a replica took over with its predecessor's lease, waited for
    until each is back (pure: time is a parameter).

    Each is given ``ttl`` (the host TTL) plus ``back_within`` (an agent's reconnect
    backoff at most) from the takeover to come back, as a host silent for a TTL would
    be; and while others keep coming back, until none has for a ``ttl``: a thousand
    agents reconnecting at once are let in one by one, and the last are not down for
    it. At most ``COMEBACK_MAX_FACTOR`` times the first wait."""

    started: float
    ttl: float
    back_within: float
    waiting: dict[str, int]  # host id -> the session taken over (its liveness key's)
    last_back: float = field(default=-math.inf)

    def back(self, host_id: str, now: float) -> None:
        """``host_id`` registered again."""
        if self.waiting.pop(host_id, None) is not None:
            self.last_back = now

    def given_up(self, now: float) -> bool:
        """Whether the hosts still waited for are to be marked down at ``now``."""
        first = self.ttl + self.back_within
        waited = now - self.started
        if waited >= COMEBACK_MAX_FACTOR * first:
            return True
        return waited >= first and now - self.last_back >= self.ttl


class ServingLease:
    """A replica's seat and its lease, which the keys of every host it serves are bound
    to: taken over from the replica that served in the seat before (``take``), or
    granted at the first registration and again once lost (``current``)."""

    def __init__(self, store: Store, keeper: LeaseKeeper, *, server_id: str, ttl: int) -> None:
        self._store = store
        self._keeper = keeper
        self._server_id = server_id
        self._ttl = ttl
        self._boot = boot_id()
        self._seat = ""  # where this replica serves: its lease is recorded there
        self._lease: int | None = None
        self._lock = asyncio.Lock()
        self._comeback: Comeback | None = None  # the hosts taken over, until back
        self._comeback_task: asyncio.Task[None] | None = None
        self._stopping = False

    async def take(self, seat: str) -> None:
        """Serve from ``seat`` (before any agent registers): take over the lease of the
        replica that served there before, if it is alive and its holder gone. Its hosts'
        keys stay, and the hosts are waited for (``Comeback``); those that do not come
        back are marked down."""
        self._seat = seat
        record = await self._store.get_serving(seat)
        why = (
            "none recorded"
            if record is None
            else why_not_taken(record, seat=seat, boot=self._boot, pid=os.getpid())
        )
        held_here.add(seat)
        if record is None or why is not None:
            log.info("serving as %s with a new lease (the last one's: %s)", seat, why)
            return
        ttl = await asyncio.to_thread(self._keeper.renew_now, record.lease)
        if ttl <= 0:
            log.info("serving as %s with a new lease: the last one has expired", seat)
            return
        async with self._lock:
            self._keeper.hold(record.lease, ttl)
            self._lease = record.lease
            await self._record(record.lease)
        sessions = await self._store.sessions_on(record.lease)
        self._comeback = Comeback(time.monotonic(), self._ttl, AGENTS_BACK_WITHIN, dict(sessions))
        self._comeback_task = asyncio.create_task(
            self._await_comeback(self._comeback), name="comeback"
        )
        log.info(
            "serving as %s with the lease of %s (pid %d), and its %d hosts' keys",
            seat,
            record.server,
            record.pid,
            len(sessions),
        )

    async def current(self) -> int:
        """The lease a registering host's keys are bound to: the one held, or a new one
        when none is or it was lost (the sessions on the lost one end, and reconnect)."""
        async with self._lock:
            if self._lease is None or self._keeper.lost(self._lease) is not None:
                if self._lease is not None:
                    self._keeper.release(self._lease)
                self._lease = await self._store.grant_lease(self._ttl)
                self._keeper.hold(self._lease, self._ttl)
                await self._record(self._lease)
            return self._lease

    def back(self, host_id: str) -> None:
        """``host_id`` registered: no longer waited for, if it was taken over."""
        if self._comeback is not None:
            self._comeback.back(host_id, time.monotonic())

    def stopping(self) -> None:
        """The server is stopping: the hosts taken over and not back are left as they
        are, for the next replica in this seat."""
        self._stopping = True

    def close(self) -> None:
        """Stop waiting for the hosts taken over and let the lease go from the keeper (not
        revoked: the replica restarted in this seat takes it over)."""
        if self._comeback_task is not None:
            self._comeback_task.cancel()
        if self._lease is not None:
            self._keeper.release(self._lease)
        held_here.discard(self._seat)

    async def _record(self, lease: int) -> None:
        if self._seat:
            record = ServingRecord(
                server=self._server_id, lease=lease, boot_id=self._boot, pid=os.getpid()
            )
            await self._store.put_serving(self._seat, record)

    async def _await_comeback(self, comeback: Comeback) -> None:
        """Mark down the hosts taken over that did not come back (see ``Comeback``)."""
        # (Polled: the deadline moves with every host that comes back.)
        while comeback.waiting and not comeback.given_up(time.monotonic()):  # noqa: ASYNC110
            await asyncio.sleep(_COMEBACK_TICK)
        self._comeback = None
        if self._stopping:
            return
        down = []
        for host_id, session in comeback.waiting.items():
            try:
                # Unless a newer session holds it: its agent went to another replica.
                if await self._store.mark_gone(host_id, session):
                    down.append(host_id)
            except FleetError as error:
                log.warning("host %s: could not mark it down: %s", host_id, error)
        if down:
            log.warning(
                "%d of the hosts this replica took over did not come back: marked down (%s%s)",
                len(down),
                ", ".join(sorted(down)[:10]),
                ", ..." if len(down) > 10 else "",
            )
