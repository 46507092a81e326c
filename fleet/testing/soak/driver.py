"""One soak run, start to end: the pool and an earlier pool's leftovers on its hosts,
the workload settled, then faults, client calls and the checker all at once for the
given minutes; then the faults healed, the convergence timed, the final checks, the
report."""

from __future__ import annotations

import logging
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fleet.testing.procs import wait_until
from fleet.testing.soak import checker
from fleet.testing.soak.cluster import DOWN_AFTER, RESCHEDULE_AFTER, SoakCluster
from fleet.testing.soak.faults import FaultDriver
from fleet.testing.soak.model import Finding, Snapshot
from fleet.testing.soak.monitor import Monitor
from fleet.testing.soak.observe import Observer, read_start_events
from fleet.testing.soak.report import SoakReport
from fleet.testing.soak.workload import PROBED_APPS, Workload, global_spec, web_spec

__all__ = ["SoakConfig", "run_soak"]

log = logging.getLogger(__name__)


@dataclass
class SoakConfig:
    minutes: float = 10.0
    seed: int | None = None
    work_dir: Path | None = None
    bounds: checker.Bounds = field(default_factory=checker.Bounds)
    converge_bound: float = 240.0  # seconds from the last fault's end to converged
    setup_bound: float = 180.0  # seconds for the workload to first converge


def _say(message: str) -> None:
    print(f"soak: {message}", flush=True)


def _converge(
    observer: Observer, monitor: Monitor, deadline: float
) -> tuple[float | None, list[str]]:
    """Poll until the pool is exactly the desired state in two snapshots in a row; the
    time of the first of them (None: not by ``deadline``) and what still differed."""
    first: float | None = None
    diffs: list[str] = ["not looked at"]
    while time.time() < deadline:
        snapshot = monitor.step(observer.snapshot())
        diffs = checker.differences(snapshot)
        if not diffs:
            if first is not None:
                return first, []
            first = snapshot.at
        else:
            first = None
        time.sleep(2)
    return None, diffs


def run_soak(config: SoakConfig) -> SoakReport:
    """Run the soak; the report says what held (and ``passed``)."""
    seed = config.seed if config.seed is not None else random.randrange(1 << 31)
    _say(f"seed {seed}, {config.minutes:g} minutes of faults (rerun: SOAK_SEED={seed})")
    work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="fleet-soak-"))
    bounds = config.bounds
    report = SoakReport(
        seed, config.minutes, time.time(), asdict(bounds) | {"converge": config.converge_bound}
    )
    report.bounds |= {"down_after": DOWN_AFTER, "reschedule_after": RESCHEDULE_AFTER}
    cluster = SoakCluster(work_dir)
    observer: Observer | None = None
    try:
        cluster.start_infra()
        v1 = cluster.images["v1"]
        # Item 5 of #25: the hosts hold an earlier pool's stopped containers.
        leftovers = cluster.seed_earlier_pool([web_spec(v1), global_spec(v1)], expect=8)
        report.leftovers = sum(len(ids) for ids in leftovers.values())
        cluster.start_fleet()
        workload = Workload(cluster, seed)
        with cluster.client() as client:
            workload.initial(client)
        observer = Observer(
            cluster.pool.hosts,
            cluster.etcd_reader,
            cluster.layout,
            cluster.pids,
            PROBED_APPS,
            unpullable=frozenset({cluster.broken_image}),
        )
        driver = FaultDriver(cluster, seed)
        report.notes += driver.notes
        monitor = Monitor(observer, driver.snapshot, bounds)
        wait_until(
            lambda: not checker.differences(monitor.step(observer.snapshot())),
            config.setup_bound,
            interval=2,
            what="the workload to run as etcd says before the faults",
        )
        report.setup_seconds = time.time() - report.started_at
        _say(f"pool up in {report.setup_seconds:.0f}s; faults and clients start")
        monitor.start()
        # A quiet spell first, so the starts so far can be judged by the events check
        # (it skips starts within ``events_quiet`` of any fault).
        time.sleep(bounds.events_quiet + 5)
        workload.start()
        driver.start()
        end = time.time() + config.minutes * 60
        while time.time() < end:
            time.sleep(min(30.0, max(0.0, end - time.time())))
            live = [w for w in driver.snapshot() if w.end is None]
            _say(
                f"{len(driver.snapshot())} faults so far, {len(live)} on now "
                f"({', '.join(f'{w.kind} {w.target}' for w in live)}); "
                f"{len(workload.ops)} calls; {len(monitor.findings)} violations"
            )
        driver.stop()
        workload.stop()
        if driver.quiet_spells:
            report.notes.append(
                f"{len(driver.quiet_spells)} quiet spell(s) of {driver.quiet_for:g} s without "
                f"faults, every {driver.quiet_every:g} s (so the events check judges starts)"
            )
        ends = [w.end for w in driver.windows if w.end is not None]
        last_fault = max(ends) if ends else time.time()
        _say("faults stopped and healed; settling the clients' last calls")
        workload.settle(time.time() + 90)
        monitor.stop()
        converged, remaining = _converge(observer, monitor, last_fault + config.converge_bound)
        report.last_fault_end = last_fault
        report.converge_seconds = None if converged is None else converged - last_fault
        report.remaining = remaining
        final = monitor.last
        assert final is not None
        report.checks = monitor.checks
        report.findings = list(monitor.findings)
        report.checks["converged"] += 1
        if converged is None:
            report.findings.append(
                Finding("converged", time.time(), f"not converged: {remaining[:20]}")
            )
        _final_checks(report, cluster, workload, driver, monitor, final, leftovers)
        report.windows = driver.windows
        report.ops = workload.ops
        report.rss_peak = dict(monitor.rss.peak)
        report.snapshots = monitor.snapshots
        report.harness_errors += driver.errors
    finally:
        if observer is not None:
            observer.close()
        report.harness_errors += [f"teardown: {e}" for e in cluster.close()]
    return report


def _final_checks(
    report: SoakReport,
    cluster: SoakCluster,
    workload: Workload,
    driver: FaultDriver,
    monitor: Monitor,
    final: Snapshot,
    leftovers: dict[str, set[str]],
) -> None:
    """The checks made once, at the end: refused calls, applied calls, events, and the
    earlier pool's leftovers still there, still stopped."""
    checks, found = checker.check_failed_ops(workload.ops)
    report.checks["failed-op-changed"] += checks
    report.findings += found
    if final.etcd is not None:
        expected = checker.expected_state(workload.ops)
        checks, found = checker.check_expectations(expected, final.etcd, final.at)
        report.checks["applied-reflected"] += checks
        report.findings += found
    stored = read_start_events(cluster.etcd_reader, cluster.layout)
    checks, found = checker.check_events(
        monitor.starts, stored, driver.windows, monitor.bounds, time.time()
    )
    report.checks["events"] += checks
    report.findings += found
    present = {(c.host, c.id): c for c in final.containers}
    for host, ids in sorted(leftovers.items()):
        for cid in sorted(ids):
            report.checks["foreign-container"] += 1
            container = present.get((host, cid))
            if container is None:
                report.findings.append(
                    Finding(
                        "foreign-container",
                        final.at,
                        f"the earlier pool's {cid[:12]} on {host} was removed",
                    )
                )
            elif container.running:
                report.findings.append(
                    Finding(
                        "foreign-container",
                        final.at,
                        f"the earlier pool's {container.name} on {host} runs",
                    )
                )
