"""A chaos soak of a whole pool (fleet issue #25): ``python -m fleet.testing.soak`` or
``make soak`` (SOAK_MINUTES, default 10; SOAK_SEED).

A 3-member etcd, 2 control planes, 4 Docker hosts with agents and a registry, all real,
run a workload changed by client threads while a seeded fault driver kills, cuts and
restarts their parts, several faults at once; a checker reads the truth from each
host's dockerd and from etcd (never fleet's API) all along and at the end.

Where to look: ``cluster`` (the pool and the fault primitives), ``faults`` (the
driver), ``workload`` (the apps and client threads), ``observe`` (reading Docker, etcd,
/proc), ``checker`` (the invariants, pure), ``monitor`` (the checker's thread),
``report`` (JSON and summary), ``driver`` (one run). benchmarks/README.md, "Soak", says
what each invariant means and what holds while faults touch a host.
"""

from __future__ import annotations

from fleet.testing.soak.driver import SoakConfig, run_soak
from fleet.testing.soak.report import SoakReport

__all__ = ["SoakConfig", "SoakReport", "run_soak"]
