"""Scale benchmark: a real control plane and a real etcd, N hollow hosts, R replicas at once.

For each N of ``--hosts``: a fresh etcd and ``fleet server`` (insecure, heartbeats every
5 s), N hollow hosts (``fleet.testing.hollow``: the real agent over a simulated runtime)
in several processes, one of them holding exactly 100 "victim" hosts. Once all N are
connected, apps totalling R replicas (``placement: spread``, so each host gets its
share) are applied in one call, and the run measures:

* apply -> all R reported running: the sum of ``running`` in ``GetApps``, polled every
  second (``--poll``);
* placements per second committed to etcd: R over the time from the apply to R keys
  under ``<prefix>replicas/`` (etcd's JSON gateway, ``count_only``, every 0.25 s);
* the control plane's resident memory (peak) and cpu seconds over that window, from
  /proc (etcd's and the hollow hosts' beside it: they share the machine);
* etcd's database size (``/v3/maintenance/status``);
* the latency of ``GetApps`` (what ``fleet get apps`` calls, without the CLI's start)
  while the load runs: the 1 s polls plus a sample every 0.5 s from a second client in a
  thread, p50/p99. ``--progress metrics`` counts running replicas from the server's
  ``fleet_replicas`` gauge instead, ``--progress etcd`` from the agents' reports read
  straight from etcd (no work for the server), and ``--sample-every`` spaces the second
  client's calls (0: none): each GetApps counts every app's replicas and reports on the
  server's event loop, so watching with it loads the server being measured;
* with ``--sample-reads S``, the latency of the reads a person makes during an apply
  (``get apps``, ``get hosts``, ``ps scale-000``, ``endpoints scale-000`` and
  ``endpoints``), one every S seconds in turn from a third client, p50/p99 of each: on
  the server's read port (``--read-listen``, which the server gets here), or with
  ``--reads-from main`` on its main port as the second client's GetApps are;
* the latency of handling a heartbeat while the load runs, from the server's
  ``fleet_heartbeat_seconds`` histogram (scraped at the apply and at all-running; the
  quantiles are estimated from the buckets' difference as Prometheus does);
* then the victims' process is SIGKILLed and the time until all R run again with none on
  a victim host is measured (their connections break, the server revokes their leases
  at once; the controller moves their replicas ``--reschedule-after`` later).

Every wait has a deadline that grows with N and R; a size that misses one is recorded as
failed with what it reached, and larger sizes are not tried (``--keep-going`` tries
them). Figures go to benchmarks/results/scale.json and scale.png (time and memory
against N).

    .venv/bin/python benchmarks/scale.py [--hosts 200,500,1000] [--replicas-per-host 20]
    .venv/bin/python benchmarks/scale.py --hosts 1000 --replicas 100000 --output scale-100k

``--profile SECONDS`` records the control plane with py-spy (``--profile-delay`` after
the apply; this slows it down a little: the figures of such a run are not the clean
ones) and sums the frames: by asyncio task, by function (self and inclusive), by file.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import describe, ended, loadavg, machine, quietly, stop_on_sigterm
from prometheus_client.parser import text_string_to_metric_families

from fleet._time import epoch, iso_at
from fleet.client import FleetClient
from fleet.controlplane.planner import DEFAULT_HOLD_MOVES_WHEN_DOWN
from fleet.controlplane.server import AGENTS_BACK_WITHIN
from fleet.errors import FleetError
from fleet.spec import AppSpec, load_documents, parse_duration
from fleet.testing import EtcdServer
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.testing.hollow import most_stalled_within, stalls_in
from fleet.testing.procs import ManagedProcess, free_port
from fleet.transport import Transport

VICTIMS = 100  # hosts killed at once
STALLED = 60.0  # seconds of no replica starting before the ones not running are looked at
HOSTS_PER_PROCESS = 250  # hollow hosts per process (the victims have their own)
APP_MAX = 10_000  # replicas of one app at most (the spec's limit)
WATCH = 0.25  # seconds between two looks at etcd's replica count and /proc
RECOVERY_CHECK = 5.0  # seconds between two reads of every replica key after a kill
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20


# ---------------------------------------------------------------------- the machine


def etcd_version() -> str:
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
    return (etcd.stdout.splitlines() or ["?"])[0].removeprefix("etcd Version: ")


# ---------------------------------------------------------------------- /proc


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process, seconds (0 once it is gone)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_status(pid: int | None) -> dict[str, int]:
    """VmRSS and VmHWM (the peak RSS of the process's life), bytes."""
    found = {"VmRSS": 0, "VmHWM": 0}
    if pid is None:
        return found
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0]) * 1024
    return found


