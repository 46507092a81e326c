"""What the benchmark scripts do alike around their measurements: record which machine
and which code they measured (``machine``) and say it in their report (``describe``),
stop on SIGTERM as on Ctrl-C (``stop_on_sigterm``), and tear down step by step whatever
one step raises (``quietly``).

The scripts import it as ``_harness``: ``python benchmarks/NAME.py`` puts this folder
first on the path.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "describe",
    "ended",
    "git_state",
    "loadavg",
    "machine",
    "quietly",
    "speed_probe",
    "stop_on_sigterm",
]


def machine(docker_client: Any = None, **extra: object) -> dict[str, Any]:
    """The machine and the code measured; with ``docker_client``, dockerd's version too,
    and ``extra`` facts a benchmark adds (the etcd or numpy version)."""
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if docker_client is not None:
        facts["docker"] = docker_client.version().get("Version", "?")
    return {
        **facts,
        **extra,
        "loadavg_at_start": loadavg(),
        "speed_probe_seconds": speed_probe(),
        "fleet_commit": git_state(),
    }


def ended(m: dict[str, Any]) -> None:
    """Add to ``machine``'s facts the load and the speed probe at the benchmark's end."""
    m["loadavg_at_end"] = loadavg()
    m["speed_probe_seconds_at_end"] = speed_probe()


def speed_probe() -> float:
    """Seconds for a fixed piece of pure-Python work like the control plane's (JSON,
    dicts, a sort), the best of three. Figures from two machines, or from one VM whose
    speed drifts (session 24's: the same run's control plane took 39 s of cpu, then
    55 s, minutes apart), compare only beside it: lower is faster."""
    records = [
        {"app": f"app-{i % 50}", "slot": i, "host": f"h{i % 997:05d}", "cpu": i * 0.001}
        for i in range(50_000)
    ]
    best = math.inf
    for _ in range(3):
        began = time.perf_counter()
        decoded = json.loads(json.dumps(records))
        by_host: dict[str, list[int]] = {}
        for record in decoded:
            by_host.setdefault(record["host"], []).append(record["slot"])
        decoded.sort(key=lambda record: (record["host"], record["slot"]))
        best = min(best, time.perf_counter() - began)
    return round(best, 3)


def describe(m: Mapping[str, Any]) -> str:
    """The line of a printed report that says what ``machine`` found (and the load at
    the end, once the benchmark added ``loadavg_at_end``)."""
    docker = f", Docker {m['docker']}" if "docker" in m else ""
    end = f" -> {m['loadavg_at_end']}" if "loadavg_at_end" in m else ""
    speed = ""
    if "speed_probe_seconds" in m:
        at_end = m.get("speed_probe_seconds_at_end")
        speed = f", speed probe {m['speed_probe_seconds']:.3f} s" + (
            f" -> {at_end:.3f} s" if at_end is not None else ""
        )
    return (
        f"machine: {m['nproc']} cores ({m['cpu']}), {m['memory_bytes'] / (1 << 30):.1f} GiB, "
        f"{m['platform']}{docker}, Python {m['python']}, load {m['loadavg_at_start']}{end}"
        f"{speed}, fleet {m['fleet_commit']}"
    )


def git_state() -> str:
    """The commit measured, and whether the tree had changes beside it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=10
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD") or "?"
        dirty = git("diff", "--shortstat", "HEAD", "--", "fleet")
    except (OSError, subprocess.SubprocessError):
        return "?"
    return head + (f" with uncommitted changes under fleet/ ({dirty})" if dirty else "")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def quietly(what: str, step: Callable[[], object]) -> None:
    """Run one teardown ``step``; a failure is printed and teardown goes on, since one
    failed step must not leak the rest."""
    try:
        step()
    except Exception as error:
        print(f"teardown: {what} failed: {error!r}")


def stop_on_sigterm() -> None:
    """SIGTERM tears a benchmark down as Ctrl-C does (it raises KeyboardInterrupt)."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _cpu_model() -> str:
    model = platform.processor()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    return model


def _memory_bytes() -> int:
    memory = 0
    with contextlib.suppress(OSError, StopIteration, ValueError), open("/proc/meminfo") as f:
        memory = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal"))
    return memory
