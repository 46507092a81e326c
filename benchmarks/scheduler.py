"""Scheduler benchmark: 100,000 replicas of 50 apps onto 1,000 hosts of mixed sizes.

One run, one input, three strategies: fleet's default (bin-pack with the same-app
penalty and image locality), a naive first-fit (the same filters, no scores: the first
host in host-id order that fits) and a least-allocated spread (``placement: spread``).
Fleet's default is timed twice: every app in one plan, and one app at a time as the
control plane schedules (each app's plan sees the ones before it in the hosts' sums).
For each it prints placements per second and the hosts used against a lower bound, and
checks the plan it timed (no host over-committed, constraints and fixed ports honoured).
Figures go to benchmarks/results/scheduler.json and scheduler.png.

    .venv/bin/python benchmarks/scheduler.py [--seed N] [--out DIR]

Targets (issue #3): at least 10,000 placements/s on one core, and hosts used within 5%
of the lower bound.
"""

from __future__ import annotations

import os

# One core: keep numpy (and anything it loads) from starting threads of its own.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from _harness import machine  # noqa: E402

from fleet.scheduler import (  # noqa: E402
    STRATEGIES,
    HostView,
    Plan,
    ReplicaRequest,
    Snapshot,
    Weighted,
    nanocores,
    schedule,
)
from fleet.spec import Constraint  # noqa: E402

Mi = 1 << 20
Gi = 1 << 30
HOSTS = 1_000
APPS = 50
REPLICAS = 100_000
NOW = 1_000_000.0  # the snapshot's clock, seconds
TARGET_RATE = 10_000  # placements per second
TARGET_SLACK = 0.05  # hosts used at most 5% above the lower bound

# (cpu, memory, how many of the 1,000): one family of sizes, 4 GiB per core.
HOST_SIZES = [
    (4.0, 16 * Gi, 300),
    (8.0, 32 * Gi, 400),
    (16.0, 64 * Gi, 200),
    (32.0, 128 * Gi, 100),
]
# Replica shapes (cpu, memory): mostly small services, some cpu- or memory-heavy; the
# large apps (over 2,000 replicas) take one of the first five.
DEMANDS = [
    (0.02, 64 * Mi),
    (0.025, 96 * Mi),
    (0.04, 160 * Mi),
    (0.05, 128 * Mi),
    (0.05, 256 * Mi),
    (0.1, 256 * Mi),
    (0.1, 512 * Mi),
    (0.2, 384 * Mi),  # cpu-heavy
    (0.05, 768 * Mi),  # memory-heavy
    (0.25, 1 * Gi),
    (0.5, 2 * Gi),
]
LARGE_APP = 2_000
# Constraints some apps carry, over operator labels and agent facts.
CONSTRAINTS = [
    ("arch=amd64",),
    ("arch=amd64",),
    ("os=linux", "arch=amd64"),
    ("disk=ssd",),
    ("disk!=hdd",),
    ("zone!=c",),
    ("gpu",),
]


@dataclass(frozen=True)
class App:
    name: str
    replicas: int
    cpu: float
    memory: int
    ports: frozenset[str]
    constraints: tuple[Constraint, ...]


def image(app: str) -> str:
    return f"registry:5000/{app}:v1"


def make_hosts(rng: random.Random) -> tuple[HostView, ...]:
    """1,000 hosts, sizes shuffled over host ids, with labels and facts to select on, a
    few images each, and fresh live usage of their own (the OS, the agent); 2% are
    cordoned and 1% lost (their agent not connected)."""
    sizes = [(cpu, memory) for cpu, memory, n in HOST_SIZES for _ in range(n)]
    rng.shuffle(sizes)
    hosts = []
    for i, (cpu, memory) in enumerate(sizes):
        labels = {
            "os": "linux",
            "arch": "arm64" if rng.random() < 0.1 else "amd64",
            "disk": "ssd" if rng.random() < 0.6 else "hdd",
            "zone": rng.choice("abc"),
        }
        if i % 50 == 7:
            labels["gpu"] = "a100"  # 20 hosts
        hosts.append(
            HostView(
                f"h{i:04d}",
                cpu,
                memory,
                labels,
                state="cordoned" if i % 50 == 3 else "ready",
                connected=i % 100 != 5,
                used_cpu=rng.choice([0.1, 0.2, 0.3]),
                used_memory=rng.choice([256 * Mi, 512 * Mi]),
                stats_at=NOW - rng.uniform(0, 4),
                images=frozenset(image(f"app{j:02d}") for j in rng.sample(range(APPS), 3)),
            )
        )
    return tuple(hosts)


