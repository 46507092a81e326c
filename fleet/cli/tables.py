"""The tables of the pool's records: apps, jobs, hosts and containers, as ``fleet get``,
``ps`` and ``describe`` print them (``-o wide`` adds the second set of columns).

The columns of those commands are here; a command that lists anything else (secrets,
tokens, revisions, endpoints, stats) builds its table beside it.
"""

from __future__ import annotations

import json
import time

from fleet._time import epoch
from fleet.cli.output import Format, ListFormat, View, human_memory, print_records
from fleet.hostlabels import AGENT_PREFIX
from fleet.proto import fleet_pb2 as pb

__all__ = [
    "capped_claim",
    "edge_listen",
    "ingress_backends",
    "ingress_text",
    "print_apps",
    "print_containers",
    "print_hosts",
    "print_jobs",
]


def _ports(status: pb.ContainerStatus) -> str:
    return ",".join(f"{p.host_port}->{p.container_port}/{p.protocol}" for p in status.ports) or "-"


def ingress_text(spec: dict[str, object]) -> str:
    """An app's ingress as a column shows it: HOST[,HOST]/PATH -> :PORT, or tcp:PORT."""
    ingress = spec.get("ingress")
    if not isinstance(ingress, dict):
        return "-"
    if ingress.get("tcp"):
        return f"tcp:{ingress['tcp']} -> :{ingress['port']}"
    hosts = ingress.get("host") or [spec.get("name")]
    path = ingress.get("path") or "/"
    return f"{','.join(map(str, hosts))}{path} -> :{ingress['port']}"


def edge_listen(listen: str, spec: dict[str, object]) -> str:
    """Where an edge listening on ``listen`` (its HTTP ADDR:PORT) takes the app's
    traffic: there for an HTTP route, its address and the route's own port for TCP."""
    ingress = spec.get("ingress")
    tcp = ingress.get("tcp") if isinstance(ingress, dict) else None
    if tcp is None:
        return listen
    return f"{listen.rpartition(':')[0]}:{tcp}"


def ingress_backends(
    spec: dict[str, object],
    endpoints: list[pb.Endpoint],
    containers: list[pb.ContainerInfo],
    addresses: dict[str, str],
) -> list[list[str]]:
    """The rows of an app's edge backends, as the edges are told them: each available
    container (``endpoints``) on the ingress port, ready; each no longer desired but
    running (its shutdown delay), drain. ``addresses``: host -> its address."""
    from fleet.controlplane.edgefeed import backend_name

    ingress = spec.get("ingress")
    if not isinstance(ingress, dict):
        return []
    port, app = ingress["port"], str(spec["name"])
    rows = [
        [backend_name(app, e.slot, e.revision, e.host), f"{e.address}:{e.host_port}", "ready"]
        for e in endpoints
        if e.container_port == port and e.protocol == "tcp"
    ]
    for c in containers:
        published = [p.host_port for p in c.status.ports if p.container_port == port]
        if not c.desired and c.status.state == "running" and published and addresses.get(c.host):
            name = backend_name(app, c.slot, c.revision, c.host)
            rows.append([name, f"{addresses[c.host]}:{published[0]}", "drain"])
    return sorted(rows)


