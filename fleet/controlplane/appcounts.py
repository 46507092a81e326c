"""Each app's counts (``get apps``, ``rollout status``, /metrics) kept up to date slot by
slot: a change of one replica or one report recounts that slot, not the app.

During a large apply every app's reports change every second, so a memo of each app's
whole walk was recomputed at every ``get apps``: at 100,000 replicas a call walked
them all on the server's one thread, and answered in seconds. Here a ``_Tally`` per
app holds each slot's part of the counts and the sums, and follows the informer's slot
log (``Changes.slot_logs``: the slots whose replica or reports changed, in order) to
recount only the slots that changed since it last looked. The app record's revision
and ``min_ready`` (what every slot is judged by), another log (the informer listed
again, the log was long) or an older state than the last one mean a recount of all.
"""

from __future__ import annotations

import bisect
import math
import threading
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleet.controlplane.availability import Observed, trouble
from fleet.store import ClusterState
from fleet.store.appslots import room_for
from fleet.store.records import AppRecord, ContainerReport, ReplicaRecord

__all__ = [
    "CountsCache",
    "PlainSlot",
    "RolloutCounts",
    "SlotCounts",
    "Tally",
    "count_all",
    "slot_counts",
]


@dataclass(frozen=True)
class RolloutCounts:
    """An app's replicas as ``fleet get apps`` and ``rollout status`` count them."""

    running: int  # containers running, of any revision, replacements included
    available: int  # available containers, of any revision
    updated: int  # slots with a container of the current revision
    updated_available: int  # slots with an available container of the current revision
    total: int  # containers wanted, replacements included


@dataclass(frozen=True, slots=True)
class SlotCounts:
    """One slot's part of its app's counts."""

    running: int  # its containers running
    total: int  # its containers wanted (its own and its replacement)
    available_at: tuple[float, ...]  # when each of its containers is available
    updated: bool  # it has a container of the app's revision
    updated_available_at: float | None  # the first such container available, when
    troubles: tuple[tuple[str, str], ...]  # what is wrong with its containers


# A slot's part in the common case: one container, of the app's revision, running and
# without trouble, available at this time. Held as the time alone: a tally holds a part
# for every slot (100,000 at 100,000 replicas, on each port), and a ``SlotCounts`` with
# its tuple was 150 bytes more than the float.
PlainSlot = float


def slot_counts(
    replica: ReplicaRecord,
    reports: Mapping[tuple[int, int, str], ContainerReport],
    target: int,
    min_ready: float,
) -> SlotCounts | PlainSlot:
    """``replica``'s part of the counts of an app at revision ``target``."""
    observed = Observed(reports)
    running = total = 0
    available_at: list[float] = []
    updated = False
    updated_at: float | None = None
    troubles: list[tuple[str, str]] = []
    for container in replica.containers():
        total += 1
        report = observed.report(container)
        running += report is not None and report.state == "running"
        at = observed.available_at(container, min_ready)
        if at is not None:
            available_at.append(at)
        if container.revision == target:
            updated = True
            if at is not None:
                updated_at = at if updated_at is None else min(at, updated_at)
        what = trouble(report)
        if what is not None:
            troubles.append(what)
    if running == total == 1 and updated_at is not None and len(available_at) == 1 and not troubles:
        return updated_at
    if not available_at and updated_at is None and not troubles:
        return _not_yet_ready(running, total, updated)
    return SlotCounts(running, total, tuple(available_at), updated, updated_at, tuple(troubles))


# A slot none of whose containers has a time of availability yet, and none in trouble:
# placed and not yet running, or running and not yet ready. Most slots are one of these
# while a large apply ramps up, and such slots are alike: one instance each kind (one
# ``SlotCounts`` a slot was 180,000 objects at once, 100,000 replicas on two ports).
_NOT_YET_READY: dict[tuple[int, int, bool], SlotCounts] = {}


def _not_yet_ready(running: int, total: int, updated: bool) -> SlotCounts:
    key = (running, total, updated)
    found = _NOT_YET_READY.get(key)
    if found is None:
        if len(_NOT_YET_READY) >= 64:  # (a slot has one or two containers: a few kinds)
            _NOT_YET_READY.clear()
        found = _NOT_YET_READY[key] = SlotCounts(running, total, (), updated, None, ())
    return found


