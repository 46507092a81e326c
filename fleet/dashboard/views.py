"""What each dashboard page shows, shaped from the API's own answers (the protos the
CLI reads), so the page and ``fleet get`` never disagree. Pure: no I/O, no clock.

Also the "what changed" marks: for each live topic, a value that changes exactly when
that topic's part of the informer's state does (``topic_marks``), so a browser is told
to fetch again only the page it shows, and only when that page has something new.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState

__all__ = [
    "TOPICS",
    "AppRow",
    "Bar",
    "HostRow",
    "app_detail",
    "app_rows",
    "event_rows",
    "host_rows",
    "sparkline_points",
    "topic_marks",
]

TOPICS = ("pool", "apps", "events", "upgrade", "usage")


@dataclass(frozen=True)
class Bar:
    """A capacity bar: ``used`` of ``total`` (shown with a <meter>, and as text)."""

    used: float
    total: float
    text: str

    @property
    def percent(self) -> int:
        return round(100 * self.used / self.total) if self.total > 0 else 0


def _gib(memory: int) -> str:
    return f"{memory / 2**30:.1f}Gi" if memory >= 2**30 else f"{memory / 2**20:.0f}Mi"


def _cpu_bar(used: float, total: float) -> Bar:
    return Bar(used, total, f"{used:.2f} / {total:g} cpu")


def _memory_bar(used: int, total: int) -> Bar:
    return Bar(float(used), float(total), f"{_gib(used)} / {_gib(total)}")


@dataclass(frozen=True)
class HostRow:
    host_id: str
    state: str  # ready | cordoned | draining | down
    connected: bool
    labels: dict[str, str]
    os: str
    address: str
    containers: int
    cpu_reserved: Bar
    cpu_live: Bar
    memory_reserved: Bar
    memory_live: Bar
    maintenance: str  # who holds its maintenance slot ("" none)
    drain: str  # what a drain still waits for ("" none)
    upgrade: str  # its phase in the upgrade walk ("" not in one)


def host_rows(hosts: Sequence[pb.HostInfo], upgrade: pb.UpgradeInfo | None = None) -> list[HostRow]:
    phases = {h.host_id: h.phase for h in upgrade.hosts} if upgrade and upgrade.id else {}
    rows = []
    for h in hosts:
        facts = dict(h.facts)
        os_name = facts.get("os_name") or facts.get("os", "")
        os_version = facts.get("os_version", "")
        drain = ""
        if h.state == "draining":
            drain = f"{h.remaining} replica(s) left"
            if h.blocked:
                first = h.blocked[0]
                drain += f"; {first.app}[{first.slot}] waits: {first.reason}"
        rows.append(
            HostRow(
                host_id=h.host_id,
                state=h.state,
                connected=h.connected,
                labels={**dict(h.agent_labels), **dict(h.labels)},
                os=f"{os_name} {os_version}".strip(),
                address=h.address,
                containers=h.containers,
                cpu_reserved=_cpu_bar(h.reserved.cpu, h.capacity.cpu),
                cpu_live=_cpu_bar(h.usage.cpu, h.capacity.cpu),
                memory_reserved=_memory_bar(h.reserved.memory_bytes, h.capacity.memory_bytes),
                memory_live=_memory_bar(h.usage.memory_bytes, h.capacity.memory_bytes),
                maintenance=h.maintenance,
                drain=drain,
                upgrade=phases.get(h.host_id, ""),
            )
        )
    return rows


@dataclass(frozen=True)
class AppRow:
    name: str
    mode: str
    image: str
    revision: int
    desired: int
    running: int
    available: int
    updated: int
    rollout: str  # progressing | complete | failed | ""
    progress: int  # percent of the desired replicas updated and available
    pending: list[tuple[int, str]]  # (slot, why it waits)
    trouble: str  # reason: message, "" when none


def _image(spec_json: str) -> str:
    try:
        return str(json.loads(spec_json).get("image", ""))
    except ValueError:
        return ""


def app_rows(apps: Sequence[pb.AppInfo]) -> list[AppRow]:
    rows = []
    for a in apps:
        done = min(a.updated, a.available)
        rows.append(
            AppRow(
                name=a.name,
                mode=a.mode or "replicated",
                image=_image(a.spec_json),
                revision=a.revision,
                desired=a.desired,
                running=a.running,
                available=a.available,
                updated=a.updated,
                rollout=a.rollout,
                progress=round(100 * done / a.desired) if a.desired else 100,
                pending=[(p.slot, p.reason) for p in a.pending],
                trouble=f"{a.reason}: {a.message}" if a.reason else "",
            )
        )
    return rows


@dataclass(frozen=True)
class AppDetail:
    app: AppRow
    paused: bool
    rollout_message: str
    by_host: dict[str, list[dict[str, str]]]  # host ("" unplaced) -> its replicas
    revisions: list[pb.RevisionInfo]
    endpoints: list[str]
    events: list[dict[str, str]]
    cpu: str  # sparkline points ("" without data)
    memory: str
    usage: str  # the latest totals, as text
    spec: dict[str, object] = field(default_factory=dict)


def _replica(c: pb.ContainerInfo) -> dict[str, str]:
    state = c.status.state or ("pending" if c.pending else "not reported")
    if c.status.health:
        state += f" ({c.status.health})"
    return {
        "slot": str(c.slot),
        "revision": str(c.revision),
        "state": state,
        "why": c.pending or c.status.message or c.status.reason,
        "role": "replacement" if c.replacement else ("stale" if c.host and not c.desired else ""),
    }


def app_detail(
    app: pb.AppInfo,
    rollout: pb.RolloutInfo | None,
    containers: Iterable[pb.ContainerInfo],
    revisions: pb.RevisionList,
    endpoints: pb.EndpointList,
    events: Sequence[pb.Event],
    usage: Sequence[tuple[float, int]],
) -> AppDetail:
    by_host: dict[str, list[dict[str, str]]] = {}
    for c in containers:
        by_host.setdefault(c.host, []).append(_replica(c))
    spec = json.loads(app.spec_json) if app.spec_json else {}
    latest = usage[-1] if usage else None
    return AppDetail(
        app=app_rows([app])[0],
        paused=bool(rollout and rollout.paused),
        rollout_message=rollout.message if rollout else "",
        by_host=dict(sorted(by_host.items())),
        revisions=sorted(revisions.revisions, key=lambda r: -r.revision),
        endpoints=[
            f"{e.address}:{e.host_port} -> {e.container_port}/{e.protocol or 'tcp'} "
            f"(slot {e.slot} on {e.host})"
            for e in endpoints.endpoints
        ],
        events=event_rows(events),
        cpu=sparkline_points([cpu for cpu, _ in usage]),
        memory=sparkline_points([float(memory) for _, memory in usage]),
        usage=f"{latest[0]:.2f} cpu, {_gib(latest[1])}" if latest else "",
        spec={k: spec[k] for k in ("image", "replicas", "ports", "resources") if k in spec},
    )


def event_rows(
    events: Iterable[pb.Event], app: str = "", host: str = "", limit: int = 200
) -> list[dict[str, str]]:
    """The newest ``limit`` events that match the filters, newest first."""
    rows = [
        {
            "time": e.time,
            "host": e.host,
            "app": e.app,
            "slot": str(e.slot) if e.app else "",
            "kind": e.kind,
            "message": e.message + (f" (x{e.count})" if e.count > 1 else ""),
        }
        for e in events
        if (not app or e.app == app) and (not host or e.host == host)
    ]
    return rows[::-1][:limit]


def sparkline_points(values: Sequence[float], width: int = 120, height: int = 24) -> str:
    """An SVG polyline's ``points`` for ``values`` scaled into width x height ("" for
    fewer than two values: a line needs two)."""
    if len(values) < 2:
        return ""
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - height * v / top:.1f}" for i, v in enumerate(values))


def topic_marks(state: ClusterState) -> dict[str, object]:
    """A value per topic that changes when its part of ``state`` changes (the
    informer's change sequence numbers; the whole revision when it keeps none).
    ``usage`` is the agents' reports, live usage included: they change with every
    heartbeat, so the hub sends it at a slower pace (``live.USAGE_INTERVAL``)."""
    changes = state.changes
    if changes is None:
        return dict.fromkeys(("pool", "apps", "upgrade", "usage"), state.revision)
    return {
        "pool": (changes.hosts, changes.placed),
        "apps": (_newest(changes.apps), _newest(changes.reports), changes.placed),
        "upgrade": (changes.hosts, changes.shared),
        "usage": changes.status,
    }


def _newest(marks: Mapping[str, int]) -> tuple[int, int]:
    return (max(marks.values(), default=0), len(marks))
