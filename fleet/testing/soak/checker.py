"""The soak's invariants as pure functions over snapshots (``model``): no I/O, time is
the snapshot's ``at``. Rules that need memory (how long a container has been a stray)
take a small state object they update, and return the findings they make.

Each rule's name is the invariant it reports under; ``benchmarks/README.md`` ("Soak")
says what each one means, what holds while faults touch a host, and why the bounds
are what they are.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fleet.testing.soak.model import (
    AppView,
    Container,
    EtcdView,
    FaultWindow,
    Finding,
    OpRecord,
    Placement,
    Snapshot,
)

__all__ = [
    "ANY",
    "HOST_FAULTS",
    "AvailabilityState",
    "Bounds",
    "OrphanState",
    "RssState",
    "StrayState",
    "check_availability",
    "check_events",
    "check_expectations",
    "check_failed_ops",
    "check_foreign",
    "check_orphans",
    "check_rss",
    "check_strays",
    "differences",
    "expected_state",
    "orphans",
    "required_available",
    "split_running",
]

# Faults that touch a Docker host (its containers, its agent or its network).
HOST_FAULTS = frozenset({"agent-kill", "dockerd-restart", "net-cut", "netem", "power-off"})
ANY = "*"  # an expected value that an ambiguous call left unknown


@dataclass(frozen=True)
class Bounds:
    """How long each invariant may be broken for, in seconds (stated in the README)."""

    handover: float = 45.0  # a replaced or unplaced container stops within this
    fence: float = 60.0  # a faulted host's strays are gone this long after it is healed
    settle: float = 40.0  # a faulted host's slots count as available this long after
    orphan: float = 90.0  # an orphaned etcd record is gone within this
    events_quiet: float = 30.0  # no fault this long around a start for its event to count
    # The control plane's gate counts a start that repeats its slot's last one within
    # this (``GateLimits.repeat_window``) and stores the count when the window ends.
    events_repeat: float = 60.0
    rss: dict[str, int] = field(
        default_factory=lambda: {"server": 600 << 20, "agent": 300 << 20, "etcd": 600 << 20}
    )


def _touched(windows: Iterable[FaultWindow], at: float, grace: float) -> set[str]:
    """Hosts a fault touches at ``at`` (or touched up to ``grace`` before)."""
    return {h for w in windows if w.covers(at, grace) for h in w.hosts}


def _ours(snapshot: Snapshot) -> list[Container]:
    """Running containers of this pool (another pool's are ``check_foreign``'s)."""
    pool = snapshot.etcd.pool_id if snapshot.etcd else ""
    return [c for c in snapshot.containers if c.running and c.pool == pool]


def split_running(snapshot: Snapshot) -> tuple[list[Container], list[Container]]:
    """This pool's running containers as (placed, strays): a placed one is a slot's own
    or next container on the host and at the revision etcd names (or one of the same
    template: ``Placement.places``); a second container placed as the same (app, slot,
    revision, host) is a stray too. Unknown without etcd."""
    if snapshot.etcd is None:
        return [], []
    placements = {(p.app, p.slot): p for p in snapshot.etcd.replicas}
    templates = snapshot.etcd.templates
    placed: list[Container] = []
    strays: list[Container] = []
    seen: set[tuple[str, int, int, str]] = set()
    for c in sorted(_ours(snapshot), key=lambda c: (c.started_at, c.id)):
        p = placements.get((c.app, c.slot))
        as_revision = None if p is None else p.places(c.host, c.revision, c.template, templates)
        key = (c.app, c.slot, as_revision or 0, c.host)
        if as_revision is not None and key not in seen:
            seen.add(key)
            placed.append(c)
        elif p is not None and _kept_for_unpullable(p, c, snapshot):
            placed.append(c)
        else:
            strays.append(c)
    return placed, strays


def _kept_for_unpullable(p: Placement, c: Container, snapshot: Snapshot) -> bool:
    """Whether ``c`` is the container an agent keeps while the one etcd places there
    instead cannot be pulled (fleet's rule: a container replaced in place stays while
    its replacement's image cannot be pulled; it may serve on, and a rollback will
    want it back). Judged from the truth: etcd places this slot on ``c``'s host (its own
    or its next) at a revision whose image the registry does not hold."""
    assert snapshot.etcd is not None
    images = snapshot.etcd.images
    placed_here = [
        revision
        for host, revision in ((p.host, p.revision), (p.next_host, p.next_revision))
        if host == c.host and revision is not None
    ]
    return not p.stopped and any(
        images.get((p.app, revision)) in snapshot.unpullable for revision in placed_here
    )


@dataclass
class StrayState:
    first_seen: dict[str, float] = field(default_factory=dict)  # container id -> when
    reported: set[str] = field(default_factory=set)


def check_strays(
    state: StrayState, snapshot: Snapshot, windows: Sequence[FaultWindow], bounds: Bounds
) -> list[Finding]:
    """Strays must stop in time. On a host no fault touched: within ``handover`` of
    being seen ("double-serving" when another container of the slot runs: a
    make-before-break hand-over that overran; else "placement"). On a faulted host
    ("fencing"): any time while the fault lasts, then within ``fence`` of its end."""
    if snapshot.etcd is None:
        return []
    now = snapshot.at
    placed, strays = split_running(snapshot)
    slots_placed = {(c.app, c.slot) for c in placed}
    state.first_seen = {i: t for i, t in state.first_seen.items() if i in {c.id for c in strays}}
    findings = []
    for c in strays:
        since = state.first_seen.setdefault(c.id, now)
        faults = [
            w
            for w in windows
            if c.host in w.hosts
            and w.start <= now
            and (w.end is None or w.end + bounds.fence >= since)
        ]
        if faults:
            invariant = "fencing"
            if any(w.end is None for w in faults):
                continue
            deadline = max(w.end or 0.0 for w in faults) + bounds.fence
        else:
            invariant = "double-serving" if (c.app, c.slot) in slots_placed else "placement"
            deadline = since + bounds.handover
        if now > deadline and c.id not in state.reported:
            state.reported.add(c.id)
            placement = next(
                (p for p in snapshot.etcd.replicas if (p.app, p.slot) == (c.app, c.slot)), None
            )
            findings.append(
                Finding(
                    invariant,
                    now,
                    f"{c.name} ({c.id[:12]}) of {c.app}/{c.slot} rev {c.revision} runs on "
                    f"{c.host} for {now - since:.0f}s past what etcd places ({placement}); "
                    f"faults on {c.host}: {[(w.kind, w.start, w.end) for w in faults]}",
                )
            )
    return findings


def check_foreign(snapshot: Snapshot) -> list[Finding]:
    """Another pool's containers are never run (they are left as they were: stopped)."""
    if snapshot.etcd is None:
        return []
    pool = snapshot.etcd.pool_id
    return [
        Finding(
            "foreign-container",
            snapshot.at,
            f"{c.name} ({c.id[:12]}) of pool {c.pool} runs on {c.host} (this pool is {pool})",
        )
        for c in snapshot.containers
        if c.running and c.pool and c.pool != pool
    ]


