"""Hosts out for maintenance: the cluster-wide semaphore (locksmith's) whose slots they
hold, and the drain record a ``fleet drain`` puts a host in. Pure functions over the
records; the API and the upgrade walk (``upgrades``) write what they return.

A host holds a slot from its drain (manual, or by the upgrade walk) until it is
uncordoned or removed; a manual drain holds one as the walk's hosts do, so the two
never take more hosts out together than the semaphore allows.
"""

from __future__ import annotations

from collections.abc import Mapping

from fleet._time import iso_at
from fleet.store.records import HostDrain, HostRecord, MaintenanceRecord

__all__ = ["drain_record", "may_take_slot", "release_slot", "semaphore_full"]


def may_take_slot(
    semaphore: MaintenanceRecord,
    holders: Mapping[str, str],
    host_id: str,
    *,
    walk_parallel: int = 0,
) -> bool:
    """Whether ``host_id`` may hold a slot while ``holders`` hold theirs (the stored
    ``semaphore``'s, or a copy a step is changing): it holds one already, or fewer than
    the limit are held. The limit depends, on purpose, on who asks:

    - ``fleet drain`` (``walk_parallel`` 0): the stored ``semaphore.max``. A full
      semaphore refuses the drain, saying who holds the slots (``semaphore_full``).
    - the upgrade walk (``walk_parallel``: its ``--max-parallel``, at least 1): that
      raises the limit, ``max(semaphore.max, walk_parallel)``, the max the walk's step
      stores in the same transaction; a full semaphore makes the walk wait.
    """
    return host_id in holders or len(holders) < max(semaphore.max, walk_parallel)


def semaphore_full(semaphore: MaintenanceRecord, holders: Mapping[str, str]) -> str:
    """Why ``fleet drain`` may not take a slot, and how each holder gives its slot back
    (never by starting something pool-wide, as an upgrade walk)."""
    held = ", ".join(f"{h} ({why})" for h, why in sorted(holders.items()))
    ways = ["a drained host gives its slot back when uncordoned (`fleet uncordon HOST`)"]
    if any(why == "upgrade-hosts" for why in holders.values()):
        ways.append(
            "the upgrade walk gives back its own when it ends (`fleet upgrade-hosts --cancel`)"
        )
    if semaphore.fleetlock:
        ways.append(
            "a host that took its slot through FleetLock and never came back gives it "
            "back with `fleet hosts release HOST`"
        )
    return (
        f"the maintenance semaphore is full: {len(holders)} of {semaphore.max} slot(s) held "
        f"by {held}; " + "; ".join(ways)
    )


def release_slot(semaphore: MaintenanceRecord, host_id: str) -> MaintenanceRecord:
    """``semaphore`` with ``host_id``'s slot given back (uncordoned, or removed)."""
    holders = {h: why for h, why in semaphore.holders.items() if h != host_id}
    locks = {h: hold for h, hold in semaphore.fleetlock.items() if h != host_id}
    return semaphore.model_copy(update={"holders": holders, "fleetlock": locks})


def drain_record(
    host: HostRecord,
    *,
    deadline_seconds: float,
    force: bool,
    include_global: bool,
    by: str,
    now: float,
) -> HostRecord:
    """``host`` put to draining at ``now`` (epoch seconds): a drain already under way
    keeps when it started, and a host already drained empty stays as it is.
    ``deadline_seconds`` 0 sets no deadline."""
    if host.state == "drained" and host.drain is not None:
        return host  # already empty: draining again changes nothing
    deadline = iso_at(now + deadline_seconds) if deadline_seconds else ""
    drain = HostDrain(
        started_at=host.drain.started_at if host.drain else iso_at(now),
        deadline_at=deadline,
        force=force,
        include_global=include_global,
        by=by,
    )
    return host.model_copy(update={"state": "draining", "drain": drain})