# ---------------------------------------------------------------------- etcd


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def etcd_post(etcd: EtcdServer, path: str, body: dict[str, Any], timeout: float = 10) -> Any:
    request = urllib.request.Request(etcd.url + path, data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def etcd_count(etcd: EtcdServer, prefix: str) -> int:
    """How many keys are under ``prefix`` (a count, no values)."""
    key = prefix.encode()
    body = {"key": b64(key), "range_end": b64(prefix_end(key)), "count_only": True}
    return int(etcd_post(etcd, "/v3/kv/range", body).get("count", 0))


def etcd_values(etcd: EtcdServer, prefix: str, page: int = 5_000) -> list[dict[str, Any]]:
    """Every value under ``prefix`` as JSON, read page by page."""
    start, end = prefix.encode(), prefix_end(prefix.encode())
    found: list[dict[str, Any]] = []
    while True:
        body = {"key": b64(start), "range_end": b64(end), "limit": page}
        result = etcd_post(etcd, "/v3/kv/range", body, timeout=60)
        kvs = result.get("kvs") or []
        found.extend(json.loads(base64.b64decode(kv["value"])) for kv in kvs)
        if not result.get("more") or not kvs:
            return found
        start = base64.b64decode(kvs[-1]["key"]) + b"\0"


def niced_group(proc: ManagedProcess, nice: int) -> ManagedProcess:
    """``proc`` (started in a session of its own) niced as a whole.

    With the kernel's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``,
    on in Debian), every session is a group the cpu is shared between first, and a nice
    level counts only among the processes of one group: each hollow process, in a
    session of its own, took as much cpu as the control plane's whole session, however
    niced (20 of them at 5,000 hosts). Its group's own nice level
    (``/proc/PID/autogroup``) is what makes it yield."""
    if nice and proc.pid is not None:
        with contextlib.suppress(OSError):  # no autogroup here: the plain nice is all there is
            Path(f"/proc/{proc.pid}/autogroup").write_text(f"{nice}\n")
    return proc


def etcd_revision(etcd: EtcdServer) -> int:
    """etcd's current revision."""
    result = etcd_post(etcd, "/v3/kv/range", {"key": b64(b"\0"), "count_only": True})
    return int(result["header"]["revision"])


def etcd_written_since(etcd: EtcdServer, prefix: str, revision: int, page: int = 5_000) -> int:
    """How many keys under ``prefix`` were written after ``revision``."""
    start, end = prefix.encode(), prefix_end(prefix.encode())
    written = 0
    while True:
        body = {"key": b64(start), "range_end": b64(end), "limit": page, "keys_only": True}
        result = etcd_post(etcd, "/v3/kv/range", body, timeout=60)
        kvs = result.get("kvs") or []
        written += sum(1 for kv in kvs if int(kv["mod_revision"]) > revision)
        if not result.get("more") or not kvs:
            return written
        start = base64.b64decode(kvs[-1]["key"]) + b"\0"


def etcd_db(etcd: EtcdServer) -> dict[str, int]:
    status = etcd_post(etcd, "/v3/maintenance/status", {})
    return {
        "db_size_bytes": int(status.get("dbSize", 0)),
        "db_size_in_use_bytes": int(status.get("dbSizeInUse", 0)),
        "revision": int(status.get("header", {}).get("revision", 0)),
    }


# ---------------------------------------------------------------------- metrics


# The server's histograms the benchmark reads: handling a heartbeat (read, checked,
# queued), writing what it changed (from its arrival to etcd's answer; and a batch's
# etcd part of it), and how long a callback waits for the event loop.
HISTOGRAMS = (
    "fleet_heartbeat_seconds",
    "fleet_report_write_seconds",
    "fleet_report_batch_write_seconds",
    "fleet_loop_lag_seconds",
    "fleet_gc_pause_seconds",
    "fleet_scheduling_seconds",
    "fleet_reconcile_seconds",
)
CALLS = "fleet_api_call_seconds"  # one histogram per method: found as CALLS + "/" + method


def scrape_histograms(metrics_url: str) -> dict[str, dict[str, float]]:
    """Each of HISTOGRAMS as {le: cumulative count} plus "count" and "sum"."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, dict[str, float]] = {name: {} for name in HISTOGRAMS}
    for family in text_string_to_metric_families(text):
        if family.name not in found and family.name != CALLS:
            continue
        for sample in family.samples:
            name = family.name
            if "method" in sample.labels:
                name = f"{CALLS}/{sample.labels['method']}"
            figures = found.setdefault(name, {})
            if sample.name.endswith("_bucket"):
                figures[sample.labels["le"]] = float(sample.value)
            elif sample.name.endswith("_count"):
                figures["count"] = float(sample.value)
            elif sample.name.endswith("_sum"):
                figures["sum"] = float(sample.value)
    return found


def histogram_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """n, p50, p99 and mean of what a histogram observed between two scrapes."""
    n = int(after.get("count", 0) - before.get("count", 0))
    total = after.get("sum", 0) - before.get("sum", 0)
    return {
        "n": n,
        "p50": _round(bucket_quantile(before, after, 0.5)),
        "p99": _round(bucket_quantile(before, after, 0.99)),
        "mean": round(total / n, 4) if n else None,
        "p50_above_top_bucket": capped(before, after, 0.5),
        "p99_above_top_bucket": capped(before, after, 0.99),
    }


def capped(before: dict[str, float], after: dict[str, float], q: float) -> bool:
    """Whether the q-quantile falls above the highest finite bucket."""
    finite = [float(le) for le in after if le not in ("count", "sum", "+Inf")]
    if not finite or "+Inf" not in after:
        return False
    top = max(finite)
    le = next(k for k in after if k not in ("count", "sum", "+Inf") and float(k) == top)
    total = after["+Inf"] - before.get("+Inf", 0.0)
    return total > 0 and after[le] - before.get(le, 0.0) < q * total


def scrape_running(metrics_url: str) -> int:
    """The sum of fleet_replicas{kind="running"} over every app."""
    with urllib.request.urlopen(metrics_url, timeout=30) as response:
        text = response.read().decode()
    running = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "fleet_replicas":
            running += sum(s.value for s in family.samples if s.labels.get("kind") == "running")
    return int(running)


def bucket_quantile(before: dict[str, float], after: dict[str, float], q: float) -> float | None:
    """The q-quantile of what was observed between two scrapes of a histogram, by linear
    interpolation inside the bucket it falls in (Prometheus' histogram_quantile); the
    highest finite bound when it falls in +Inf (a lower bound then: see ``capped``);
    None with no observations."""
    bounds = sorted((float(le), le) for le in after if le not in ("count", "sum"))
    counts = [(bound, after[le] - before.get(le, 0.0)) for bound, le in bounds]
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


# ---------------------------------------------------------------------- samplers


@dataclass
class LatencySampler:
    """A second client timing GetApps every ``every`` seconds in a thread."""

    address: str
    origin: float
    every: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds)
    errors: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LatencySampler:
        self._thread = threading.Thread(target=self._run, name="get-apps", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        client = FleetClient([self.address], Transport(None), timeout=60)
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    client.apps()
                    self.samples.append((began - self.origin, time.monotonic() - began))
                except Exception as error:  # a sample that failed is a figure too
                    self.errors.append((began - self.origin, repr(error)[:200]))
                self._stop.wait(max(0.0, self.every - (time.monotonic() - began)))
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(90)


# What ``--sample-reads`` times besides GetApps: the calls behind ``fleet get hosts``,
# ``fleet ps APP`` and ``fleet endpoints [APP]`` (``ps`` of every app is past the
# client's 4 MiB answer at 30,000 replicas).
READS: dict[str, Callable[[FleetClient], object]] = {
    "get_apps": lambda c: c.apps(),
    "get_hosts": lambda c: c.hosts(),
    "ps_app": lambda c: c.containers(app="scale-000"),
    "endpoints_app": lambda c: c.endpoints("scale-000"),
    "endpoints_all": lambda c: c.endpoints(""),
}


@dataclass
class ReadsSampler:
    """A third client timing each of READS in turn, one call every ``every`` seconds,
    in a thread, at ``address`` (the read port's or the main port's: ``port``)."""

    address: str
    origin: float
    every: float
    port: str = "read"
    samples: dict[str, list[float]] = field(default_factory=dict)
    timed: list[tuple[float, str, float]] = field(default_factory=list)  # (t, name, s)
    errors: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ReadsSampler:
        self._thread = threading.Thread(target=self._run, name="reads", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        client = FleetClient([self.address], Transport(None), timeout=60)
        try:
            while not self._stop.is_set():
                for name, call in READS.items():
                    began = time.monotonic()
                    try:
                        call(client)
                        took = time.monotonic() - began
                        self.samples.setdefault(name, []).append(took)
                        self.timed.append((round(began - self.origin, 2), name, took))
                    except Exception as error:  # a sample that failed is a figure too
                        self.errors.append((began - self.origin, f"{name}: {error!r}"[:200]))
                    if self._stop.wait(max(0.0, self.every - (time.monotonic() - began))):
                        return
        finally:
            client.close()

    def figures(self) -> dict[str, Any]:
        found: dict[str, Any] = {n: percentiles(v) for n, v in self.samples.items()}
        found["port"] = self.port
        found["errors"] = len(self.errors)
        found["error_examples"] = [e for _, e in self.errors[:3]]
        # When the slowest calls began (seconds after the apply): an outlier is one
        # call of ~15 a kind, and its time says what the control plane was doing.
        slowest = sorted(self.timed, key=lambda t: -t[2])[:5]
        found["slowest"] = [[t, name, round(s, 4)] for t, name, s in slowest]
        return found

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(90)


@dataclass
class Watcher:
    """Every ``WATCH`` seconds: the replica keys in etcd (until ``target``) and the
    processes' memory; in a thread."""

    etcd: EtcdServer
    prefix: str
    target: int
    origin: float
    pids: dict[str, int]
    placed: list[tuple[float, int]] = field(default_factory=list)  # (t, keys) on change
    all_placed_at: float | None = None
    peak_rss: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            for name, pid in self.pids.items():
                rss = memory_status(pid)["VmRSS"]
                self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)
            if self.all_placed_at is None:
                try:
                    count = etcd_count(self.etcd, self.prefix + "replicas/")
                except Exception as error:
                    self.errors.append(repr(error)[:200])
                else:
                    now = time.monotonic() - self.origin
                    if not self.placed or self.placed[-1][1] != count:
                        self.placed.append((round(now, 3), count))
                    if count >= self.target:
                        self.all_placed_at = now
            self._stop.wait(max(0.0, WATCH - (time.monotonic() - began)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


# ---------------------------------------------------------------------- py-spy


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Sum py-spy's collapsed stacks (``frame;frame;... count``): samples per function as
    the leaf (self); per fleet function anywhere on the stack (inclusive, once per
    stack; the entry points left out); per file of the leaf; and per task, the frame an
    asyncio callback or a thread starts from (what the event loop was running)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    files: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    total = 0
    with open(raw, errors="replace") as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_function(frame) for frame in stack.split(";")]
            frames = [frame for frame in frames if frame]
            if not frames:
                continue
            total += count
            own[frames[-1]] += count
            files[_file(frames[-1])] += count
            tasks[_task(frames)] += count
            for frame in set(frames):
                if _file(frame).startswith("fleet/") and not _file(frame).startswith(
                    ("fleet/__main__", "fleet/cli/")
                ):
                    inclusive[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": name, "samples": n, "share": round(n / total, 4) if total else 0.0}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "self": share(own),
        "inclusive_fleet": share(inclusive),
        "self_by_file": share(files),
        "by_task": share(tasks),
    }


def _task(frames: Sequence[str]) -> str:
    """The frame after the event loop's ``Handle._run`` or a thread's ``Thread.run``."""
    for i, frame in enumerate(frames):
        if frame.startswith(("Handle._run ", "Thread.run ")):
            return frames[i + 1] if i + 1 < len(frames) else frame + " [native]"
    return frames[-1] if len(frames) < 3 else "(stack cut short)"


def _function(frame: str) -> str:
    """``name (path/to/file.py:123)`` -> ``name (file.py)``; threads and processes out."""
    frame = frame.strip()
    if frame.startswith(("process ", "thread ")):
        return ""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3."):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "lib/python3.":
                where = "stdlib/" + where.split("/", 1)[-1]
            break
    else:
        where = where.split("/work/main/", 1)[-1]
    return f"{name} ({where})" if where else name


def _file(frame: str) -> str:
    return frame.rpartition(" (")[2].rstrip(")") or frame


# ---------------------------------------------------------------------- one size


def app_specs(replicas: int, per_app: int, cpu: float, memory: str) -> list[AppSpec]:
    apps = math.ceil(replicas / per_app)
    docs = []
    for i in range(apps):
        count = per_app if i < apps - 1 else replicas - per_app * (apps - 1)
        docs.append(
            f"name: scale-{i:03d}\nimage: hollow/app:v1\nreplicas: {count}\n"
            f"resources: {{cpu: {cpu}, memory: {memory}}}\nplacement: spread\n"
        )
    return load_documents("---\n".join(docs), "scale.yaml")


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {
        "n": len(ordered),
        "p50": round(at(0.5), 4),
        "p99": round(at(0.99), 4),
        "max": round(ordered[-1], 4),
    }


class Failed(Exception):
    """A wait missed its deadline; ``reached`` says how far it got."""

    def __init__(self, what: str, reached: dict[str, Any]) -> None:
        super().__init__(what)
        self.what, self.reached = what, reached


@dataclass
class Cluster:
    """etcd, the server and the hollow hosts of one size; ``close()`` ends them all."""

    work: Path
    etcd: EtcdServer | None = None
    server: FleetServerProcess | None = None
    hollow: list[ManagedProcess] = field(default_factory=list)
    hollow_first: list[int] = field(default_factory=list)  # each process's first host
    victims: ManagedProcess | None = None
    client: FleetClient | None = None
    profiler: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        if self.profiler is not None and self.profiler.poll() is None:
            quietly("py-spy", lambda: _end(self.profiler))
        if self.client is not None:
            quietly("client", self.client.close)
        # The server first: stopped after its hosts, it saw every stream end at once and
        # could log a hold of moves (most of the pool down) that no phase measured made.
        if self.server is not None:
            quietly("server", self.server.stop)
        for proc in [*self.hollow, *([self.victims] if self.victims else [])]:
            quietly(f"hollow pid {proc.pid}", proc.stop)
        if self.etcd is not None:
            quietly("etcd", self.etcd.close)


def not_running(cluster: Cluster, prefix: str, most: int = 40) -> list[dict[str, Any]]:
    """Placed replicas not running (at most ``most``): their host, state and what the
    host's last status record holds of them (usage is reported for running containers
    only: usage with a state not running says the control plane kept an old report).
    Each such hollow host's process is asked for its tasks' stacks (``kill -USR1``:
    they go to its log, each headed by its host), to see where its agent waits."""
    assert cluster.client is not None and cluster.etcd is not None
    found: list[dict[str, Any]] = []
    for app in cluster.client.apps():
        if app.running >= app.placed or len(found) >= most:
            continue
        for c in cluster.client.containers(app=app.name):
            if c.status.state != "running" and len(found) < most:
                found.append(
                    {"app": app.name, "slot": c.slot, "revision": c.revision, "host": c.host}
                    | {"state": c.status.state or "(no report)", "reason": c.status.reason}
                )
    for host in sorted({f["host"] for f in found}):
        records = etcd_values(cluster.etcd, f"{prefix}status/{host}")
        usage = records[0].get("container_usage", {}) if records else {}
        for f in found:
            if f["host"] == host:
                f["usage_in_status"] = usage.get(f"{f['app']}/{f['slot']}/{f['revision']}")
        number = int(host.rpartition("-")[2]) if host.startswith("hollow-") else -1
        owners = [i for i, first in enumerate(cluster.hollow_first) if first <= number]
        if owners and cluster.hollow[owners[-1]].pid is not None:
            with contextlib.suppress(OSError):
                os.kill(cluster.hollow[owners[-1]].pid, signal.SIGUSR1)
    return found


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


Progress = Callable[[], tuple[int, float | None]]


def progress_counter(
    how: str, client: FleetClient, metrics_url: str, etcd: EtcdServer, prefix: str
) -> Progress:
    """Counts replicas reported running: with GetApps (returning the seconds it took too,
    a latency sample), the server's /metrics, or the agents' reports read from etcd
    (slots with a running container; the server does no work for it)."""

    def apps() -> tuple[int, float | None]:
        began = time.monotonic()
        found = client.apps()
        return sum(a.running for a in found), time.monotonic() - began

    def metrics() -> tuple[int, float | None]:
        return scrape_running(metrics_url), None

    def reports() -> tuple[int, float | None]:
        running = {
            (c["app"], c["slot"])
            for c in etcd_values(etcd, prefix + "reports/", page=1000)
            if c.get("state") == "running"
        }
        return len(running), None

    return {"apps": apps, "metrics": metrics, "etcd": reports}[how]


def run_size(hosts: int, replicas: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One size, from a fresh etcd to the victims' replicas running elsewhere."""
    specs = app_specs(replicas, args.per_app, args.replica_cpu, args.replica_memory)
    prefix = "/scale/"
    result: dict[str, Any] = {
        "hosts": hosts,
        "replicas": replicas,
        "apps": len(specs),
        "victims": VICTIMS,
        "ok": False,
    }
    connect_deadline = 60 + 0.1 * hosts
    load_deadline = args.timeout_factor * (120 + 0.01 * replicas)
    recovery_deadline = args.timeout_factor * (120 + 0.01 * replicas)
    result["deadlines_seconds"] = {
        "connect": connect_deadline,
        "load": load_deadline,
        "recovery": recovery_deadline,
    }
    cluster = Cluster(work)
    latency: LatencySampler | None = None
    reads: ReadsSampler | None = None
    watcher: Watcher | None = None
    try:
        cluster.etcd = etcd = EtcdServer(data_dir=work / "etcd" / "data").start()
        metrics_port = free_port()
        read_address = f"127.0.0.1:{free_port()}"
        read_port = ["--read-listen", read_address] if args.reads_from != "main-only" else []
        server_args = [
            *read_port,
            "--heartbeat-interval",
            args.heartbeat_interval,
            "--host-down-after",
            args.host_down_after,
            "--reschedule-after",
            args.reschedule_after,
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
            "--metrics-insecure",  # the server runs without TLS here (--insecure)
            "--log-level",  # the harness asks for debug; the last one given wins
            args.server_log_level,
        ]
        if hosts * DEFAULT_HOLD_MOVES_WHEN_DOWN <= VICTIMS:
            # Killing the victims downs most of so small a pool: the server would hold
            # their replicas where they are (as it should), and the host loss would
            # measure nothing. Said, not hidden.
            server_args += ["--hold-moves-when-down", "off"]
            result["hold_moves_when_down"] = "off"
            print(
                f"  {VICTIMS} of {hosts} hosts killed is most of the pool: the server "
                "runs with --hold-moves-when-down off"
            )
        cluster.server = server = FleetServerProcess(
            etcd.endpoint, prefix, work, None, extra_args=server_args
        ).start()
        assert server.process.pid is not None and etcd.pid is not None
        cp_pid, etcd_pid = server.process.pid, etcd.pid
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        cluster.client = client = server.client(timeout=120)
        progress = progress_counter(args.progress, client, metrics_url, etcd, prefix)

        # The hollow hosts: survivors in processes of at most 250, the victims apart.
        survivors = hosts - VICTIMS
        processes = math.ceil(survivors / HOSTS_PER_PROCESS)
        first = 0
        # The hollow hosts stand for other machines: with --hollow-nice they yield the
        # cpu to the control plane and etcd they share this one with.
        niced = ["nice", "-n", str(args.hollow_nice)] if args.hollow_nice else []
        common = ["--server", server.address, "--insecure", "--cpus", str(args.cpus)]
        common += ["--memory-gib", str(args.memory_gib)]
        for i in range(processes):
            count = survivors // processes + (i < survivors % processes)
            spread = max(2.0, count / 50)
            cmd = [*niced, sys.executable, "-m", "fleet.testing.hollow", *common]
            cmd += ["--hosts", str(count)]
            cmd += ["--first", str(first), "--name", "hollow", "--spread", f"{spread:g}"]
            proc = ManagedProcess(cmd, work / f"hollow-{i}.log", name=f"hollow {i}")
            cluster.hollow.append(niced_group(proc.start(), args.hollow_nice))
            cluster.hollow_first.append(first)
            first += count
        cmd = [*niced, sys.executable, "-m", "fleet.testing.hollow", *common]
        cmd += ["--hosts", str(VICTIMS)]
        cmd += ["--name", "victim", "--spread", "2"]
        victims = ManagedProcess(cmd, work / "victims.log", name="victims").start()
        cluster.victims = niced_group(victims, args.hollow_nice)
        result["hollow_processes"] = processes + 1

        began = time.monotonic()
        connected = 0
        connect_errors: list[str] = []
        while connected < hosts:
            for proc in [*cluster.hollow, cluster.victims]:
                if not proc.running:
                    raise Failed(f"{proc.name} exited", {"log": proc.log_tail(20)})
            try:
                connected = len([h for h in client.hosts() if h.connected])
            except FleetError as error:
                # Seen at 5,000 hosts while they connect: GetHosts CANCELLED by gRPC
                # now and then (the server logs nothing); counted, and asked again.
                connect_errors.append(f"{time.monotonic() - began:.1f}s: {error}"[:200])
            if time.monotonic() - began > connect_deadline:
                raise Failed("hosts to connect", {"connected": connected})
            time.sleep(0.5)
        result["connect_seconds"] = round(time.monotonic() - began, 2)
        result["connect_errors"] = connect_errors
        print(f"  {hosts} hosts connected in {result['connect_seconds']:.1f} s", flush=True)

        # ---------------------------------------------------------------- the load
        hollow_pids = [p.pid for p in cluster.hollow if p.pid is not None]
        if cluster.victims.pid is not None:
            hollow_pids.append(cluster.victims.pid)
        rest = {"control_plane": memory_status(cp_pid), "etcd": memory_status(etcd_pid)}
        result["rss_at_rest_bytes"] = {k: v["VmRSS"] for k, v in rest.items()}
        result["etcd_before"] = etcd_db(etcd)
        histograms_before = scrape_histograms(metrics_url)
        cpu_before = {
            "control_plane": cpu_seconds(cp_pid),
            "etcd": cpu_seconds(etcd_pid),
            "hollow": sum(cpu_seconds(p) for p in hollow_pids),
        }
        load_rss = RssSeries(server.address)  # where the apply's peak is made
        applied = time.monotonic()
        latency = LatencySampler(server.address, applied, args.sample_every)
        if args.sample_every > 0:
            latency.start()
        reads = ReadsSampler(
            read_address if args.reads_from == "read-port" else server.address,
            applied,
            args.sample_reads,
            "read" if args.reads_from == "read-port" else "main",
        )
        if args.sample_reads > 0:
            reads.start()
        watcher = Watcher(
            etcd, prefix, replicas, applied, {"control_plane": cp_pid, "etcd": etcd_pid}
        ).start()

        def load_figures(window: float) -> dict[str, Any]:
            """What the load cost from the apply to ``window`` seconds after it."""
            histograms_after = scrape_histograms(metrics_url)
            heartbeats_before = histograms_before["fleet_heartbeat_seconds"]
            heartbeats_after = histograms_after["fleet_heartbeat_seconds"]
            cpu_after = {
                "control_plane": cpu_seconds(cp_pid),
                "etcd": cpu_seconds(etcd_pid),
                "hollow": sum(cpu_seconds(p) for p in hollow_pids),
            }
            placed_at = watcher.all_placed_at
            first_placed = next((t for t, n in watcher.placed if n > 0), None)
            samples = [s for _, s in polls] + [s for _, s in latency.samples]
            heartbeats = histogram_figures(heartbeats_before, heartbeats_after)
            return {
                "all_running_seconds": round(window, 2),
                "all_placed_seconds": round(placed_at, 2) if placed_at is not None else None,
                "first_placed_seconds": first_placed,
                "placements_per_second": round(replicas / placed_at) if placed_at else None,
                "running_per_second": round(replicas / window),
                "cpu_seconds": {k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_after},
                "cpu_share_of_one_core": {
                    k: round((cpu_after[k] - cpu_before[k]) / window, 2) for k in cpu_after
                },
                "peak_rss_bytes": dict(watcher.peak_rss),
                "control_plane_vmhwm_bytes": memory_status(cp_pid)["VmHWM"],
                # What it holds once all run, against the peak of the ramp to it.
                "control_plane_rss_bytes": memory_status(cp_pid)["VmRSS"],
                "get_apps_seconds": percentiles(samples),
                "get_apps_poll_seconds": percentiles([s for _, s in polls]),
                "get_apps_errors": len(latency.errors) + len(poll_errors),
                "get_apps_error_examples": [e for _, e in latency.errors[:3]] + poll_errors[:3],
                "reads_seconds": reads.figures(),
                "heartbeats": heartbeats["n"],
                "heartbeat_seconds": heartbeats,
                "report_write_seconds": histogram_figures(
                    histograms_before["fleet_report_write_seconds"],
                    histograms_after["fleet_report_write_seconds"],
                ),
                "report_batch_write_seconds": histogram_figures(
                    histograms_before.get("fleet_report_batch_write_seconds", {}),
                    histograms_after.get("fleet_report_batch_write_seconds", {}),
                ),
                "loop_lag_seconds": histogram_figures(
                    histograms_before["fleet_loop_lag_seconds"],
                    histograms_after["fleet_loop_lag_seconds"],
                ),
                "gc_pause_seconds": histogram_figures(
                    histograms_before["fleet_gc_pause_seconds"],
                    histograms_after["fleet_gc_pause_seconds"],
                ),
                # The controller's rounds, and its plans of one app each (n: how many).
                "round_seconds": histogram_figures(
                    histograms_before["fleet_reconcile_seconds"],
                    histograms_after["fleet_reconcile_seconds"],
                ),
                "plan_seconds": histogram_figures(
                    histograms_before["fleet_scheduling_seconds"],
                    histograms_after["fleet_scheduling_seconds"],
                ),
                "call_seconds": {
                    name.rpartition("/")[2]: histogram_figures(
                        histograms_before.get(name, {}), figures
                    )
                    for name, figures in histograms_after.items()
                    if name.startswith(CALLS + "/")
                },
                "heartbeat_buckets_delta": {
                    le: int(heartbeats_after[le] - heartbeats_before.get(le, 0))
                    for le in heartbeats_after
                    if le not in ("count", "sum")
                },
                "etcd": etcd_db(etcd),
                "placed_series": list(watcher.placed),
                "running_series": list(running_series),
            }

        profile_from: float | None = None  # seconds after the apply

        def profile_now() -> None:
            nonlocal profile_from
            due = time.monotonic() - applied >= args.profile_delay
            if args.profile and profile_from is None and due:
                profile_from = round(time.monotonic() - applied, 2)
                result["profile_from_seconds_after_apply"] = profile_from
                cluster.profiler = start_profiler(cp_pid, args.profile, work / "profile.txt")

        profile_now()
        client.apply(specs)
        result["apply_call_seconds"] = round(time.monotonic() - applied, 3)
        polls: list[tuple[float, float]] = []
        running_series: list[tuple[float, int]] = []
        poll_errors: list[str] = []
        running = 0
        stalled_since, stalled_at = time.monotonic(), 0  # running unchanged since then
        while True:
            profile_now()
            poll_began = time.monotonic()
            try:
                running, seconds = progress()
                if seconds is not None:
                    polls.append((poll_began - applied, seconds))
                if not running_series or running_series[-1][1] != running:
                    running_series.append((round(poll_began - applied, 3), running))
            except Exception as error:
                poll_errors.append(repr(error)[:200])
            if running >= replicas:
                break
            if running != stalled_at:
                stalled_since, stalled_at = time.monotonic(), running
            elif time.monotonic() - stalled_since > STALLED and "not_running" not in result:
                # Almost all running and no progress: say which replicas and why (a look
                # that fails, the server being that busy, is said and the wait goes on).
                try:
                    result["not_running"] = found = not_running(cluster, prefix)
                except Exception as error:
                    result["not_running"] = found = [{"error": repr(error)[:200]}]
                print(f"  running stalled at {running:,} for {STALLED:.0f} s: {found[:3]}")
            if time.monotonic() - applied > load_deadline:
                with contextlib.suppress(Exception):
                    result["load_at_deadline"] = load_figures(time.monotonic() - applied)
                raise Failed(
                    "all replicas running",
                    {
                        "running": running,
                        "replica_keys": watcher.placed[-1][1] if watcher.placed else 0,
                        "running_series": running_series,
                        "placed_series": watcher.placed,
                        "get_apps_seconds": percentiles(
                            [s for _, s in polls] + [s for _, s in latency.samples]
                        ),
                    },
                )
            time.sleep(max(0.0, args.poll - (time.monotonic() - poll_began)))
        all_running = time.monotonic() - applied
        latency.stop()
        reads.stop()
        watcher.stop()
        # The watcher's last look may have come before the last commit.
        if watcher.all_placed_at is None and etcd_count(etcd, prefix + "replicas/") >= replicas:
            watcher.all_placed_at = time.monotonic() - applied
        result["load"] = load_figures(all_running)
        result["load"]["control_plane_rss_series"] = load_rss.stop()
        placed_at = watcher.all_placed_at
        load = result["load"]
        print(
            f"  {replicas:,} running {all_running:.1f} s after the apply "
            f"(all placed at {_at(placed_at)} s); control plane peak RSS "
            f"{load['peak_rss_bytes'].get('control_plane', 0) / MiB:.0f} MiB",
            flush=True,
        )
        if cluster.profiler is not None:
            result["profile"] = finish_profiler(cluster.profiler, args.profile, work)
            cluster.profiler = None

        # ---------------------------------------------------------------- the kill
        on_victims = sum(
            1 for r in etcd_values(etcd, prefix + "replicas/") if r["host"].startswith("victim-")
        )
        cpu_before_kill = cpu_seconds(cp_pid)
        result["recovery"] = recover(
            cluster, prefix, replicas, on_victims, recovery_deadline, progress
        )
        result["recovery"]["cpu_seconds_control_plane"] = round(
            cpu_seconds(cp_pid) - cpu_before_kill, 1
        )
        rec = result["recovery"]
        print(
            f"  {on_victims:,} replicas of {VICTIMS} killed hosts running elsewhere "
            f"{rec['seconds']:.1f} s after the kill",
            flush=True,
        )
        result["control_plane_vmhwm_bytes"] = memory_status(cp_pid)["VmHWM"]

        # ------------------------------------------------------------- the restart
        if args.restart:
            result["restart"] = restart(cluster, prefix, hosts - VICTIMS, replicas, args)
            rs = result["restart"]
            print(
                f"  control plane killed and started again: {rs['reconnected']:,} hosts back "
                f"{_at(rs['reconnected_seconds'])} s, all running again "
                f"{_at(rs['settled_seconds'])} s after the kill; {rs['hosts_marked_down']} "
                f"hosts marked down, {rs['replicas_moved']} replicas moved",
                flush=True,
            )
        result["etcd_end"] = etcd_db(etcd)
        result["ok"] = True
    except Failed as failure:
        result["failed"] = {"waiting_for": failure.what, "reached": failure.reached}
        if cluster.profiler is not None:
            result["profile"] = finish_profiler(cluster.profiler, args.profile, work)
            cluster.profiler = None
        print(f"  FAILED waiting for {failure.what}: {json.dumps(failure.reached)[:400]}")
        if cluster.server is not None:
            print("  server log tail:\n" + cluster.server.process.log_tail(30))
    finally:
        if latency is not None:
            latency.stop()
        if reads is not None:
            reads.stop()
        if watcher is not None:
            watcher.stop()
        cluster.close()
        # The first server's log and the restarted one's (``restart`` names it).
        result["server_log"] = log_counts(
            sorted(work.glob("server-*.log")), parse_duration(args.host_down_after)
        )
        result["hollow_stalls"] = hollow_stalls(
            [p.log_path for p in [*cluster.hollow, cluster.victims] if p is not None],
            parse_duration(args.host_down_after),
        )
    return result


def log_counts(paths: list[Path], ttl: float) -> dict[str, int]:
    """What the server's log says about leadership and trouble (WARNING and above), how
    many hosts it marked down for their silence (the killed ones are not: their streams
    end), and the most of those marks within any ``ttl`` seconds: whether they came at
    once (most of the pool, as a control plane's own stall would make them) or spread
    over the run; and how often the controller held the moves of hosts down because most
    of the pool was (``--hold-moves-when-down``)."""
    counts = {
        "leadership_lost": 0,
        "warnings": 0,
        "errors": 0,
        "hosts_silent": 0,
        "moves_held": 0,
    }
    marks: list[float] = []
    for path in paths:
        with contextlib.suppress(OSError), open(path, errors="replace") as f:
            for line in f:
                counts["leadership_lost"] += "is no longer the leader" in line
                counts["moves_held"] += "hosts are down at once" in line
                if "nothing heard for" in line:
                    counts["hosts_silent"] += 1
                    if (at := _log_time(line)) is not None:
                        marks.append(at)
                counts["warnings"] += " WARNING " in line and "INSECURE" not in line
                counts["errors"] += " ERROR " in line or " CRITICAL " in line
    counts["hosts_silent_most_within_ttl"] = most_within(marks, ttl)
    return counts


def _log_time(line: str) -> float | None:
    """The seconds of a log line's stamp (``2026-12-06 11:50:31,137 WARNING ...``)."""
    return epoch(line[:23].replace(" ", "T", 1).replace(",", ".") + "Z")


def most_within(times: list[float], window: float) -> int:
    """The most of ``times`` within any ``window`` seconds."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most


def hollow_stalls(paths: list[Path], ttl: float) -> dict[str, float]:
    """The hollow processes' own stalls (``fleet.testing.hollow.watch_own_loop``): a
    host silent because the process standing in for its machine got no cpu is the
    benchmark's doing, not the control plane's."""
    found: list[float] = []
    within_ttl = 0.0
    for path in paths:
        with contextlib.suppress(OSError), open(path, errors="replace") as f:
            stalls = stalls_in(f)
        found += [seconds for _, seconds in stalls]
        within_ttl = max(within_ttl, most_stalled_within(stalls, ttl))
    return {
        "count": len(found),
        "longest_seconds": max(found, default=0.0),
        # The most one process was stalled within any TTL of a host's silence.
        "most_within_ttl_seconds": round(within_ttl, 1),
        "ttl_seconds": ttl,
    }


def recover(
    cluster: Cluster,
    prefix: str,
    replicas: int,
    on_victims: int,
    deadline: float,
    progress: Progress,
) -> dict[str, Any]:
    """SIGKILL the victims' process; time until all ``replicas`` run with none on a victim."""
    assert cluster.etcd is not None
    assert cluster.victims is not None and cluster.victims.pid is not None
    etcd = cluster.etcd
    killed, killed_at = time.monotonic(), time.time()
    os.kill(cluster.victims.pid, signal.SIGKILL)
    cluster.victims.stop()  # reaps it
    gone_at: float | None = None  # no victim's liveness key left in etcd
    dropped_at: float | None = None  # GetApps counts fewer than all running
    checked = -math.inf
    running = replicas
    left = on_victims
    series: list[tuple[float, int]] = []
    while True:
        began = time.monotonic()
        if gone_at is None and etcd_count(etcd, prefix + "alive/victim-") == 0:
            gone_at = began - killed
        with contextlib.suppress(Exception):
            running, _ = progress()
            if not series or series[-1][1] != running:
                series.append((round(began - killed, 3), running))
        if dropped_at is None and running < replicas:
            dropped_at = began - killed
        done = gone_at is not None and running >= replicas
        if done and (dropped_at is not None or began - checked >= RECOVERY_CHECK):
            # Verified in etcd: no replica left on a victim host.
            checked = began
            left = sum(
                1
                for r in etcd_values(etcd, prefix + "replicas/")
                if r["host"].startswith("victim-")
            )
            if left == 0:
                break
        if began - killed > deadline:
            raise Failed(
                "the killed hosts' replicas running elsewhere",
                {"running": running, "left_on_victims": left, "series": series},
            )
        time.sleep(max(0.0, WATCH - (time.monotonic() - began)))
    seconds = round(time.monotonic() - killed, 2)
    assert cluster.server is not None
    written = writes_after(cluster.server.process.log_path, killed_at)
    return {
        "replicas_on_victims": on_victims,
        "seconds": seconds,
        # Where the time went: the hosts seen down (their liveness keys gone), the
        # controller's commits of the moved replicas (its log), then the desired sets
        # pushed, the containers started and reported (the rest, to "seconds").
        "replicas_written": written[0],
        "last_write_seconds": _round(written[1]),
        "leases_gone_seconds": _round(gone_at),  # (the name of older runs) alive/ keys gone
        "running_dropped_seconds": _round(dropped_at),
        "running_series": series,
    }


def writes_after(log_path: Path, since: float) -> tuple[int, float | None]:
    """Replicas the controller logged as written after ``since`` (epoch seconds), and
    the seconds from ``since`` to the last such line (the log's local time, to the ms)."""
    total, last = 0, None
    with contextlib.suppress(OSError), open(log_path, errors="replace") as f:
        for line in f:
            if "replica(s) written" not in line:
                continue
            try:
                at = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
                at += int(line[20:23]) / 1000
                count = int(line.split("replica(s) written")[0].rsplit(":", 1)[1])
            except (ValueError, IndexError):
                continue
            if at >= since and count:  # (a rollout's end writes 0 replicas, later)
                total, last = total + count, at - since
    return total, last


SETTLED_WINDOW = 15.0  # seconds: the settled pool's cpu (``restart``)
RSS_EVERY = 0.1  # seconds between two reads of the restarted server's RSS
RSS_STEP = 4 * MiB  # a sample is kept when the RSS moved this much since the last kept


class RssSeries:
    """The RSS of the `fleet server` listening on ``address`` over time, read every
    ``RSS_EVERY`` s from its start (a thread; the process is found by its command line,
    since a restarted server's pid is known only once it answers): where a restart's
    peak is made (session 33: in the half second the start gate opened)."""

    def __init__(self, address: str) -> None:
        self._needle = f"--listen\0{address}\0".encode()
        self._began = time.monotonic()
        self.samples: list[tuple[float, int]] = []  # (seconds, MiB), changes of RSS_STEP
        self.peak: tuple[float, int] = (0.0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-series", daemon=True)
        self._thread.start()

    def _pid(self) -> int | None:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    command = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if b"fleet\0server\0" in command and self._needle in command + b"\0":
                        return int(entry)
        return None

    def _run(self) -> None:
        pid = None
        kept = -RSS_STEP
        while not self._stop.wait(RSS_EVERY):
            if pid is None or not Path(f"/proc/{pid}").exists():
                pid = self._pid()
                continue
            rss = memory_status(pid)["VmRSS"]
            if not rss:  # (it exited: a zombie has no RSS)
                pid = None
                continue
            at = round(time.monotonic() - self._began, 2)
            if rss > self.peak[1] * MiB:
                self.peak = (at, rss // MiB)
            if abs(rss - kept) >= RSS_STEP:
                self.samples.append((at, rss // MiB))
                kept = rss

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return {
            "peak_mib": self.peak[1],
            "peak_seconds": self.peak[0],
            "series_mib": self.samples,
        }


def restart(
    cluster: Cluster, prefix: str, hosts: int, replicas: int, args: argparse.Namespace
) -> dict[str, Any]:
    """#24 item 6: SIGKILL the control plane with every host connected and start it again
    on the same address. Times until every host's liveness key is back in etcd and
    until every replica is reported running again; then watches, until a host the new
    leader took for lost would have been moved (its start grace, the reschedule time and
    a margin), for replicas that change host and for host-down events."""
    assert cluster.etcd is not None and cluster.server is not None
    etcd = cluster.etcd
    before = {(r["app"], r["slot"]): r["host"] for r in etcd_values(etcd, prefix + "replicas/")}
    revision_at_kill = etcd_revision(etcd)
    killed = time.monotonic()
    killed_at = time.time()
    since = iso_at(killed_at)
    cluster.server.kill()
    rss = RssSeries(cluster.server.address)
    cluster.server = server = cluster.server.again("server-restarted.log").start(
        timeout=120, probe="info"
    )
    profiler = None
    profiled = Path(tempfile.mkdtemp(prefix="fleet-bench-restart-profile-"))
    pid = server.process.pid
    if args.profile_restart and pid is not None:
        profiler = start_profiler(pid, args.profile_restart, profiled / "profile.txt")
    if cluster.client is not None:
        cluster.client.close()
    cluster.client = client = server.client(timeout=60)
    deadline = args.timeout_factor * (60 + 0.01 * hosts)
    reconnected_at = reported_at = settled_at = None
    last_back = last_report = None
    back_stamps: dict[str, float] = {}
    report_stamps: dict[str, float] = {}
    back = reported = running = 0
    while settled_at is None:
        now = time.monotonic()
        if now - killed > deadline:
            raise Failed(
                "the pool settled after a restart",
                {"alive": back, "reported": reported, "running": running},
            )
        if reconnected_at is None:
            # Connected again: a liveness key written since the kill (the old server's
            # stay until its lease expires, or are taken over with it).
            try:
                alive = etcd_values(etcd, prefix + "alive/hollow-")
            except OSError:  # etcd too slow to answer in the storm (seen at 5,000 hosts)
                continue
            back = sum(1 for r in alive if r["connected_at"] >= since)
            if back >= hosts:
                reconnected_at = now - killed
                # When the last was written, by its own stamp: a look at 5,000 keys
                # through etcd's JSON gateway takes a second or more in the storm.
                back_stamps = spread(epoch(r["connected_at"]) - killed_at for r in alive)
                last_back = back_stamps["max"]
        elif reported_at is None:
            # Reported again: the host's status record written by its new session (at
            # its first heartbeat), so what is stored of it is what it says now, not
            # what it said before the restart (its reports are kept over a restart).
            try:
                status = etcd_values(etcd, prefix + "status/hollow-")
            except OSError:
                continue
            reported = sum(1 for r in status if r["reported_at"] >= since)
            if reported >= hosts:
                reported_at = now - killed
                # The last report's own stamp: when the server worked it out, its write
                # stored within a report's write time after (``report stored`` above).
                report_stamps = spread(epoch(r["reported_at"]) - killed_at for r in status)
                last_report = report_stamps["max"]
        else:
            with contextlib.suppress(Exception):
                running = sum(a.running for a in client.apps())
            if running >= replicas:
                settled_at = now - killed
        time.sleep(max(0.0, WATCH - (time.monotonic() - now)))
    rewritten = etcd_written_since(etcd, prefix + "reports/", revision_at_kill)
    profile = finish_profiler(profiler, args.profile_restart, profiled) if profiler else None
    grace = max(parse_duration(args.host_down_after), AGENTS_BACK_WITHIN)
    watch_until = killed + grace + parse_duration(args.reschedule_after) + 5
    while time.monotonic() < watch_until:
        time.sleep(1.0)  # the pace of the check below
    # What the settled pool costs the server: its share of a core over SETTLED_WINDOW
    # seconds while every host heartbeats and nothing changes.
    settled_cpu, settled_from = cpu_seconds(pid), time.monotonic()
    time.sleep(SETTLED_WINDOW)
    settled_share = (cpu_seconds(pid) - settled_cpu) / (time.monotonic() - settled_from)
    after = {(r["app"], r["slot"]): r["host"] for r in etcd_values(etcd, prefix + "replicas/")}
    # The restarted server holds the whole state without the apply's ramp: its peak and
    # what it holds once settled say what the state costs apart from the ramp's work.
    memory = memory_status(pid)
    rss_series = rss.stop()
    downs = [
        e.host
        for e in client.events(since_seconds=time.time() - killed_at + 1)
        if e.kind == "host-down" and not e.host.startswith("victim-")  # (those are gone)
    ]
    return {
        "hosts": hosts,
        "reconnected": back,
        "reconnected_seconds": _round(reconnected_at),
        "reported_seconds": _round(reported_at),
        # By the keys' own stamps, not when a look saw them (see above).
        "reconnected_last_stamp_seconds": _round(last_back),
        "reported_last_stamp_seconds": _round(last_report),
        # How the hosts came back and reported over time (quantiles of those stamps).
        "reconnected_stamps": back_stamps,
        "reported_stamps": report_stamps,
        "settled_seconds": _round(settled_at),
        "reports_rewritten": rewritten,
        "watched_seconds": round(time.monotonic() - killed, 1),
        "hosts_marked_down": len(downs),
        "hosts_marked_down_examples": downs[:5],
        "replicas_moved": sum(1 for k, h in before.items() if after.get(k) != h),
        "control_plane_rss_bytes": memory["VmRSS"],
        "control_plane_vmhwm_bytes": memory["VmHWM"],
        # Its RSS from its start (seconds after the kill): when the peak was made.
        "control_plane_rss_series": rss_series,
        "settled_cpu_share_of_one_core": round(settled_share, 3),
        "settled_window_seconds": SETTLED_WINDOW,
        **({"profile": profile} if profile is not None else {}),
    }


def start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).parent / "py-spy"
    cmd = [str(py_spy), "record", "-p", str(pid), "-d", f"{seconds:g}", "-f", "raw"]
    cmd += ["--nonblocking", "-o", str(out)]
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - the child holds it
    try:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def finish_profiler(proc: subprocess.Popen[bytes], seconds: float, work: Path) -> dict[str, Any]:
    try:
        proc.wait(seconds + 60)
    except subprocess.TimeoutExpired:
        _end(proc)
    raw = work / "profile.txt"
    if not raw.exists():
        log = (work / "profile.log").read_text(errors="replace")[-500:]
        return {"error": f"py-spy wrote nothing: {log}"}
    summary = summarize_profile(raw)
    summary["seconds"] = seconds
    summary["raw_bytes"] = raw.stat().st_size
    return summary


def spread(values: Iterable[float]) -> dict[str, float]:
    """Quantiles of ``values`` (seconds), for how a storm went over time."""
    found = sorted(values)
    if not found:
        return {}
    at = {"p10": 0.1, "p50": 0.5, "p90": 0.9, "p99": 0.99}
    quantiles = {name: found[min(len(found) - 1, int(q * len(found)))] for name, q in at.items()}
    return {name: round(v, 2) for name, v in {**quantiles, "max": found[-1]}.items()}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _at(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f}"


# ---------------------------------------------------------------------- output


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value * 1000:.0f}"


def _hb(figures: dict[str, Any], q: str) -> str:
    """A heartbeat quantile in ms, ">2500" when above the histogram's top bucket."""
    return (">" if figures.get(f"{q}_above_top_bucket") else "") + _ms(figures[q])


def size_table(run: dict[str, Any]) -> str:
    """The figures of one size, one per line."""
    head = f"N = {run['hosts']:,} hosts, R = {run['replicas']:,} replicas ({run['apps']} apps)"
    lost = run.get("server_log", {}).get("leadership_lost", 0)
    if "load" not in run:
        failed = run.get("failed", {})
        reached = failed.get("reached", {})
        return (
            head
            + f": FAILED waiting for {failed.get('waiting_for', '?')}; reached "
            + ", ".join(f"{k} {v}" for k, v in reached.items() if isinstance(v, int | str))
            + f"; the server lost its leadership {lost} times"
        )
    load, mib = run["load"], MiB
    cpu, share = load["cpu_seconds"], load["cpu_share_of_one_core"]
    rows = [
        ("apply -> all running", f"{load['all_running_seconds']:.1f} s"),
        ("apply -> all placed in etcd", f"{_at(load['all_placed_seconds'])} s"),
        ("placements/s committed", f"{load['placements_per_second'] or 0:,}"),
        ("control plane peak RSS", f"{load['peak_rss_bytes']['control_plane'] / mib:.0f} MiB"),
        ("control plane RSS at rest", f"{run['rss_at_rest_bytes']['control_plane'] / mib:.0f} MiB"),
        (
            "control plane cpu",
            f"{cpu['control_plane']:.1f} s ({share['control_plane']:.0%} of a core)",
        ),
        ("etcd cpu / hollow hosts cpu", f"{cpu['etcd']:.1f} s / {cpu['hollow']:.1f} s"),
        ("etcd peak RSS", f"{load['peak_rss_bytes'].get('etcd', 0) / mib:.0f} MiB"),
        ("etcd db size", f"{load['etcd']['db_size_bytes'] / mib:.1f} MiB"),
        (
            "get apps (main port) p50 / p99",
            f"{_ms(load['get_apps_seconds']['p50'])} / {_ms(load['get_apps_seconds']['p99'])} "
            f"ms (n={load['get_apps_seconds']['n']}, errors {load['get_apps_errors']})",
        ),
        (
            "heartbeat p50 / p99",
            f"{_hb(load['heartbeat_seconds'], 'p50')} / {_hb(load['heartbeat_seconds'], 'p99')} "
            f"ms (n={load['heartbeat_seconds']['n']})",
        ),
    ]
    if load.get("loop_lag_seconds", {}).get("n"):
        lag = load["loop_lag_seconds"]
        rows.append(
            ("event loop lag p50 / p99", f"{_hb(lag, 'p50')} / {_hb(lag, 'p99')} ms (n={lag['n']})")
        )
    if load.get("gc_pause_seconds", {}).get("n"):
        pauses = load["gc_pause_seconds"]
        rows.append(
            (
                "gc pauses p50 / p99, total",
                f"{_hb(pauses, 'p50')} / {_hb(pauses, 'p99')} ms, "
                f"{pauses['n'] * pauses['mean']:.1f} s (n={pauses['n']})",
            )
        )
    for method, figures in sorted(load.get("call_seconds", {}).items()):
        if figures.get("n"):
            rows.append(
                (
                    f"{method} handler p50 / p99",
                    f"{_hb(figures, 'p50')} / {_hb(figures, 'p99')} ms (n={figures['n']})",
                )
            )
    port = load.get("reads_seconds", {}).get("port", "main")
    for name, figures in load.get("reads_seconds", {}).items():
        if isinstance(figures, dict) and figures.get("n"):
            rows.append(
                (
                    f"{name} ({port} port) p50 / p99",
                    f"{_ms(figures['p50'])} / {_ms(figures['p99'])} ms (n={figures['n']})",
                )
            )
    if "report_write_seconds" in load:
        writes = load["report_write_seconds"]
        rows.append(
            (
                "report stored p50 / p99",
                f"{_hb(writes, 'p50')} / {_hb(writes, 'p99')} ms (n={writes['n']})",
            )
        )
    if "recovery" in run:
        rec = run["recovery"]
        rows.append(
            (
                f"re-place {VICTIMS} killed hosts",
                f"{rec['seconds']:.1f} s ({rec['replicas_on_victims']:,} replicas; down "
                f"at {_at(rec['leases_gone_seconds'])} s, re-placed in etcd at "
                f"{_at(rec.get('last_write_seconds'))} s)",
            )
        )
    else:
        rows.append((f"re-place {VICTIMS} killed hosts", "FAILED"))
    if "restart" in run:
        rs = run["restart"]
        rows.append(
            (
                "control plane restart",
                f"hosts back {_at(rs['reconnected_seconds'])} s (the last by its key's stamp "
                f"{_at(rs.get('reconnected_last_stamp_seconds'))} s), all reported again "
                f"{_at(rs.get('reported_seconds'))} s (the last by its stamp "
                f"{_at(rs.get('reported_last_stamp_seconds'))} s), all running "
                f"{_at(rs['settled_seconds'])} s; {rs['hosts_marked_down']} hosts down, "
                f"{rs['replicas_moved']} replicas moved, "
                f"{rs.get('reports_rewritten', '?')} reports written again",
            )
        )
        series = rs.get("control_plane_rss_series")
        if series:
            rows.append(
                (
                    "restarted server's peak RSS",
                    f"{series['peak_mib']} MiB, {series['peak_seconds']:.1f} s after the kill; "
                    f"{rs['control_plane_rss_bytes'] // MiB} MiB settled",
                )
            )
    rows.append(("leadership lost (server log)", f"{lost} times"))
    silent = run.get("server_log", {}).get("hosts_silent", 0)
    burst = run.get("server_log", {}).get("hosts_silent_most_within_ttl", "?")
    stalls = run.get("hollow_stalls", {})
    rows.append(
        (
            "hosts marked down for silence",
            f"{silent}, at most {burst}"
            f" within {stalls.get('ttl_seconds', 0):g} s (hollow processes stalled "
            f"{stalls.get('count', 0)} times, the "
            f"longest {stalls.get('longest_seconds', 0):.1f} s; one process at most "
            f"{stalls.get('most_within_ttl_seconds', 0):.1f} s within "
            f"{stalls.get('ttl_seconds', 0):g} s); moves held "
            f"{run.get('server_log', {}).get('moves_held', '?')} times",
        )
    )
    width = max(len(r[0]) for r in rows) + 2
    return "\n".join([head, *(f"  {name:<{width}}{value}" for name, value in rows)])


def summary_table(runs: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'hosts':>6} {'replicas':>9} {'running s':>10} {'placed/s':>9} {'CP MiB':>7} "
        f"{'CP cpu s':>9} {'etcd MiB':>9} {'get apps ms':>12} {'heartbeat ms':>13} "
        f"{'re-place s':>11}"
    )
    lines = [header, "-" * len(header)]
    for run in runs:
        load = run.get("load")
        if load is None:
            reached = run.get("failed", {}).get("reached", {})
            part = run.get("load_at_deadline")
            note = (
                f"  FAILED: {reached.get('running', 0):,} running, "
                f"{reached.get('replica_keys', 0):,} placed at the "
                f"{run['deadlines_seconds']['load']:.0f} s deadline"
            )
            if part:
                note += (
                    f"; CP peak {part['peak_rss_bytes'].get('control_plane', 0) / MiB:.0f} MiB, "
                    f"cpu {part['cpu_seconds']['control_plane']:.0f} s; get apps "
                    f"{_ms(part['get_apps_seconds']['p50'])}/"
                    f"{_ms(part['get_apps_seconds']['p99'])} ms; heartbeat "
                    f"{_hb(part['heartbeat_seconds'], 'p50')}/"
                    f"{_hb(part['heartbeat_seconds'], 'p99')} ms"
                )
            lines.append(f"{run['hosts']:>6,} {run['replicas']:>9,}{note}")
            continue
        apps, hb = load["get_apps_seconds"], load["heartbeat_seconds"]
        rec = run.get("recovery")
        lines.append(
            f"{run['hosts']:>6,} {run['replicas']:>9,} {load['all_running_seconds']:>10.1f} "
            f"{load['placements_per_second'] or 0:>9,} "
            f"{load['peak_rss_bytes']['control_plane'] / MiB:>7.0f} "
            f"{load['cpu_seconds']['control_plane']:>9.1f} "
            f"{load['etcd']['db_size_bytes'] / MiB:>9.1f} "
            f"{_ms(apps['p50']) + '/' + _ms(apps['p99']):>12} "
            f"{_hb(hb, 'p50') + '/' + _hb(hb, 'p99'):>13} "
            f"{(format(rec['seconds'], '.1f') if rec else 'FAILED'):>11}"
        )
    return "\n".join(lines)


def plot(runs: Sequence[dict[str, Any]], path: Path, subtitle: str = "") -> bool:
    """Time to running (and to re-place 100 hosts) and control-plane memory against N."""
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is not installed (pip install -e '.[bench]')")
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in runs if "load" in r]
    failed = [r for r in runs if "load" not in r]
    n = [r["hosts"] for r in done]
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for r in failed:
        deadline = r["deadlines_seconds"]["load"]
        time_axis.plot([r["hosts"]], [deadline], "rx", markersize=10)
        time_axis.annotate(
            f"{r['replicas']:,}: not all running\nby the {deadline:.0f} s deadline",
            (r["hosts"], deadline),
            textcoords="offset points",
            xytext=(-60, -28),
            color="red",
            fontsize=8,
        )
    time_axis.plot(n, [r["load"]["all_running_seconds"] for r in done], "o-", label="all running")
    placed = [(r["hosts"], r["load"]["all_placed_seconds"]) for r in done]
    placed = [(x, y) for x, y in placed if y is not None]
    if placed:
        time_axis.plot(*zip(*placed, strict=True), "s--", label="all placed (etcd)")
    recovered = [(r["hosts"], r["recovery"]["seconds"]) for r in done if "recovery" in r]
    if recovered:
        time_axis.plot(*zip(*recovered, strict=True), "^:", label=f"re-place {VICTIMS} hosts")
    for r in done:
        time_axis.annotate(f"{r['replicas']:,}", (r["hosts"], r["load"]["all_running_seconds"]))
    time_axis.set_xlabel("hosts (N)")
    time_axis.set_ylabel("seconds after the apply / the kill")
    time_axis.set_title("time (labels: replicas)")
    time_axis.set_ylim(bottom=0)
    time_axis.legend(loc="upper left")
    memory_axis.plot(
        n, [r["load"]["peak_rss_bytes"]["control_plane"] / MiB for r in done], "o-", label="peak"
    )
    memory_axis.plot(
        n, [r["rss_at_rest_bytes"]["control_plane"] / MiB for r in done], "s--", label="at rest"
    )
    for r in failed:
        part = r.get("load_at_deadline")
        if part:
            peak = part["peak_rss_bytes"].get("control_plane", 0) / MiB
            memory_axis.plot([r["hosts"]], [peak], "rx", markersize=10)
            memory_axis.annotate(
                "peak until the deadline",
                (r["hosts"], peak),
                textcoords="offset points",
                xytext=(-120, -4),
                color="red",
                fontsize=8,
            )
    memory_axis.set_xlabel("hosts (N)")
    memory_axis.set_ylabel("MiB")
    memory_axis.set_title("control plane resident memory")
    memory_axis.set_ylim(bottom=0)
    memory_axis.legend(loc="upper left")
    title = "fleet scale: one control plane, one etcd, N hollow hosts"
    figure.suptitle(title + (f"\n{subtitle}" if subtitle else ""))
    for axis in (time_axis, memory_axis):
        low, high = axis.get_xlim()
        axis.set_xlim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def subtitle(settings: dict[str, Any]) -> str:
    """How the run watched the load, for the plot."""
    progress = {
        "apps": "GetApps",
        "metrics": "the server's /metrics",
        "etcd": "the agents' reports in etcd",
    }[settings.get("progress", "apps")]
    polls = settings.get("poll_seconds", {})
    text = f"running counted with {progress} every {polls.get('progress', 1):g} s"
    sample = polls.get("get_apps_sample")
    text += f", GetApps also every {sample:g} s" if sample else ", no other GetApps"
    return text + f"; {settings['victims']} hosts killed at once"


def print_profile(profile: dict[str, Any], top: int = 15) -> None:
    if "error" in profile:
        print(f"profile: {profile['error']}")
        return
    print(f"\nprofile of the control plane: {profile['samples']} samples, {profile['seconds']} s")
    for kind in ("by_task", "self", "inclusive_fleet", "self_by_file"):
        print(f"  {kind}:")
        for row in profile[kind][:top]:
            print(f"    {row['share']:6.1%}  {row['frame']}")


# ---------------------------------------------------------------------- main


def _memory_bytes(text: str) -> int:
    [spec] = app_specs(1, 1, 0.1, text)
    return int(spec.resources.memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--hosts", default="200,500,1000", help="sizes N, comma-separated")
    parser.add_argument("--replicas-per-host", type=int, default=20)
    parser.add_argument("--replicas", type=int, help="R for every N (overrides per host)")
    parser.add_argument("--per-app", type=int, default=2_000, help="replicas per app, at most")
    parser.add_argument("--replica-cpu", type=float, default=0.1)
    parser.add_argument("--replica-memory", default="64Mi")
    parser.add_argument("--cpus", type=float, default=16.0, help="of each hollow host")
    parser.add_argument("--memory-gib", type=int, default=64, help="of each hollow host")
    parser.add_argument(
        "--progress",
        choices=("apps", "metrics", "etcd"),
        default="apps",
        help="count running replicas with GetApps (a latency sample each), the server's "
        "/metrics, or the agents' reports in etcd",
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between counts")
    parser.add_argument(
        "--sample-every", type=float, default=0.5, help="GetApps from a 2nd client (0: off)"
    )
    parser.add_argument(
        "--sample-reads",
        type=float,
        default=0,
        help="seconds between calls of get apps, get hosts, ps APP and endpoints from a 3rd "
        "client (0: off)",
    )
    parser.add_argument(
        "--reads-from",
        choices=("read-port", "main", "main-only"),
        default="read-port",
        help="where the 3rd client reads: the server's read port (--read-listen) or its main "
        "port; main-only: the server has no read port (a server's default)",
    )
    parser.add_argument("--heartbeat-interval", default="5s")
    parser.add_argument("--host-down-after", default="15s")
    parser.add_argument("--reschedule-after", default="5s")
    parser.add_argument("--server-log-level", default="info")
    parser.add_argument(
        "--hollow-nice",
        type=int,
        default=0,
        help="run the hollow hosts at this nice level (they stand for other machines)",
    )
    parser.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="skip the control plane's kill and restart after the hosts' kill",
    )
    parser.add_argument("--timeout-factor", type=float, default=1.0, help="scales deadlines")
    parser.add_argument("--keep-going", action="store_true", help="after a failed size")
    parser.add_argument("--profile", type=float, default=0, help="py-spy seconds")
    parser.add_argument("--profile-delay", type=float, default=0, help="after the apply")
    parser.add_argument(
        "--profile-restart", type=float, default=0, help="py-spy seconds of the restarted server"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--output", default="scale", help="file names: NAME.json, NAME.png")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs' directory")
    parser.add_argument("--replot", type=Path, help="only draw the plot of a results file")
    args = parser.parse_args()
    if args.replot is not None:
        saved = json.loads(args.replot.read_text())
        png = args.replot.with_suffix(".png")
        if plot(saved["runs"], png, subtitle(saved["settings"])):
            print(f"wrote {png}")
        return
    sizes = [int(s) for s in args.hosts.split(",") if s.strip()]
    if not sizes or min(sizes) <= VICTIMS:
        raise SystemExit(f"every size must have more than the {VICTIMS} victim hosts")
    if not 1 <= args.per_app <= APP_MAX:
        raise SystemExit(f"--per-app must be from 1 to {APP_MAX}")
    memory = _memory_bytes(args.replica_memory)
    per_host = int(min(args.cpus / args.replica_cpu + 1e-9, (args.memory_gib << 30) // memory))
    for n in sizes:
        r = args.replicas or args.replicas_per_host * n
        if r > 0.9 * per_host * (n - VICTIMS):
            raise SystemExit(
                f"{r:,} replicas do not fit on the {n - VICTIMS} hosts left after the kill "
                f"({per_host} each, 90% full at most): raise --cpus or lower the replicas"
            )
    stop_on_sigterm()

    settings = {
        "hosts": sizes,
        "replicas": args.replicas,
        "replicas_per_host": None if args.replicas else args.replicas_per_host,
        "replicas_per_app": args.per_app,
        "replica_resources": {"cpu": args.replica_cpu, "memory": args.replica_memory},
        "placement": "spread",
        "hollow_host": {"cpus": args.cpus, "memory_gib": args.memory_gib, "start_delay": 0.2},
        "hollow_hosts_per_process": HOSTS_PER_PROCESS,
        "hollow_nice": args.hollow_nice,
        "victims": VICTIMS,
        "server": {
            "heartbeat_interval": args.heartbeat_interval,
            "host_down_after": args.host_down_after,
            "reschedule_after": args.reschedule_after,
            "log_level": args.server_log_level,
            "tls": False,
        },
        "progress": args.progress,
        "poll_seconds": {
            "progress": args.poll,
            "get_apps_sample": args.sample_every or None,
            "other_reads_sample": args.sample_reads or None,
            "other_reads_from": args.reads_from,
            "etcd_and_proc": WATCH,
        },
        "profile_seconds": args.profile,
        "profile_delay_seconds": args.profile_delay,
    }
    result: dict[str, Any] = {
        "settings": settings,
        "machine": machine(etcd=etcd_version()),
        "runs": [],
    }
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-scale-"))
    try:
        for n in sizes:
            r = args.replicas or args.replicas_per_host * n
            print(f"N = {n:,} hosts, R = {r:,} replicas ...", flush=True)
            size_dir = work / f"n{n}"
            size_dir.mkdir()
            run = run_size(n, r, args, size_dir)
            run["loadavg_after"] = loadavg()
            result["runs"].append(run)
            print(size_table(run), flush=True)
            if "profile" in run:
                print_profile(run["profile"])
            print(flush=True)
            if not run["ok"] and not args.keep_going:
                print("stopping here: larger sizes would not do better (--keep-going tries)")
                break
    except KeyboardInterrupt:
        print("interrupted: writing what was measured")
    finally:
        ended(result["machine"])
        result["run_seconds"] = round(time.monotonic() - began, 1)
        if result["runs"]:
            print(summary_table(result["runs"]))
            print(describe(result["machine"]))
            args.out.mkdir(parents=True, exist_ok=True)
            path = args.out / f"{args.output}.json"
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"\nwrote {path} ({result['run_seconds']:.0f} s)")
            png = args.out / f"{args.output}.png"
            if plot(result["runs"], png, subtitle(settings)):
                print(f"wrote {png}")
        if args.keep_logs:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