def age(stamp: str, now: float) -> str:
    """How long ago ``stamp`` (RFC 3339) was, as kubectl's AGE says it: 45s, 12m, 5h,
    3d (2 units below an hour or a day: 1h20m, 2d5h); "-" when unknown."""
    then = epoch(stamp) if stamp else None
    if then is None:
        return "-"
    seconds = max(0, int(now - then))
    if seconds < 120:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes}m"
    if hours < 10:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if days < 2:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def print_apps(
    apps: list[pb.AppInfo], output: Format | ListFormat, view: View | None = None
) -> None:
    """``fleet get apps``."""
    rows, wide = [], []
    now = time.time()
    for a in apps:
        spec = json.loads(a.spec_json)
        rows.append(
            [
                a.name,
                f"{a.running}/{a.desired}",
                str(a.available),
                str(a.updated),
                str(len(a.pending)),
                str(a.revision),
                a.rollout or "-",
                a.reason or "-",
                spec["image"],
                age(a.created_at, now),
            ]
        )
        wide.append(
            [
                str(a.generation),
                ",".join(spec["ports"]) or "-",
                ingress_text(spec),
                a.updated_at,
                a.message or "-",
            ]
        )
    print_records(
        apps,
        output,
        [
            "NAME",
            "RUNNING",
            "AVAILABLE",
            "UPDATED",
            "PENDING",
            "REVISION",
            "ROLLOUT",
            "REASON",
            "IMAGE",
            "AGE",
        ],
        rows,
        # UPDATED (the table's) counts replicas at the revision; this is when it changed.
        wide_columns=["GENERATION", "PORTS", "INGRESS", "CHANGED", "MESSAGE"],
        wide_rows=wide,
        kind="app",
        view=view,
    )


def print_jobs(
    apps: list[pb.AppInfo], output: Format | ListFormat, view: View | None = None
) -> None:
    """``fleet get jobs``: the job fields of apps in mode job (``-o wide``: how they
    run, as `kubectl get jobs -o wide` adds the containers and images)."""
    rows, wide = [], []
    for a in apps:
        rows.append(
            [
                a.name,
                f"{a.job.succeeded}/{a.job.completions}",
                str(a.job.running),
                str(a.job.failed),
                a.job.state,
                ",".join(str(c) for _, c in sorted(a.job.exit_codes.items())) or "-",
                a.job.started_at or "-",
            ]
        )
        wide.append(
            [
                str(a.job.parallelism),
                str(a.job.backoff_limit),
                a.job.finished_at or "-",
                json.loads(a.spec_json)["image"] if a.spec_json else "-",
                a.job.message or "-",
            ]
        )
    print_records(
        apps,
        output,
        ["NAME", "SUCCEEDED", "RUNNING", "FAILED", "STATE", "EXIT CODES", "STARTED"],
        rows,
        wide_columns=["PARALLELISM", "BACKOFF LIMIT", "FINISHED", "IMAGE", "MESSAGE"],
        wide_rows=wide,
        kind="app",
        view=view,
    )


def _host_labels(h: pb.HostInfo) -> str:
    """Admin labels as constraints name them, then what its agent claims, as agent.*."""
    admin = [f"{k}={v}" for k, v in sorted(h.labels.items())]
    claimed = [f"{AGENT_PREFIX}{k}={v}" for k, v in sorted(h.agent_labels.items())]
    return ",".join(admin + claimed) or "-"


def capped_claim(h: pb.HostInfo) -> str:
    """What its agent claims, cpu/memory, where more than placement counts ("" if not)."""
    claimed, counted = h.reported_capacity, h.capacity
    if not h.HasField("reported_capacity") or (
        claimed.cpu <= counted.cpu and claimed.memory_bytes <= counted.memory_bytes
    ):
        return ""
    return f"{claimed.cpu:g}/{human_memory(claimed.memory_bytes)}"


