"""The soak's report: a JSON file (benchmarks/results/soak-<date>.json) and a short
printed summary: the seed, faults by kind, every invariant with its checks and
violations, the time to converge; each violation with the line that reruns it."""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet.testing.soak.model import FaultWindow, Finding, OpRecord

__all__ = ["INVARIANTS", "SoakReport"]

# Every invariant the soak checks, in the order the summary lists them.
INVARIANTS = (
    "double-serving",
    "placement",
    "fencing",
    "foreign-container",
    "min-available",
    "failed-op-changed",
    "applied-reflected",
    "orphan",
    "events",
    "rss",
    "converged",
)


@dataclass
class SoakReport:
    seed: int
    minutes: float
    started_at: float
    bounds: dict[str, Any]
    windows: Sequence[FaultWindow] = ()
    ops: Sequence[OpRecord] = ()
    checks: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    converge_seconds: float | None = None
    last_fault_end: float | None = None
    remaining: list[str] = field(default_factory=list)  # differences left, if any
    rss_peak: dict[str, int] = field(default_factory=dict)
    harness_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the run could not do here
    setup_seconds: float = 0.0
    snapshots: int = 0
    leftovers: int = 0  # the earlier pool's stopped containers the hosts held

    @property
    def violations(self) -> int:
        return len(self.findings)

    @property
    def passed(self) -> bool:
        return not self.findings and not self.harness_errors

    def rerun(self) -> str:
        return f"SOAK_SEED={self.seed} SOAK_MINUTES={self.minutes:g} make soak"

    def to_json(self) -> dict[str, Any]:
        by_kind = Counter(w.kind for w in self.windows)
        outcomes = Counter(f"{o.op}:{o.outcome}" for o in self.ops)
        most = max(
            (
                sum(1 for v in self.windows if v.start <= w.start <= (v.end or w.start))
                for w in self.windows
            ),
            default=0,
        )
        return {
            "benchmark": "soak",
            "seed": self.seed,
            "minutes": self.minutes,
            "rerun": self.rerun(),
            "started_at": self.started_at,
            "setup_seconds": round(self.setup_seconds, 1),
            "machine": {
                "nproc": len(os.sched_getaffinity(0)),
                "platform": platform.platform(),
                "loadavg": os.getloadavg(),
            },
            "bounds": self.bounds,
            "faults": dict(sorted(by_kind.items())),
            "faults_at_once_max": most,
            "fault_windows": [asdict(w) | {"hosts": sorted(w.hosts)} for w in self.windows],
            "ops": dict(sorted(outcomes.items())),
            "op_log": [asdict(o) for o in self.ops],
            "invariants": {
                name: {
                    "checks": self.checks.get(name, 0),
                    "violations": sum(1 for f in self.findings if f.invariant == name),
                }
                for name in INVARIANTS
            },
            "violations": [asdict(f) for f in self.findings],
            "converge_seconds_after_last_fault": self.converge_seconds,
            "not_converged": self.remaining,
            "rss_peak_mib": {k: round(v / 2**20, 1) for k, v in sorted(self.rss_peak.items())},
            "harness_errors": self.harness_errors,
            "notes": self.notes,
            "snapshots": self.snapshots,
            "earlier_pool_leftovers": self.leftovers,
        }

    def write(self, directory: Path, name: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    def summary(self) -> str:
        data = self.to_json()
        faults = ", ".join(f"{k} {v}" for k, v in data["faults"].items()) or "none"
        lines = [
            f"soak: seed {self.seed}, {self.minutes:g} min of faults, "
            f"{sum(data['faults'].values())} faults ({faults}), up to "
            f"{data['faults_at_once_max']} at once; {len(self.ops)} client calls "
            f"({', '.join(f'{k} {v}' for k, v in data['ops'].items())})",
        ]
        for name, counts in data["invariants"].items():
            mark = "ok" if not counts["violations"] else "VIOLATED"
            lines.append(
                f"  {name:<18} {counts['checks']:>6} checks "
                f"{counts['violations']:>3} violations  {mark}"
            )
        converge = (
            f"{self.converge_seconds:.1f} s" if self.converge_seconds is not None else "never"
        )
        lines.append(f"  converged {converge} after the last fault healed")
        peaks = ", ".join(f"{k} {v}" for k, v in data["rss_peak_mib"].items())
        lines.append(f"  peak RSS (MiB): {peaks}")
        for finding in self.findings:
            lines.append(
                f"  VIOLATION {finding.invariant} at "
                f"+{finding.at - self.started_at:.0f}s: {finding.detail}"
            )
        for note in self.notes:
            lines.append(f"  note: {note}")
        for error in self.harness_errors:
            lines.append(f"  HARNESS ERROR {error}")
        if not self.passed:
            lines.append(f"  rerun with: {self.rerun()}")
        return "\n".join(lines)