def _expanded(part: SlotCounts | PlainSlot) -> SlotCounts:
    if isinstance(part, SlotCounts):
        return part
    return SlotCounts(1, 1, (part,), True, part, ())


def _insert(values: array[float], value: float) -> None:
    bisect.insort(values, value)


def _remove(values: array[float], value: float) -> None:
    del values[bisect.bisect_left(values, value)]


_NONE = math.nan  # a slot without a plain part in ``Tally._plain``


class Tally:
    """An app's counts as sums of its slots' parts, at one position of its slot log.

    Each port keeps a tally of every app, so two parts a replica (200,000 at 100,000
    replicas). The plain parts (``PlainSlot``: most slots once running) are an array of
    times indexed by slot, and the sorted times arrays too: as a dict by slot and lists
    of floats, a tally of 2,000 slots was 154 KB and is now 36 (#24 item 3). A slot far
    past the others (a job's long run) is kept with the other parts, so no array is
    sized by a number anyone can write."""

    def __init__(self, key: tuple[int, float], log: Sequence[int] | None, position: int) -> None:
        self.key = key  # the app's revision and min_ready
        self.log, self.position = log, position
        self._plain = array("d")  # by slot: its PlainSlot, or _NONE
        self._other: dict[int, SlotCounts] = {}  # every other slot's part
        self._count = 0  # slots with a part
        self.troubled: dict[int, tuple[tuple[str, str], ...]] = {}
        self.running = self.total = self.updated = 0
        # Sorted times: of the plain parts (each available, and updated), and of the
        # other parts' containers available and their updated ones available.
        self._plain_times = array("d")
        self._available_at = array("d")
        self._updated_available_at = array("d")

    def part(self, slot: int) -> SlotCounts | PlainSlot | None:
        """Slot ``slot``'s part (None: it has none)."""
        plain = self._plain
        if 0 <= slot < len(plain) and plain[slot] == plain[slot]:  # (not NaN)
            return plain[slot]
        return self._other.get(slot)

    def __len__(self) -> int:
        return self._count

    def put(self, slot: int, part: SlotCounts | PlainSlot | None) -> None:
        """Slot ``slot``'s part is now ``part`` (None: it has no replica)."""
        held = self._take(slot)
        if held is not None and not isinstance(held, SlotCounts):
            # (A plain part's one time counts as available and as updated and available.)
            _remove(self._plain_times, held)
            self.running -= 1
            self.total -= 1
            self.updated -= 1
        elif held is not None:
            self.running -= held.running
            self.total -= held.total
            self.updated -= held.updated
            for at in held.available_at:
                _remove(self._available_at, at)
            if held.updated_available_at is not None:
                _remove(self._updated_available_at, held.updated_available_at)
            self.troubled.pop(slot, None)
        if part is None:
            return
        kept = self._keep(slot, part)
        if not isinstance(kept, SlotCounts):
            _insert(self._plain_times, kept)
            self.running += 1
            self.total += 1
            self.updated += 1
            return
        self.running += kept.running
        self.total += kept.total
        self.updated += kept.updated
        for at in kept.available_at:
            _insert(self._available_at, at)
        if kept.updated_available_at is not None:
            _insert(self._updated_available_at, kept.updated_available_at)
        if kept.troubles:
            self.troubled[slot] = kept.troubles

    def _take(self, slot: int) -> SlotCounts | PlainSlot | None:
        held = self.part(slot)
        if held is None:
            return None
        self._count -= 1
        if isinstance(held, SlotCounts):
            del self._other[slot]
        else:
            self._plain[slot] = _NONE
        return held

    def _keep(self, slot: int, part: SlotCounts | PlainSlot) -> SlotCounts | PlainSlot:
        """Hold ``part`` as ``slot``'s; returns it as held (a plain part that cannot be
        held in the array of times is held expanded)."""
        self._count += 1
        plain = self._plain
        if isinstance(part, SlotCounts) or part != part:  # (a NaN time: kept as it is)
            expanded = self._other[slot] = _expanded(part)
            return expanded
        plain.extend([_NONE] * (room_for(slot, len(plain), self._count) - len(plain)))
        if 0 <= slot < len(plain):
            plain[slot] = part
            return plain[slot]  # (as the array holds it: a float)
        expanded = self._other[slot] = _expanded(part)
        return expanded

    def counts(self, now: float) -> RolloutCounts:
        """The counts at ``now``: the times of availability applied."""
        plain_available = bisect.bisect_right(self._plain_times, now)
        return RolloutCounts(
            self.running,
            bisect.bisect_right(self._available_at, now) + plain_available,
            self.updated,
            bisect.bisect_right(self._updated_available_at, now) + plain_available,
            self.total,
        )

    def trouble(self) -> tuple[str, str]:
        """``appstatus.app_trouble`` from the troubled slots alone."""
        found: dict[str, list[str]] = {}
        for slot in sorted(self.troubled):
            for word, text in self.troubled[slot]:
                found.setdefault(word, []).append(text)
        if not found:
            return "", ""
        word, texts = max(found.items(), key=lambda item: (len(item[1]), item[0]))
        count = f" ({len(texts)} replicas)" if len(texts) > 1 else ""
        return word, texts[0] + count


