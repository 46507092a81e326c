"""Prometheus metrics of a control plane, served on a port of their own
(``--metrics-listen``, ``fleet.controlplane.metricsport``).

State-derived figures (hosts by state, replicas per app, connected agents) are read
from the informer's cache at scrape time; timings and error counts are recorded where
they happen. Each control plane has its own registry, so several can share a process.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fleet.controlplane.appstatus import CountsCache, rollout_counts
from fleet.store import ClusterState

log = logging.getLogger(__name__)

__all__ = ["Metrics"]


class _StateCollector(Collector):
    def __init__(self, state: Callable[[], ClusterState], streams: Callable[[], int]) -> None:
        self._state = state
        self._streams = streams
        self.counts: CountsCache | None = None  # the control plane's, once it lends it

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._state()
        hosts = GaugeMetricFamily("fleet_hosts", "Registered hosts by state.", labels=["state"])
        states = Tally(
            h.value.state if host_id in state.alive else "down"
            for host_id, h in state.hosts.items()
        )
        for name in ("ready", "cordoned", "draining", "drained", "maintenance", "down"):
            hosts.add_metric([name], states.get(name, 0))
        yield hosts
        replicas = GaugeMetricFamily(
            "fleet_replicas",
            "Replicas per app: desired (spec), placed (on a host), running (reported), "
            "available (healthy for min_ready).",
            labels=["app", "kind"],
        )
        now = time.time()
        for name, app in sorted(state.apps.items()):
            counts = rollout_counts(state, name, now, self.counts)
            spec = app.value.spec
            desired = spec.replicas if spec.mode == "replicated" else len(state.replicas_of(name))
            replicas.add_metric([name, "desired"], desired)
            replicas.add_metric([name, "placed"], len(state.replicas_of(name)))
            replicas.add_metric([name, "running"], counts.running)
            replicas.add_metric([name, "available"], counts.available)
        yield replicas
        streams = GaugeMetricFamily("fleet_agent_streams", "Agents connected to this server.")
        streams.add_metric([], self._streams())
        yield streams


# Seconds, for waits and pauses of the event loop and the handlers on it.
_PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Fine around a second, the figure the benchmarks hold a report to: a quantile is
# interpolated within its bucket, and between 1 and 2.5 that said 2.3 s of a p99 a
# little over 1.
_REPORT_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.25,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
)
_LONG_GC_PAUSE = 0.25  # seconds: a collection this long is logged (what it was)


class Metrics:
    def __init__(self, state: Callable[[], ClusterState], streams: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self._collector = _StateCollector(state, streams)
        self.registry.register(self._collector)
        self.scheduling = Histogram(
            "fleet_scheduling_seconds",
            "Time to plan one app's replicas (placement included).",
            registry=self.registry,
        )
        self.reconcile = Histogram(
            "fleet_reconcile_seconds",
            "Time of one replica-controller round over every app.",
            registry=self.registry,
        )
        self.etcd_errors = Counter(
            "fleet_etcd_errors", "etcd requests that failed.", registry=self.registry
        )
        self.heartbeats = Histogram(
            "fleet_heartbeat_seconds",
            "Time to handle one agent heartbeat: read, checked, its host noted as heard "
            "from and its report queued for writing.",
            buckets=_PAUSE_BUCKETS,
            registry=self.registry,
        )
        self.report_writes = Histogram(
            "fleet_report_write_seconds",
            "Time from an agent heartbeat's arrival to what it changed being stored.",
            buckets=_REPORT_BUCKETS,
            registry=self.registry,
        )
        self.report_batches = Histogram(
            "fleet_report_batch_write_seconds",
            "Time to store one batch of hosts' reports in etcd (its shared transactions): "
            "the part of fleet_report_write_seconds spent waiting on etcd.",
            buckets=_REPORT_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "fleet_loop_lag_seconds",
            "Time a callback posted to the event loop waits for it to run (the lease "
            "keeper's probes, a few a second): what every request and heartbeat waits "
            "for before its handler runs.",
            buckets=_PAUSE_BUCKETS,
            registry=self.registry,
        )
        self.calls = Histogram(
            "fleet_api_call_seconds",
            "Time in the handler of one API call (authorization and its waits on etcd "
            "included; not the time the call waited for the event loop).",
            ["method"],
            buckets=_PAUSE_BUCKETS,
            registry=self.registry,
        )
        self.gc_pauses = Histogram(
            "fleet_gc_pause_seconds",
            "Time of one collection of Python's garbage collector: the process, event "
            "loop included, does nothing else meanwhile.",
            buckets=_PAUSE_BUCKETS,
            registry=self.registry,
        )
        self._gc_started = 0.0
        self.leader = Gauge(
            "fleet_leader",
            "1 while this replica leads (runs the controllers).",
            registry=self.registry,
        )
        self.moves_held = Gauge(
            "fleet_moves_held",
            "1 while so many hosts are down at once that their replicas are not moved "
            "(--hold-moves-when-down).",
            registry=self.registry,
        )

    def observe_call(self, method: str, seconds: float) -> None:
        self.calls.labels(method).observe(seconds)

    def watch_gc(self) -> None:
        """Time the garbage collector's pauses (``unwatch_gc`` ends it)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            pause = time.perf_counter() - self._gc_started
            self.gc_pauses.observe(pause)
            if pause >= _LONG_GC_PAUSE:
                log.info(
                    "garbage collection (generation %d) held the process %.2f s: "
                    "%d unreachable, %d frozen (not walked)",
                    info["generation"],
                    pause,
                    info["collected"],
                    gc.get_freeze_count(),
                )

    def lend_counts(self, counts: CountsCache) -> None:
        """Count apps with the control plane's memo (its API's), not a walk per scrape."""
        self._collector.counts = counts