def print_hosts(
    hosts: list[pb.HostInfo], output: Format | ListFormat, view: View | None = None
) -> None:
    """``fleet get hosts``; ``describe host`` prints its wide row."""
    rows, wide = [], []
    now = time.time()
    for h in hosts:
        state = h.state if not h.maintenance else f"{h.state} (maintenance slot)"
        rows.append(
            [
                h.host_id,
                state,
                str(h.containers),
                f"{h.reserved.cpu:g}/{h.capacity.cpu:g}",
                f"{human_memory(h.reserved.memory_bytes)}/{human_memory(h.capacity.memory_bytes)}",
                age(h.registered_at, now),
            ]
        )
        wide.append(
            [
                f"{h.usage.cpu:.2f}",
                human_memory(h.usage.memory_bytes),
                _host_labels(h),
                capped_claim(h) or "-",
                " ".join(
                    filter(
                        None,
                        [h.facts.get("os_name") or h.facts.get("os"), h.facts.get("os_version")],
                    )
                )
                or "-",
                h.facts.get("kernel", "-"),
                h.facts.get("docker_version", "-"),
                h.facts.get("boot_id", "-")[:8],
                h.address or "-",
                h.ingress or "-",
                h.cert_expires or "-",
            ]
        )
    print_records(
        hosts,
        output,
        ["HOST", "STATE", "CONTAINERS", "CPU (RESERVED/CAP)", "MEMORY (RESERVED/CAP)", "AGE"],
        rows,
        wide_columns=[
            "CPU USED",
            "MEMORY USED",
            "LABELS",
            "CLAIMED (CAPPED)",
            "OS",
            "KERNEL",
            "DOCKER",
            "BOOT ID",
            "ADDRESS",
            "INGRESS",
            "CERT EXPIRES",
        ],
        wide_rows=wide,
        kind="host",
        view=view,
    )


def replica_name(c: pb.ContainerInfo) -> str:
    """``web.0``, and ``web.0+`` for the replacement starting beside it (make-before-break)."""
    return f"{c.app}.{c.slot}{'+' if c.replacement else ''}"


def container_status(c: pb.ContainerInfo) -> tuple[str, str]:
    """A container's STATUS word and REASON, each a single thing: ``pending`` (no host
    takes it yet), ``assigned`` (placed, its agent has not started it), ``starting``
    (created, or its health check has not passed yet), ``running``, ``unhealthy``,
    ``crash-looping (exit 1, 5 restarts)``, ``exited (N)``, or why it cannot run
    (``image-not-found``, ``pull-failed``, ``refused``, ...)."""
    from fleet.controlplane.availability import CRASH_RESTARTS

    s = c.status
    if c.pending and (not c.host or not s.state):
        return "pending", c.pending
    if not s.state:
        return "assigned", f"placed on {c.host}; its agent has not started it yet"
    message = s.message
    if s.reason:  # image-not-found, pull-failed, ...: Docker has no container to tell
        status = s.reason
    elif s.state in ("running", "exited", "restarting") and s.restarts >= CRASH_RESTARTS:
        # Docker clears the exit code when it starts the container again: say it only
        # while it is known (exited), never "exit 0" for a container that failed.
        known = s.state == "exited" or s.exit_code != 0
        status = f"crash-looping ({f'exit {s.exit_code}, ' if known else ''}{s.restarts} restarts)"
    elif s.state == "exited":
        status = f"exited ({s.exit_code})"
    elif s.state == "created" or (s.state == "running" and s.health == "starting"):
        status = "starting"
    elif s.state == "running" and s.health == "unhealthy":
        status = "unhealthy"
        message = message or "its health check fails"
    else:
        status = s.state
    if not c.desired:
        status += " (stale)"
    return status, message


def print_containers(
    containers: list[pb.ContainerInfo], output: Format | ListFormat, view: View | None = None
) -> None:
    """``fleet ps`` and ``get containers``: every replica, placed or not, and what still
    runs of a replaced one; ``describe`` lists an app's or a host's."""
    rows, wide = [], []
    for c in containers:
        status, reason = container_status(c)
        rows.append(
            [
                replica_name(c),
                c.host or "-",
                status,
                str(c.status.restarts),
                _ports(c.status),
                c.status.container_id[:12] or "-",
                reason or "-",
            ]
        )
        wide.append([str(c.revision or "-"), c.status.name or "-", c.status.started_at or "-"])
    print_records(
        containers,
        output,
        ["REPLICA", "HOST", "STATUS", "RESTARTS", "PORTS", "CONTAINER", "REASON"],
        rows,
        wide_columns=["REVISION", "NAME", "STARTED"],
        wide_rows=wide,
        kind="container",
        view=view,
    )