def split(total: int, weights: Sequence[float], low: int = 10, high: int = 10_000) -> list[int]:
    """``total`` in whole parts proportional to ``weights``, each from ``low`` to ``high``
    (an app has at most 10,000 replicas)."""
    parts = [0] * len(weights)
    left, weight = total, sum(weights)
    order = sorted(range(len(weights)), key=lambda i: -weights[i])
    for n, i in enumerate(order):
        share = left if n == len(order) - 1 else round(left * weights[i] / weight)
        parts[i] = min(high, max(low, share))
        left, weight = left - parts[i], weight - weights[i]
    assert sum(parts) == total and all(low <= p <= high for p in parts), parts
    return parts


def make_apps(rng: random.Random) -> list[App]:
    """50 apps, 100,000 replicas in all: a few large apps, many small ones; one in five
    with constraints, five publishing fixed host ports (two of them the same port)."""
    ported = [
        frozenset({"8080/tcp"}),
        frozenset({"8080/tcp"}),
        frozenset({"53/udp"}),
        frozenset({"443/tcp", "80/tcp"}),
        frozenset({"9100/tcp"}),
    ]
    ports = ported + [frozenset()] * (APPS - len(ported))
    constraints = [rng.choice(CONSTRAINTS) if rng.random() < 0.2 else () for _ in range(APPS)]
    # Apps on fixed ports need a host per replica, gpu apps a gpu host: keep those small.
    fixed = {
        i: 15 if constraints[i] == ("gpu",) else rng.randint(30, 120)
        for i in range(APPS)
        if ports[i] or constraints[i] == ("gpu",)
    }
    free = [i for i in range(APPS) if i not in fixed]
    counts = dict(fixed)
    weights = [rng.lognormvariate(0, 1.2) for _ in free]
    counts.update(zip(free, split(REPLICAS - sum(fixed.values()), weights), strict=True))
    apps = []
    for i in range(APPS):
        cpu, memory = rng.choice(DEMANDS[:5] if counts[i] > LARGE_APP else DEMANDS)
        apps.append(
            App(
                name=f"app{i:02d}",
                replicas=counts[i],
                cpu=cpu,
                memory=memory,
                ports=ports[i],
                constraints=tuple(Constraint.model_validate(c) for c in constraints[i]),
            )
        )
    return apps


def make_requests(apps: Sequence[App], placement: str) -> list[ReplicaRequest]:
    return [
        ReplicaRequest(
            app.name,
            slot,
            app.cpu,
            app.memory,
            app.ports,
            app.constraints,
            image=image(app.name),
            placement="spread" if placement == "spread" else "binpack",
        )
        for app in apps
        for slot in range(app.replicas)
    ]


def usable(hosts: Sequence[HostView]) -> list[HostView]:
    return [h for h in hosts if h.connected and h.state == "ready"]


def lower_bound(hosts: Sequence[HostView], apps: Sequence[App]) -> dict[str, int]:
    """The fewest hosts that could hold the demand: per resource, the usable hosts with the
    most room (capacity less live usage) first, until their room covers it; per fixed
    port, one host per replica publishing it."""
    bound: dict[str, int] = {}
    for resource, demand, rooms in (
        (
            "cpu",
            sum(a.cpu * a.replicas for a in apps),
            [h.cpu - h.used_cpu for h in usable(hosts)],
        ),
        (
            "memory",
            sum(a.memory * a.replicas for a in apps),
            [h.memory - h.used_memory for h in usable(hosts)],
        ),
    ):
        covered = np.cumsum(sorted(rooms, reverse=True))
        bound[resource] = int(np.searchsorted(covered, demand)) + 1
    per_port: defaultdict[str, int] = defaultdict(int)
    for app in apps:
        for port in app.ports:
            per_port[port] += app.replicas
    bound["ports"] = max(per_port.values(), default=0)
    return bound


