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

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fleet.store.records import ServingRecord

__all__ = ["Comeback", "boot_id", "held_here", "process_alive", "seat_of", "why_not_taken"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_NOT_IN_SEAT = re.compile(r"[^a-z0-9.-]+")
_SEAT_MAX = 253

# The longest wait for the hosts taken over, in times their first wait (see Comeback).
COMEBACK_MAX_FACTOR = 4.0

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
