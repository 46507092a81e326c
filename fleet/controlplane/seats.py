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

Only a lease whose holder is gone is taken: the record names the machine's boot and the
holder's pid, and a holder still running (or on another machine: a seat copied there,
two replicas given one ``--server-id``) keeps its lease; the newcomer grants its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from fleet.store.records import ServingRecord

__all__ = ["boot_id", "held_here", "process_alive", "seat_of", "why_not_taken"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_NOT_IN_SEAT = re.compile(r"[^a-z0-9.-]+")
_SEAT_MAX = 253

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