def check(snapshot: Snapshot, requests: Sequence[ReplicaRequest], plan: Plan) -> None:
    """The plan is safe: only usable hosts, none over-committed (live usage plus what the
    plan places stays within capacity), constraints and fixed ports honoured."""
    hosts = {h.host_id: h for h in usable(snapshot.hosts)}
    by_key = {(r.app, r.slot): r for r in requests}
    cpu: defaultdict[str, float] = defaultdict(float)
    memory: defaultdict[str, int] = defaultdict(int)
    ports: defaultdict[str, set[str]] = defaultdict(set)
    for p in plan.placements:
        request, host = by_key[(p.app, p.slot)], hosts[p.host]
        cpu[p.host] += request.cpu
        memory[p.host] += request.memory
        assert not request.host_ports & ports[p.host], f"port clash on {p.host}"
        ports[p.host] |= request.host_ports
        assert all(c.matches(host.labels) for c in request.constraints), p
    assert all(cpu[h] + hosts[h].used_cpu <= hosts[h].cpu + 1e-6 for h in cpu), "cpu"
    assert all(memory[h] + hosts[h].used_memory <= hosts[h].memory for h in memory), "memory"


def run(
    name: str,
    snapshot: Snapshot,
    requests: list[ReplicaRequest],
    strategies: Mapping[str, Sequence[Weighted]] = STRATEGIES,
) -> dict[str, Any]:
    started = time.perf_counter()
    plan = schedule(snapshot, requests, strategies=strategies)
    seconds = time.perf_counter() - started
    check(snapshot, requests, plan)
    return _row(name, seconds, plan)


def _row(name: str, seconds: float, plan: Plan) -> dict[str, Any]:
    """A strategy's figures, from the plan it made in ``seconds``."""
    return {
        "strategy": name,
        "seconds": round(seconds, 3),
        "placed": len(plan.placements),
        "unplaced": len(plan.unplaced),
        "placements_per_second": round(len(plan.placements) / seconds),
        "hosts_used": len({p.host for p in plan.placements}),
    }


def run_app_by_app(snapshot: Snapshot, requests: list[ReplicaRequest]) -> dict[str, Any]:
    """Fleet's default, one app's plan at a time, the ones before it counted in the hosts'
    sums (as the control plane keeps them); only the plans are timed. A host's live usage
    is taken as its reservation, as one plan for all counts it (the larger of the two,
    plus what the plan places): the replicas of earlier plans are not running yet."""
    by_app: dict[str, list[ReplicaRequest]] = defaultdict(list)
    for r in requests:
        by_app[r.app].append(r)
    hosts = {
        h.host_id: replace(
            h,
            reserved_nanocpus=max(h.reserved_nanocpus, nanocores(h.used_cpu)),
            reserved_memory=max(h.reserved_memory, h.used_memory),
        )
        for h in snapshot.hosts
    }
    plans, seconds = [], 0.0
    for app, wanted in sorted(by_app.items()):
        started = time.perf_counter()
        plan = schedule(replace(snapshot, hosts=tuple(hosts.values())), wanted)
        seconds += time.perf_counter() - started
        plans.append(plan)
        first = wanted[0]  # an app's replicas ask alike here
        for p in plan.placements:
            h = hosts[p.host]
            ports = dict(h.placed_ports)
            for port in first.host_ports:
                ports[port] = ports.get(port, 0) + 1
            hosts[p.host] = replace(
                h,
                reserved_nanocpus=h.reserved_nanocpus + nanocores(first.cpu),
                reserved_memory=h.reserved_memory + first.memory,
                placed_apps={**h.placed_apps, app: h.placed_apps.get(app, 0) + 1},
                placed_ports=ports,
            )
    whole = Plan(
        placements=[p for plan in plans for p in plan.placements],
        unplaced={k: v for plan in plans for k, v in plan.unplaced.items()},
    )
    check(snapshot, requests, whole)
    return _row("binpack by app", seconds, whole)


