"""``python -m fleet.testing.soak [--minutes M] [--seed S] [--out DIR]``: one soak run;
exit status 1 if any invariant was violated (or the harness failed)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fleet.testing.soak.driver import SoakConfig, run_soak


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.testing.soak", description=__doc__)
    parser.add_argument(
        "--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 10)
    )
    seed = os.environ.get("SOAK_SEED")
    parser.add_argument("--seed", type=int, default=int(seed) if seed else None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work-dir", type=Path, help="logs and state (default: a temp dir)")
    args = parser.parse_args(argv)
    work_dir = args.work_dir or Path(f"/tmp/fleet-soak-{int(time.time())}")
    work_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=work_dir / "soak.log",
        level=logging.INFO,
        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    print(f"soak: logs in {work_dir}", flush=True)
    report = run_soak(SoakConfig(minutes=args.minutes, seed=args.seed, work_dir=work_dir))
    path = report.write(args.out, f"soak-{time.strftime('%Y%m%d')}.json")
    print(report.summary())
    print(f"soak: report in {path}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
