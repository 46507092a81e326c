"""The checker running throughout: a thread that takes a snapshot every few seconds
and runs the rules of ``checker`` on it, counting checks and keeping findings."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from fleet.testing.soak import checker
from fleet.testing.soak.model import FaultWindow, Finding, Snapshot
from fleet.testing.soak.observe import Observer

__all__ = ["Monitor"]

log = logging.getLogger(__name__)


class Monitor:
    """Snapshots every ``interval`` seconds; ``checks`` counts each rule's evaluations,
    ``findings`` holds its violations."""

    def __init__(
        self,
        observer: Observer,
        windows: Callable[[], Sequence[FaultWindow]],
        bounds: checker.Bounds,
        interval: float = 3.0,
    ) -> None:
        self.observer = observer
        self.windows = windows
        self.bounds = bounds
        self.interval = interval
        self.checks: Counter[str] = Counter()
        self.findings: list[Finding] = []
        self.starts: dict[str, tuple[str, str, int, float]] = {}
        self.last: Snapshot | None = None
        self.snapshots = 0
        self.etcd_unreadable = 0
        self._strays = checker.StrayState()
        self._available = checker.AvailabilityState()
        self._orphans = checker.OrphanState()
        self.rss = checker.RssState()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.step(self.observer.snapshot())
            except Exception:  # the monitor must outlive a bad read; the error is logged
                log.exception("soak monitor step")
                self.checks["monitor-errors"] += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def step(self, snapshot: Snapshot) -> Snapshot:
        """Run every continuous rule on ``snapshot``."""
        windows = self.windows()
        found: list[Finding] = []
        with self._lock:
            self.snapshots += 1
            self.last = snapshot
            if snapshot.etcd is None:
                self.etcd_unreadable += 1
            else:
                for rule in ("double-serving", "placement", "fencing", "foreign-container"):
                    self.checks[rule] += 1
                found += checker.check_strays(self._strays, snapshot, windows, self.bounds)
                found += checker.check_foreign(snapshot)
                checks, more = checker.check_availability(
                    self._available, snapshot, windows, self.bounds
                )
                self.checks["min-available"] += checks
                found += more
                self.checks["orphan"] += 1
                found += checker.check_orphans(self._orphans, snapshot, windows, self.bounds)
                pool = snapshot.etcd.pool_id
                for c in snapshot.containers:
                    if c.running and c.pool == pool and c.id not in self.starts:
                        self.starts[c.id] = (c.host, c.app, c.slot, snapshot.at)
            self.checks["rss"] += 1
            found += checker.check_rss(self.rss, snapshot, self.bounds)
            self.findings += found
        for finding in found:
            log.warning("VIOLATION %s: %s", finding.invariant, finding.detail)
        return snapshot