def table(rows: Sequence[dict[str, Any]], bound: int) -> str:
    lines = [
        f"{'strategy':<16}{'placed':>9}{'seconds':>9}{'placements/s':>14}"
        f"{'hosts used':>12}{'vs bound':>10}",
    ]
    for row in rows:
        over = row["hosts_used"] / bound - 1
        lines.append(
            f"{row['strategy']:<16}{row['placed']:>9,}{row['seconds']:>9.2f}"
            f"{row['placements_per_second']:>14,}{row['hosts_used']:>12,}{over:>+10.1%}"
        )
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], bound: int, path: Path) -> bool:
    """Hosts used and placements/s per strategy, as a PNG; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["strategy"] for row in rows]
    colours = ["#2b6cb0", "#a0aec0", "#ed8936"][: len(rows)]
    figure, (hosts_axis, rate_axis) = plt.subplots(1, 2, figsize=(10, 4))
    bars = hosts_axis.bar(names, [row["hosts_used"] for row in rows], color=colours)
    hosts_axis.bar_label(bars)
    hosts_axis.axhline(bound, color="black", linestyle="--", label=f"lower bound ({bound})")
    hosts_axis.axhline(bound * (1 + TARGET_SLACK), color="green", linestyle=":", label="+5%")
    hosts_axis.set_title("hosts used (fewer is better)")
    hosts_axis.legend(loc="upper left")
    bars = rate_axis.bar(names, [row["placements_per_second"] for row in rows], color=colours)
    rate_axis.bar_label(bars, fmt="{:,.0f}")
    rate_axis.axhline(TARGET_RATE, color="green", linestyle=":", label="target 10,000/s")
    rate_axis.set_title("placements per second (more is better)")
    rate_axis.legend(loc="lower right")
    figure.suptitle(f"{REPLICAS:,} replicas of {APPS} apps on {HOSTS:,} hosts of mixed sizes")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    snapshot = Snapshot(make_hosts(rng), now=NOW)
    apps = make_apps(rng)
    binpack, spread = make_requests(apps, "binpack"), make_requests(apps, "spread")
    bounds = lower_bound(snapshot.hosts, apps)
    bound = max(bounds.values())
    hosts = usable(snapshot.hosts)
    cpu = sum(a.cpu * a.replicas for a in apps) / sum(h.cpu - h.used_cpu for h in hosts)
    memory = sum(a.memory * a.replicas for a in apps) / sum(h.memory - h.used_memory for h in hosts)
    print(
        f"{len(snapshot.hosts):,} hosts ({len(hosts)} usable), {len(apps)} apps, "
        f"{len(binpack):,} replicas (demand: {cpu:.0%} of the free cpu, {memory:.0%} of the "
        "free memory; "
        f"{sum(1 for a in apps if a.constraints)} apps with constraints, "
        f"{sum(1 for a in apps if a.ports)} with fixed ports)"
    )
    print(
        f"lower bound: {bound} hosts (cpu {bounds['cpu']}, memory {bounds['memory']}, "
        f"one host per replica on a fixed port {bounds['ports']})\n"
    )

    rows = [
        run("fleet binpack", snapshot, binpack),
        run("first-fit", snapshot, binpack, {"binpack": ()}),
        run("spread", snapshot, spread),
        run_app_by_app(snapshot, binpack),
    ]
    print(table(rows, bound))
    fleet = rows[0]
    rate_ok = fleet["placements_per_second"] >= TARGET_RATE
    hosts_ok = fleet["hosts_used"] <= bound * (1 + TARGET_SLACK)
    print(
        f"\ntargets: >= {TARGET_RATE:,} placements/s {'met' if rate_ok else 'MISSED'}; "
        f"hosts used within {TARGET_SLACK:.0%} of the bound {'met' if hosts_ok else 'MISSED'}"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "input": {
            "hosts": len(snapshot.hosts),
            "apps": len(apps),
            "replicas": len(binpack),
            "seed": args.seed,
            "cpu_demand_share": round(cpu, 4),
            "memory_demand_share": round(memory, 4),
        },
        "lower_bound": {"hosts": bound, **bounds},
        "strategies": rows,
        "targets": {"placements_per_second": TARGET_RATE, "hosts_over_bound": TARGET_SLACK},
        "targets_met": {"placements_per_second": rate_ok, "hosts_used": hosts_ok},
        "machine": machine(numpy=np.__version__),
    }
    (args.out / "scheduler.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'scheduler.json'}")
    if plot(rows, bound, args.out / "scheduler.png"):
        print(f"wrote {args.out / 'scheduler.png'}")
    else:
        print("no plot: matplotlib is not installed (pip install -e '.[bench]')")


if __name__ == "__main__":
    main()