def required_available(app: AppView) -> int:
    """``min_available`` as a count (a percentage of ``replicas``, rounded up)."""
    value = app.min_available
    if value is None:
        return 0
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(float(value[:-1]) * app.replicas / 100)
    return int(value)


@dataclass
class AvailabilityState:
    exempt_until: dict[tuple[str, int], float] = field(default_factory=dict)
    armed: set[str] = field(default_factory=set)  # apps that once had min_available up


def check_availability(
    state: AvailabilityState,
    snapshot: Snapshot,
    windows: Sequence[FaultWindow],
    bounds: Bounds,
) -> tuple[int, list[Finding]]:
    """An app's slots that answer HTTP (probed by the soak, at the host's address) never
    number fewer than ``min_available``. A slot with a container or a placement on a
    host a fault touches counts as available until ``settle`` after: faults take
    replicas away, fleet's own moves (drains, rollouts, rescheduling) must not take
    more. Checked once the app has first reached it; returns (checks, findings)."""
    etcd = snapshot.etcd
    if etcd is None:
        return 0, []
    now = snapshot.at
    touched = _touched(windows, now, bounds.settle)
    unreadable = snapshot.unreadable
    checks, findings = 0, []
    for app in etcd.apps.values():
        need = required_available(app)
        if not need or app.mode != "replicated":
            continue
        where = [(c.slot, c.host) for c in snapshot.containers if c.app == app.name]
        where += [(p.slot, p.host) for p in etcd.replicas if p.app == app.name]
        for slot, host in where:
            if host in touched or host in unreadable:
                state.exempt_until[(app.name, slot)] = now + bounds.settle
        answering = {
            c.slot
            for c in _ours(snapshot)
            if c.app == app.name and c.serving and c.host not in touched
        }
        exempt = {s for (a, s), t in state.exempt_until.items() if a == app.name and t >= now}
        count = len(answering | exempt)
        if app.name not in state.armed:
            if len(answering) >= need:
                state.armed.add(app.name)
            continue
        checks += 1
        if count < need:
            findings.append(
                Finding(
                    "min-available",
                    now,
                    f"{app.name}: {count} slots available (answering {sorted(answering)}, "
                    f"on faulted hosts {sorted(exempt)}), min_available {need}; touched "
                    f"hosts {sorted(touched)}",
                )
            )
    return checks, findings