def count_all(state: ClusterState, app: AppRecord) -> Tally:
    """A tally of every slot of ``app`` in ``state`` (at the end of its slot log)."""
    name = app.spec.name
    log, position = _log_of(state, name)
    tally = Tally((app.revision, app.spec.update.min_ready), log, position)
    reports = state.reports_of(name)
    for slot, versioned in state.replica_slots(name).items():
        tally.put(slot, slot_counts(versioned.value, reports, *tally.key))
    return tally


def _log_of(state: ClusterState, app: str) -> tuple[Sequence[int] | None, int]:
    changes = state.changes
    if changes is None:
        return None, 0
    return changes.slot_logs.get(app, (None, 0))


class CountsCache:
    """Each app's tally, brought up to each state asked about by recounting the slots
    that changed. One per control plane, shared by the API's handlers (the event loop)
    and the /metrics collector (its scrape thread): a lock keeps them from changing a
    tally at once. Deleted apps leave it."""

    def __init__(self) -> None:
        self._tallies: dict[str, Tally] = {}
        self._lock = threading.Lock()

    def counts(self, state: ClusterState, app: AppRecord, now: float) -> RolloutCounts:
        """``app``'s counts in ``state`` at ``now``."""
        if state.changes is None:  # a state that may be changed in place (a test's)
            return count_all(state, app).counts(now)
        with self._lock:
            return self._update(state, app).counts(now)

    def trouble(self, state: ClusterState, app: AppRecord) -> tuple[str, str]:
        """What is wrong with ``app``'s containers in ``state`` (``app_trouble``)."""
        if state.changes is None:
            return count_all(state, app).trouble()
        with self._lock:
            return self._update(state, app).trouble()

    def _update(self, state: ClusterState, app: AppRecord) -> Tally:
        name = app.spec.name
        log, position = _log_of(state, name)
        key = (app.revision, app.spec.update.min_ready)
        tally = self._tallies.get(name)
        if (
            tally is None
            or tally.key != key
            or log is None
            or tally.log is not log
            or tally.position > position
        ):
            tally = count_all(state, app)
        elif tally.position < position:
            reports = state.reports_of(name)
            slots = state.replica_slots(name)
            for slot in set(log[tally.position : position]):
                found = slots.get(slot)
                if found is None:
                    tally.put(slot, None)
                else:
                    # Kept under the record's slot, the one int its records share: one
                    # read off the log is an int of its own past 256, and a tally keeps
                    # a key a slot (103,000 such ints after a 100,000-replica ramp).
                    tally.put(found.value.slot, slot_counts(found.value, reports, *key))
            tally.position = position
        if len(self._tallies) > 2 * len(state.apps) + 16:
            self._tallies = {a: t for a, t in self._tallies.items() if a in state.apps}
        self._tallies[name] = tally
        return tally
