"""How the control plane's process uses Python's cyclic garbage collector.

At 100,000 replicas the server holds millions of tracked objects (the informer's state,
the API's and the pushes' caches) and makes short-lived ones fast. Every collection
stops the whole process, event loop included, for as long as it takes to walk the
generations it collects: with Python's defaults (700, 10, 10) a full collection ran
every 3 s and took 0.7 s; with rarer collections (50,000, 20, 100) the loop still
stopped for up to half a second (``fleet_gc_pause_seconds``: 70 pauses, 4.5 s, p99
456 ms in a 100,000-replica apply at 1,000 hosts), which every read and heartbeat then
waited out, three times over for a read's three turns of the loop.

A young collection is not small here: Python counts allocations *minus frees* to
decide when to collect, and while the state is renewed (reports replaced, old ones
freed) the count barely moves as the young objects pile up: collections of the young
generation alone took 0.3 s and more. What the server makes is almost all freed by
reference counting. So:

- every second the young generation is collected, and whatever survives any
  collection is frozen (``gc.freeze``): no collection walks it again, and each walks
  at most about a second of what was made (the automatic collections, at 50,000
  allocations net of frees, stay on as a backstop);
- a cycle (a refused call's traceback, a failed future) that is garbage by its first
  collection is freed then;
- every ``full_every`` seconds everything is unfrozen and collected (one pause of the
  whole heap, every ten minutes), so a cycle that lived long enough to be frozen and
  died later is freed then.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

__all__ = ["GC_THRESHOLDS", "YoungCollections"]

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 5, 100)
YOUNG_EVERY = 1.0  # seconds between two collections of what is young
FULL_EVERY = 600.0  # seconds between two collections of everything


class YoungCollections:
    """Installed by the process that runs a control plane (``run_server``), never by a
    ``ControlPlane`` itself: the collector is the process's, and tests run several
    control planes in theirs."""

    def __init__(self, young_every: float = YOUNG_EVERY, full_every: float = FULL_EVERY) -> None:
        self.young_every = young_every
        self.full_every = full_every
        self._thresholds = gc.get_threshold()

    def install(self) -> None:
        self._thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        if self._after_collection not in gc.callbacks:
            gc.callbacks.append(self._after_collection)

    def uninstall(self) -> None:
        if self._after_collection in gc.callbacks:
            gc.callbacks.remove(self._after_collection)
        gc.unfreeze()
        gc.set_threshold(*self._thresholds)

    async def run(self) -> None:
        """Collect the young every ``young_every`` seconds and everything every
        ``full_every``, until cancelled."""
        full_at = time.monotonic() + self.full_every
        while True:
            await asyncio.sleep(self.young_every)
            if time.monotonic() >= full_at:
                full_at = time.monotonic() + self.full_every
                self.collect_everything()
            else:
                gc.collect(0)

    def collect_everything(self) -> int:
        """Unfreeze and collect every generation (the callback freezes the survivors
        again); how many unreachable objects were found."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        log.debug(
            "collected everything in %.3f s: %d unreachable, %d objects kept",
            time.perf_counter() - started,
            found,
            gc.get_freeze_count(),
        )
        return found

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Called with the collector still marked as running: freeze only moves the
        # generations' lists into the permanent one, it allocates nothing.
        if phase == "stop":
            gc.freeze()