def orphans(etcd: EtcdView, touched: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Records that name an app or a host etcd does not hold (and replicas past an app's
    count). A host a fault touches may keep its reports until it is back."""
    apps, hosts = set(etcd.apps), set(etcd.hosts)
    found = [f"replicas/{p.app}/{p.slot}" for p in etcd.replicas if p.app not in apps]
    found += [
        f"replicas/{p.app}/{p.slot} (replicas: {etcd.apps[p.app].replicas})"
        for p in etcd.replicas
        if p.app in apps
        and etcd.apps[p.app].mode == "replicated"
        and p.slot >= etcd.apps[p.app].replicas
    ]
    found += [f"revisions/{a}/{n}" for a, n in sorted(etcd.revisions) if a not in apps]
    found += [f"rollouts/{a}" for a in sorted(etcd.rollouts) if a not in apps]
    found += [f"jobs/{a}" for a in sorted(etcd.jobs) if a not in apps]
    found += [f"alive/{h}" for h in sorted(etcd.alive) if h not in hosts]
    found += [f"status/{h}" for h in sorted(etcd.status) if h not in hosts]
    found += [f"host-labels/{h}" for h in sorted(etcd.host_labels) if h not in hosts]
    found += [
        f"reports/{h}/{a}/{s}/{r}"
        for h, a, s, r in sorted(etcd.reports)
        if h not in hosts or (a not in apps and h not in touched)
    ]
    return found


@dataclass
class OrphanState:
    first_seen: dict[str, float] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)


def check_orphans(
    state: OrphanState, snapshot: Snapshot, windows: Sequence[FaultWindow], bounds: Bounds
) -> list[Finding]:
    """An orphaned record may exist for a while (the controller removes it after the
    containers it stands for stop); past ``orphan`` it is a leak."""
    if snapshot.etcd is None:
        return []
    now = snapshot.at
    found = orphans(snapshot.etcd, _touched(windows, now, bounds.fence))
    state.first_seen = {k: t for k, t in state.first_seen.items() if k in set(found)}
    findings = []
    for key in found:
        since = state.first_seen.setdefault(key, now)
        if now - since > bounds.orphan and key not in state.reported:
            state.reported.add(key)
            findings.append(Finding("orphan", now, f"{key} orphaned for {now - since:.0f}s"))
    return findings


@dataclass
class RssState:
    peak: dict[str, int] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)


def check_rss(state: RssState, snapshot: Snapshot, bounds: Bounds) -> list[Finding]:
    """Every process's resident memory stays under its kind's cap (``server``,
    ``agent``, ``etcd``: the name's first word)."""
    findings = []
    for name, rss in snapshot.rss.items():
        state.peak[name] = max(state.peak.get(name, 0), rss)
        cap = bounds.rss.get(name.split("-")[0])
        if cap is not None and rss > cap and name not in state.reported:
            state.reported.add(name)
            findings.append(
                Finding("rss", snapshot.at, f"{name}: {rss >> 20} MiB over {cap >> 20} MiB")
            )
    return findings


def check_failed_ops(ops: Iterable[OpRecord]) -> tuple[int, list[Finding]]:
    """A call fleet refused (a definite error: conflict, invalid, not found, refused
    precondition) changed nothing: the app's generation in etcd is the same after it.
    Ambiguous ends (the connection broke) may or may not have applied: not judged."""
    checks, findings = 0, []
    for op in ops:
        if op.outcome != "refused" or (op.gen_before is None and op.gen_after is None):
            continue
        checks += 1
        if op.gen_before != op.gen_after:
            findings.append(
                Finding(
                    "failed-op-changed",
                    op.end,
                    f"{op.thread}: {op.op} {op.target} {op.args} failed ({op.error}) but "
                    f"generation went {op.gen_before} -> {op.gen_after}",
                )
            )
    return checks, findings


def expected_state(ops: Iterable[OpRecord]) -> dict[str, dict[str, set[str]]]:
    """What etcd must hold for each app once the calls are done: each successful call's
    ``wants``, in order; an ambiguous call adds its value as a possibility."""
    expected: dict[str, dict[str, set[str]]] = defaultdict(dict)
    for op in sorted(ops, key=lambda o: o.start):
        for name, value in op.wants:
            if op.outcome == "ok":
                expected[op.target][name] = {value}
            elif op.outcome == "ambiguous":
                expected[op.target].setdefault(name, {ANY}).add(value)
    return dict(expected)


def check_expectations(
    expected: dict[str, dict[str, set[str]]], etcd: EtcdView, at: float
) -> tuple[int, list[Finding]]:
    """Every successful call is in etcd at the end (the last one per app and field)."""
    checks, findings = 0, []
    for app, fields in sorted(expected.items()):
        record = etcd.apps.get(app)
        actual = {
            "exists": str(record is not None).lower(),
            "replicas": str(record.replicas) if record else "",
            "image": record.image if record else "",
        }
        for name, allowed in sorted(fields.items()):
            if record is None and name != "exists":
                continue
            checks += 1
            if ANY not in allowed and actual[name] not in allowed:
                findings.append(
                    Finding(
                        "applied-reflected",
                        at,
                        f"{app}.{name} is {actual[name]!r} in etcd; the calls that "
                        f"succeeded last set {sorted(allowed)}",
                    )
                )
    return checks, findings


def check_events(
    starts: dict[str, tuple[str, str, int, float]],
    stored: Iterable[tuple[str, str, str, int, float, int]],
    windows: Sequence[FaultWindow],
    bounds: Bounds,
    now: float,
) -> tuple[int, list[Finding]]:
    """A container start Docker saw is in etcd's events, unless a fault on its host or on
    a control plane came within ``events_quiet`` of it (its stream may have broken).
    ``starts``: container id -> (host, app, slot, started at); ``stored``: (host,
    container id, app, slot, time, count) of every stored ``start`` event. A start the
    control plane's gate coalesced (same host, app and slot within its window) is in a
    later event of that slot with a count, stored when the window ends: so a start is
    judged only ``events_repeat`` after it, and not if a control plane was killed (-9)
    within that time after it (the count was in its memory; a SIGTERM stores it)."""
    ids = {(host, cid) for host, cid, *_ in stored}
    coalesced = [(host, app, slot, t) for host, _, app, slot, t, count in stored if count > 1]
    quiet, repeat = bounds.events_quiet, bounds.events_repeat
    checks, findings = 0, []
    for cid, (host, app, slot, at) in sorted(starts.items()):
        if at > now - max(quiet, repeat + 5):
            continue
        touched = [
            w
            for w in windows
            if (host in w.hosts or w.kind.startswith("cp-"))
            and w.start <= at + quiet
            and (w.end is None or w.end >= at - quiet)
        ]
        killed = [w for w in windows if w.kind == "cp-kill" and at <= w.start <= at + repeat]
        if touched or killed:
            continue
        checks += 1
        if (host, cid) in ids:
            continue
        if any((h, a, s) == (host, app, slot) and t >= at - 1 for h, a, s, t in coalesced):
            continue
        findings.append(
            Finding("events", now, f"no start event of {app}/{slot} {cid[:12]} on {host}")
        )
    return checks, findings


def differences(snapshot: Snapshot) -> list[str]:
    """Everything between the pool and the desired state in etcd: empty once converged
    (every host connected and ready, every slot of every app one container of the
    current revision and image where etcd places it, nothing else running, no orphan)."""
    etcd = snapshot.etcd
    if etcd is None:
        return ["no etcd member answered"]
    diffs = [f"dockerd of {h} does not answer" for h in sorted(snapshot.unreadable)]
    for host, host_state in sorted(etcd.hosts.items()):
        if host not in etcd.alive:
            diffs.append(f"host {host} not connected")
        if host_state != "ready":
            diffs.append(f"host {host} is {host_state}")
    placed, strays = split_running(snapshot)
    diffs += [f"{c.name} on {c.host} runs where etcd places nothing" for c in strays]
    running: dict[tuple[str, int], list[Container]] = defaultdict(list)
    for c in placed:
        running[(c.app, c.slot)].append(c)
    for app in sorted(etcd.apps.values(), key=lambda a: a.name):
        diffs += _app_differences(app, running, etcd)
    diffs += orphans(etcd)
    return diffs


def _app_differences(
    app: AppView,
    running: dict[tuple[str, int], list[Container]],
    etcd: EtcdView,
) -> list[str]:
    diffs = []
    slots = [p for p in etcd.replicas if p.app == app.name]
    if app.mode == "replicated" and sorted(p.slot for p in slots) != list(range(app.replicas)):
        diffs.append(f"{app.name} has slots {sorted(p.slot for p in slots)}, wants {app.replicas}")
    if app.mode == "global":
        ready = {h for h, s in etcd.hosts.items() if s == "ready" and h in etcd.alive}
        if {p.host for p in slots} != ready:
            diffs.append(f"{app.name} on {sorted(p.host for p in slots)}, ready {sorted(ready)}")
    for p in slots:
        if p.stopped:
            continue
        if p.next_host is not None:
            diffs.append(f"{app.name}/{p.slot} is being replaced on {p.next_host}")
        if p.revision != app.revision and app.mode != "job":
            diffs.append(f"{app.name}/{p.slot} at revision {p.revision}, app at {app.revision}")
        found = running.get((app.name, p.slot), [])
        if app.mode == "job":
            continue  # a job's container runs, then exits: its slot is judged by strays
        if len(found) != 1 or found[0].image != app.image:
            what = [(c.host, c.image) for c in found]
            diffs.append(f"{app.name}/{p.slot} runs {what}, wants {app.image} on {p.host}")
    return diffs
