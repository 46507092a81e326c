"""``fleet``: the command line. A thin layer over ``fleet.client`` and the daemons."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import ipaddress
import json
import logging
import os
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.live import Live
from rich.table import Table

from fleet.cli import certs, hosts, rollouts, secrets
from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.options import duration_option, memory_option
from fleet.cli.output import (
    Format,
    OutputOpt,
    console,
    err_console,
    fail,
    human_memory,
    print_error,
    print_records,
    safe,
    to_dict,
)
from fleet.cli.rollouts import TimeoutOpt, WaitOpt, follow_changes
from fleet.client import servers_from
from fleet.errors import FleetError, PolicyDenied, SpecError
from fleet.hostlabels import AGENT_PREFIX
from fleet.policy import ALLOW_WORDS, Policy
from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppFile, AppSpec, json_schema, load_file
from fleet.transport import TlsFiles, client_transport

app = typer.Typer(
    name="fleet",
    help="Run containers on a pool of Docker hosts: declare apps, fleet places and keeps them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.add_typer(certs.app, name="certs")

FileOpt = Annotated[
    Path,
    typer.Option("--filename", "-f", help="App file (YAML, one or more documents; - for stdin)."),
]


def _load(path: Path) -> list[AppSpec]:
    return load_file(str(path))


# ---------------------------------------------------------------------- apps


@app.command()
@connected
def apply(
    filename: FileOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change and where; store nothing.")
    ] = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = "10m",
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Create or update the apps in FILE (declarative: re-applying changes nothing)."""
    loaded = AppFile.read(filename)
    specs = loaded.specs
    seconds = duration_option("--timeout", timeout)
    with conn.client() as client:
        # Plan on what is stored now; if someone changes one of these apps before ours
        # lands, the server refuses instead of overwriting their change.
        stored = {a.name: a.generation for a in client.apps()}
        base = {s.name: stored.get(s.name, 0) for s in specs}
        try:
            changes = client.apply(specs, dry_run=dry_run, base_generations=base)
        except (SpecError, PolicyDenied) as error:
            # The control plane names each problem by the app's place in the request.
            raise type(error)(loaded.located(error.problems)) from None
    if output in (Format.json, Format.yaml):
        print_records(changes, output, [], [])
    else:
        suffix = " (dry run)" if dry_run else ""
        for change in changes:
            detail = f" ({', '.join(change.fields)})" if change.action == "changed" else ""
            console.print(safe(f"app/{change.app} {change.action}{detail}{suffix}"))
            for placement in change.placements:
                console.print(safe(f"  {placement.app}.{placement.slot} -> {placement.host}"))
            for pending in change.pending:
                console.print(safe(f"  {pending.app}.{pending.slot} pending: {pending.reason}"))
    if wait and not dry_run:
        follow_changes(conn, changes, seconds, output)


@app.command()
@connected
def diff(
    filename: FileOpt,
    conn: Connection = CONNECTION,
) -> None:
    """Show how FILE differs from what the control plane stores (exit 1 if it differs)."""
    specs = _load(filename)
    changed = False
    with conn.client() as client:
        stored = {a.name: a for a in client.apps()}
    for spec in specs:
        before = ""
        if spec.name in stored:
            before = yaml.safe_dump(json.loads(stored[spec.name].spec_json), sort_keys=False)
        after = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
        lines = list(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                fromfile=f"app/{spec.name} (stored)" if before else "/dev/null",
                tofile=f"app/{spec.name} ({filename})",
            )
        )
        if lines:
            changed = True
            sys.stdout.writelines(lines)
    if changed:
        raise typer.Exit(1)


class Kind(StrEnum):
    apps = "apps"
    hosts = "hosts"
    containers = "containers"
    jobs = "jobs"


_KIND_ALIASES = {
    "app": "apps",
    "host": "hosts",
    "container": "containers",
    "ps": "containers",
    "job": "jobs",
}


def _kind(value: str) -> Kind:
    try:
        return Kind(_KIND_ALIASES.get(value, value))
    except ValueError:
        fail(f"unknown kind {value!r}: use apps, hosts or containers")


def _ports(status: pb.ContainerStatus) -> str:
    return ",".join(f"{p.host_port}->{p.container_port}/{p.protocol}" for p in status.ports) or "-"


def _print_apps(apps: list[pb.AppInfo], output: Format) -> None:
    rows, wide = [], []
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
            ]
        )
        wide.append(
            [str(a.generation), ",".join(spec["ports"]) or "-", a.updated_at, a.message or "-"]
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
        ],
        rows,
        wide_columns=["GENERATION", "PORTS", "UPDATED", "MESSAGE"],
        wide_rows=wide,
    )


def _print_jobs(apps: list[pb.AppInfo], output: Format) -> None:
    rows = [
        [
            a.name,
            f"{a.job.succeeded}/{a.job.completions}",
            str(a.job.running),
            str(a.job.failed),
            a.job.state,
            ",".join(str(c) for _, c in sorted(a.job.exit_codes.items())) or "-",
            a.job.started_at or "-",
        ]
        for a in apps
    ]
    print_records(
        apps,
        output,
        ["NAME", "SUCCEEDED", "RUNNING", "FAILED", "STATE", "EXIT CODES", "STARTED"],
        rows,
    )


def _host_labels(h: pb.HostInfo) -> str:
    """Admin labels as constraints name them, then what its agent claims, as agent.*."""
    admin = [f"{k}={v}" for k, v in sorted(h.labels.items())]
    claimed = [f"{AGENT_PREFIX}{k}={v}" for k, v in sorted(h.agent_labels.items())]
    return ",".join(admin + claimed) or "-"


def _capped_claim(h: pb.HostInfo) -> str:
    """What its agent claims, cpu/memory, where more than placement counts ("" if not)."""
    claimed, counted = h.reported_capacity, h.capacity
    if not h.HasField("reported_capacity") or (
        claimed.cpu <= counted.cpu and claimed.memory_bytes <= counted.memory_bytes
    ):
        return ""
    return f"{claimed.cpu:g}/{human_memory(claimed.memory_bytes)}"


def _print_hosts(hosts: list[pb.HostInfo], output: Format) -> None:
    rows, wide = [], []
    for h in hosts:
        state = h.state if not h.maintenance else f"{h.state} (maintenance slot)"
        rows.append(
            [
                h.host_id,
                state,
                str(h.containers),
                f"{h.reserved.cpu:g}/{h.capacity.cpu:g}",
                f"{human_memory(h.reserved.memory_bytes)}/{human_memory(h.capacity.memory_bytes)}",
            ]
        )
        wide.append(
            [
                f"{h.usage.cpu:.2f}",
                human_memory(h.usage.memory_bytes),
                _host_labels(h),
                _capped_claim(h) or "-",
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
            ]
        )
    print_records(
        hosts,
        output,
        ["HOST", "STATE", "CONTAINERS", "CPU (RESERVED/CAP)", "MEMORY (RESERVED/CAP)"],
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
        ],
        wide_rows=wide,
    )


def _print_containers(containers: list[pb.ContainerInfo], output: Format) -> None:
    rows, wide = [], []
    for c in containers:
        # A container that cannot run says why in its state (image-not-found, like
        # kubectl's ErrImagePull), and in words in REASON.
        state = c.status.reason or c.status.state or "pending"
        if c.status.state == "exited":
            state = f"exited ({c.status.exit_code})"
        elif c.status.health == "unhealthy":
            state = "running (unhealthy)"
        if not c.desired:
            state += " (stale)"
        rows.append(
            [
                f"{c.app}.{c.slot}",
                c.host,
                state,
                str(c.status.restarts),
                _ports(c.status),
                c.status.container_id[:12] or "-",
                c.status.message or "-",
            ]
        )
        wide.append([str(c.revision), c.status.name or "-", c.status.started_at or "-"])
    print_records(
        containers,
        output,
        ["REPLICA", "HOST", "STATE", "RESTARTS", "PORTS", "CONTAINER", "REASON"],
        rows,
        wide_columns=["REVISION", "NAME", "STARTED"],
        wide_rows=wide,
    )


@app.command()
@connected
def get(
    kind: Annotated[
        str, typer.Argument(help="apps, hosts, containers or jobs.", show_default=False)
    ],
    name: Annotated[str, typer.Argument(help="Only this one.")] = "",
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """List apps, hosts, containers or jobs."""
    which = _kind(kind)
    with conn.client() as client:
        if which == Kind.apps:
            _print_apps(client.apps(name), output)
        elif which == Kind.jobs:
            _print_jobs([a for a in client.apps(name) if a.mode == "job"], output)
        elif which == Kind.hosts:
            _print_hosts(client.hosts(name), output)
        else:
            _print_containers(client.containers(app=name), output)


@app.command()
@connected
def ps(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="Only this app.")] = "",
    host: Annotated[str, typer.Option("--host", help="Only this host.")] = "",
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """List the containers of every app (or one), with their host, state and ports."""
    with conn.client() as client:
        _print_containers(client.containers(app=app_name, host=host), output)


@app.command()
@connected
def describe(
    kind: Annotated[str, typer.Argument(help="app or host.", show_default=False)],
    name: Annotated[str, typer.Argument(help="Its name.", show_default=False)],
    conn: Connection = CONNECTION,
) -> None:
    """Show one app (spec, replicas, why any are pending) or one host in detail."""
    which = _kind(kind)
    with conn.client() as client:
        if which == Kind.apps:
            info = client.apps(name)[0]
            spec = json.loads(info.spec_json)
            console.print(
                f"[bold]app/{safe(info.name)}[/bold]  generation {info.generation}, "
                f"revision {info.revision}, updated {safe(info.updated_at)}"
            )
            if info.mode == "job":
                job = info.job
                console.print(
                    safe(
                        f"job: {job.state}, {job.succeeded}/{job.completions} succeeded, "
                        f"{job.running} running, {job.failed} failed (backoff_limit "
                        f"{job.backoff_limit}); exit codes "
                        + (", ".join(f"{s}={c}" for s, c in sorted(job.exit_codes.items())) or "-")
                    )
                )
                if job.message:
                    console.print(safe(f"  {job.message}"))
            else:
                console.print(
                    safe(
                        f"{info.mode}: {info.running} running / {info.available} available / "
                        f"{info.placed} placed / {info.desired} desired"
                    )
                )
            if info.reason:  # why not every container is up, as `get apps` says it
                console.print(safe(f"{info.reason}: {info.message}"), soft_wrap=True)
            print(yaml.safe_dump(spec, sort_keys=False), end="")
            if info.pending:
                console.print("[bold]pending[/bold]")
                for p in info.pending:
                    console.print(safe(f"  {info.name}.{p.slot}: {p.reason}"))
            console.print("[bold]containers[/bold]")
            _print_containers(client.containers(app=name), Format.table)
        elif which == Kind.hosts:
            host = client.hosts(name)[0]
            _print_hosts([host], Format.wide)
            admin = ", ".join(f"{k}={v}" for k, v in sorted(host.labels.items())) or "-"
            console.print(safe(f"labels (set by admins, `fleet label host`): {admin}"))
            claimed = ", ".join(
                f"{AGENT_PREFIX}{k}={v}" for k, v in sorted(host.agent_labels.items())
            )
            console.print(safe(f"labels its agent claims (--label): {claimed or '-'}"))
            serial = host.cert_serial or "- (none: a plaintext control plane)"
            console.print(
                safe(f"certificate serial (its agent's, last registration): {serial}"),
                soft_wrap=True,
            )
            if _capped_claim(host):
                counted, claims = host.capacity, host.reported_capacity
                console.print(
                    safe(
                        f"capacity: {counted.cpu:g} cpus, {human_memory(counted.memory_bytes)} "
                        f"counted; its agent claims {claims.cpu:g} cpus, "
                        f"{human_memory(claims.memory_bytes)} (capped by the control plane's "
                        "--max-host-cpus/--max-host-memory)"
                    )
                )
            console.print("[bold]facts[/bold]")
            for key, value in sorted(host.facts.items()):
                console.print(safe(f"  {key}: {value}"))
            console.print("[bold]containers[/bold]")
            _print_containers(client.containers(host=name), Format.table)
        else:
            fail("describe takes app or host")


@app.command()
@connected
def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    app_name: Annotated[str, typer.Option("--app", help="Only this app.")] = "",
    host: Annotated[str, typer.Option("--host", help="Only this host.")] = "",
    since: Annotated[
        str, typer.Option("--since", help="Only events newer than this, e.g. 10m, 1h.")
    ] = "",
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=0, help="Only the last N (0: all kept).")
    ] = 0,
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Show what happened across the pool: container starts, exits, restarts, pulls,
    unschedulable replicas (kept about an hour, 32 MiB at most). Repeats are stored once
    with a count (shown as xN). -o json prints one object per line."""
    seconds = duration_option("--since", since) if since else 0.0
    with conn.client() as client:
        for event in client.events(
            app=app_name, host=host, since_seconds=seconds, follow=follow, limit=limit
        ):
            if output == Format.json:
                print(json.dumps(to_dict(event)), flush=True)
            elif output == Format.yaml:
                print(yaml.safe_dump([to_dict(event)], sort_keys=False), end="", flush=True)
            else:
                where = f"{event.app}.{event.slot}" if event.app else "-"
                # Repeats stored once: how many times it happened since the last stored.
                times = f" (x{event.count})" if event.count > 1 else ""
                console.print(
                    safe(
                        f"{event.time}  {event.host or event.source:<12} {where:<16} "
                        f"{event.kind:<18} {event.message}{times}"
                    ),
                    soft_wrap=True,
                )


def _stats_table(containers: list[pb.ContainerInfo]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("REPLICA", "HOST", "CONTAINER", "CPU %", "MEM USAGE / LIMIT", "MEM %"):
        table.add_column(column)
    for c in containers:
        if c.status.state != "running":
            continue
        limit = c.status.memory_limit
        share = f"{100 * c.status.memory_bytes / limit:.2f}%" if limit else "-"
        table.add_row(
            safe(f"{c.app}.{c.slot}"),
            safe(c.host),
            safe(c.status.container_id[:12]),
            f"{100 * c.status.cpu:.2f}%",
            f"{human_memory(c.status.memory_bytes)} / {human_memory(limit)}",
            share,
        )
    return table


@app.command()
@connected
def stats(
    app_name: Annotated[str, typer.Argument(metavar="[APP]", help="Only this app.")] = "",
    host: Annotated[str, typer.Option("--host", help="Only this host.")] = "",
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Print once instead of refreshing.")
    ] = False,
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Live cpu and memory of running replicas, like `docker stats` across the pool
    (sampled by the agents every few seconds). Ctrl-C stops the refresh."""
    with conn.client() as client:
        if no_stream or output in (Format.json, Format.yaml):
            found = client.containers(app=app_name, host=host)
            if output in (Format.json, Format.yaml):
                print_records([c for c in found if c.status.state == "running"], output, [], [])
            else:
                console.print(_stats_table(found))
            return
        with contextlib.suppress(KeyboardInterrupt), Live(console=console) as live:
            while True:
                live.update(_stats_table(client.containers(app=app_name, host=host)))
                time.sleep(2)  # the agents sample every few seconds: no use asking faster


@app.command()
@connected
def logs(
    target: Annotated[str, typer.Argument(metavar="APP", help="The app.", show_default=False)],
    slot: Annotated[int, typer.Option("--slot", help="Only this replica.")] = -1,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    tail: Annotated[int, typer.Option("--tail", help="Lines from the end (-1: all).")] = -1,
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t")] = False,
    conn: Connection = CONNECTION,
) -> None:
    """Print the replicas' logs, each line prefixed with its replica (like docker compose)."""
    partial: dict[str, str] = {}
    with conn.client() as client:
        chunks = client.logs(target, slot=slot, follow=follow, tail=tail, timestamps=timestamps)
        for chunk in chunks:
            who = f"{chunk.app}.{chunk.slot}"
            text = partial.pop(who, "") + chunk.data.decode(errors="replace")
            *lines, rest = text.split("\n")
            if rest:
                partial[who] = rest
            for line in lines:
                print(f"{who:<12}| {line}", flush=True)
    for who, rest in partial.items():
        print(f"{who:<12}| {rest}")


@app.command("exec")
@connected
def exec_(
    target: Annotated[
        str, typer.Argument(metavar="APP[/SLOT]", help="The app, and which replica.")
    ],
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    conn: Connection = CONNECTION,
) -> None:
    """Run a command in a replica (admin only) and exit with its exit code:
    `fleet exec web/0 -- cat /etc/hostname`."""
    app_name, _, slot_text = target.partition("/")
    if slot_text and not slot_text.isdigit():
        fail(f"{target!r}: expected APP or APP/SLOT")
    with conn.client() as client:
        result = client.exec(app_name, command, slot=int(slot_text) if slot_text else -1)
    sys.stdout.buffer.write(result.output)
    sys.stdout.flush()
    raise typer.Exit(result.exit_code)


@app.command()
@connected
def top(
    target: Annotated[str, typer.Argument(metavar="APP|HOST", show_default=False)],
    conn: Connection = CONNECTION,
) -> None:
    """The processes of an app's replicas, or of every fleet container on a host
    (deployers and admins: command lines may hold secrets)."""
    with conn.client() as client:
        is_host = any(h.host_id == target for h in client.hosts())
        entries = client.top(host=target) if is_host else client.top(app=target)
    for entry in entries:
        console.print(f"[bold]{safe(entry.app)}.{entry.slot}[/bold] on {safe(entry.host)}")
        print_records(
            [], Format.table, list(entry.titles), [list(p.fields) for p in entry.processes]
        )


@app.command()
@connected
def cordon(
    host: Annotated[str, typer.Argument(metavar="HOST", show_default=False)],
    conn: Connection = CONNECTION,
) -> None:
    """Take no new replicas on HOST; what runs there stays (admin only)."""
    _set_host_state(conn, host, "cordoned")


@app.command()
@connected
def uncordon(
    host: Annotated[str, typer.Argument(metavar="HOST", show_default=False)],
    conn: Connection = CONNECTION,
) -> None:
    """Let HOST take new replicas again (admin only)."""
    _set_host_state(conn, host, "ready")


def _set_host_state(conn: Connection, host: str, state: str) -> None:
    with conn.client() as client:
        info = client.set_host_state(host, state)
    console.print(safe(f"host/{info.host_id} {info.state}"))


@app.command()
@connected
def scale(
    app_name: Annotated[str, typer.Argument(metavar="APP", show_default=False)],
    replicas: Annotated[int, typer.Argument(metavar="N", min=0, show_default=False)],
    conn: Connection = CONNECTION,
) -> None:
    """Set the number of replicas of APP."""
    with conn.client() as client:
        result = client.scale(app_name, replicas)
    console.print(safe(f"app/{app_name} scaled {result.previous} -> {replicas}"))


@app.command()
@connected
def delete(
    kind: Annotated[str, typer.Argument(help="app", show_default=False)] = "",
    name: Annotated[str, typer.Argument(show_default=False)] = "",
    filename: Annotated[
        Path | None, typer.Option("--filename", "-f", help="Delete the apps in this file.")
    ] = None,
    conn: Connection = CONNECTION,
) -> None:
    """Delete an app (`fleet delete app NAME`) or the apps of a file (`-f FILE`); its
    containers are stopped on every host."""
    if filename is not None:
        names = [s.name for s in _load(filename)]
    elif _kind(kind or "?") == Kind.apps and name:
        names = [name]
    else:
        fail("use `fleet delete app NAME` or `fleet delete -f FILE`")
    with conn.client() as client:
        for app_name in names:
            client.delete_app(app_name)
            console.print(safe(f"app/{app_name} deleted"))


app.add_typer(rollouts.rollout_app, name="rollout")
app.add_typer(rollouts.set_app, name="set")
app.command()(rollouts.endpoints)
app.command()(hosts.drain)
app.command()(rollouts.wait)
app.command("upgrade-hosts")(hosts.upgrade_hosts)
app.command()(hosts.label)
app.add_typer(hosts.hosts_app, name="hosts")


app.add_typer(secrets.app, name="secrets")


policy_app = typer.Typer(
    help="What containers may ask of hosts (privileged, host network/PID, capabilities, "
    "bind mounts). By default: nothing.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")

AllowOpt = Annotated[
    list[str] | None,
    typer.Option("--allow", help="privileged, host-network or host-pid (repeat)."),
]
AllowCapOpt = Annotated[
    list[str] | None, typer.Option("--allow-cap", help="A capability, or ALL (repeat).")
]
AllowBindOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-bind", help="Host path prefix that may be bind-mounted (repeat)."),
]


def _policy(allow: list[str], caps: list[str], binds: list[str]) -> Policy:
    flags = {}
    for word in allow:
        if word not in ALLOW_WORDS:
            fail(f"--allow {word!r}: use one of {', '.join(ALLOW_WORDS)}")
        flags[ALLOW_WORDS[word]] = True
    return Policy(**flags, allow_capabilities=[c.upper() for c in caps], allow_bind_mounts=binds)


def _print_policy(policy: pb.Policy, output: Format) -> None:
    if output in (Format.json, Format.yaml):
        print_records([policy], output, [], [])
        return
    allowed = [w for w, f in ALLOW_WORDS.items() if getattr(policy, f)]
    allowed += [f"capability {c}" for c in policy.allow_capabilities]
    allowed += [f"bind mounts under {p}" for p in policy.allow_bind_mounts]
    what = ", ".join(allowed) or "nothing beyond the default"
    console.print(safe(f"containers may ask for: {what}"))


@policy_app.command("get")
@connected
def policy_get(
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Show the cluster's container policy."""
    with conn.client() as client:
        _print_policy(client.policy(), output)


@policy_app.command("set")
@connected
def policy_set(
    allow: AllowOpt = None,
    allow_cap: AllowCapOpt = None,
    allow_bind: AllowBindOpt = None,
    conn: Connection = CONNECTION,
) -> None:
    """Replace the cluster's container policy (admin only); with no option, back to
    allowing nothing. Agents must allow the same (fleet agent --allow ...)."""
    policy = _policy(allow or [], allow_cap or [], allow_bind or [])
    with conn.client() as client:
        _print_policy(client.set_policy(policy.to_proto()), Format.table)


tokens_app = typer.Typer(
    help="Bearer tokens for the API (for CI and scripts without a client certificate).",
    no_args_is_help=True,
)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("create")
@connected
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what uses it, e.g. ci.")],
    role: Annotated[str, typer.Option("--role", help="admin, deployer or viewer.")] = "viewer",
    conn: Connection = CONNECTION,
) -> None:
    """Create a token (admin only) and print it once: only its hash is kept. Use it with
    --token (or FLEET_TOKEN) against the server's --token-listen address, or as the
    bearer token that scrapes its /metrics."""
    with conn.client() as client:
        made = client.create_token(name, role)
    err_console.print(safe(f"token {made.id} for {name} ({role}); it is shown this once:"))
    print(made.token)


@tokens_app.command("list")
@connected
def tokens_list(conn: Connection = CONNECTION, output: OutputOpt = Format.table) -> None:
    """List tokens: id, name, role (never the secret)."""
    with conn.client() as client:
        found = client.tokens()
    rows = [[t.id, t.name, t.role, t.created_at] for t in found]
    print_records(found, output, ["ID", "NAME", "ROLE", "CREATED"], rows)


@tokens_app.command("delete")
@connected
def tokens_delete(
    token_id: Annotated[str, typer.Argument(metavar="ID")], conn: Connection = CONNECTION
) -> None:
    """Revoke a token at once."""
    with conn.client() as client:
        client.delete_token(token_id)
    console.print(safe(f"token/{token_id} deleted"))


@app.command()
def schema() -> None:
    """Print the JSON Schema of app files (for editors and linters)."""
    print(json.dumps(json_schema(), indent=2))


# ---------------------------------------------------------------------- daemons


LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Libraries speak only when something is wrong, even at --log-level debug.
    for noisy in ("grpc", "urllib3", "docker", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def server(
    etcd: Annotated[
        str, typer.Option("--etcd", help="etcd endpoint(s), HOST:PORT[,HOST:PORT...].")
    ] = "127.0.0.1:2379",
    listen: Annotated[
        str, typer.Option("--listen", help="gRPC listen address.")
    ] = "127.0.0.1:7400",
    prefix: Annotated[str, typer.Option("--prefix", help="etcd key prefix.")] = "/fleet/",
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="CA that signs agents' and clients' certs.")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Server certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Server key.")] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Serve plaintext with no authentication (tests only)."),
    ] = False,
    etcd_cacert: Annotated[Path | None, typer.Option("--etcd-cacert", help="etcd's CA.")] = None,
    etcd_cert: Annotated[
        Path | None, typer.Option("--etcd-cert", help="Client cert for etcd.")
    ] = None,
    etcd_key: Annotated[
        Path | None, typer.Option("--etcd-key", help="Client key for etcd.")
    ] = None,
    etcd_max_txn_ops: Annotated[
        int,
        typer.Option(
            "--etcd-max-txn-ops",
            min=16,
            help="etcd's --max-txn-ops (checked at start): an apply is one transaction, "
            "so at most half as many new apps fit in one.",
        ),
    ] = 128,
    token_listen: Annotated[
        str | None,
        typer.Option(
            "--token-listen",
            help="Also serve clients with bearer tokens (no client certificate) here.",
        ),
    ] = None,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help="Serve Prometheus /metrics here, e.g. :7401: HTTPS with the server's "
            "certificate, to a client certificate or a bearer token (fleet tokens create).",
        ),
    ] = None,
    metrics_insecure: Annotated[
        bool,
        typer.Option(
            "--metrics-insecure",
            help="Serve /metrics over plain HTTP to anyone who reaches it instead.",
        ),
    ] = False,
    reflection: Annotated[
        bool,
        typer.Option("--reflection", help="Serve gRPC server reflection (grpcurl) too."),
    ] = False,
    host_down_after: Annotated[
        str,
        typer.Option("--host-down-after", help="A host silent this long is down (whole seconds)."),
    ] = "15s",
    reschedule_after: Annotated[
        str | None,
        typer.Option(
            "--reschedule-after",
            help="Then, after this long, its replicas are placed elsewhere (default: the same).",
        ),
    ] = None,
    heartbeat_interval: Annotated[
        str,
        typer.Option(
            "--heartbeat-interval", help="How often agents report (their liveness and status)."
        ),
    ] = "2s",
    leader_ttl: Annotated[
        str,
        typer.Option(
            "--leader-ttl",
            help="Run several servers against one etcd: one leads (runs the controllers), "
            "all serve. A dead leader is replaced this long after its last lease renewal.",
        ),
    ] = "4s",
    compact_interval: Annotated[
        str,
        typer.Option(
            "--compact-interval",
            help="The leader compacts etcd's history this often, keeping one interval "
            "of it (0: never, e.g. when etcd auto-compacts).",
        ),
    ] = "5m",
    server_id: Annotated[
        str | None,
        typer.Option(
            "--server-id", help="This replica's name in the election (default: host-pid)."
        ),
    ] = None,
    secrets_key_file: Annotated[
        Path | None,
        typer.Option(
            "--secrets-key-file",
            help="Key that encrypts secrets at rest (32 random bytes, base64); made if missing.",
        ),
    ] = None,
    max_host_cpus: Annotated[
        float | None,
        typer.Option(
            "--max-host-cpus",
            min=0,
            help="The most cores any host is counted for, whatever its agent claims "
            "(default: as claimed). Give every replica the same.",
        ),
    ] = None,
    max_host_memory: Annotated[
        str | None,
        typer.Option(
            "--max-host-memory",
            help="The most memory any host is counted for, e.g. 256Gi (default: as claimed).",
        ),
    ] = None,
    log_level: LogLevel = "info",
) -> None:
    """Run the control plane (API for the CLI, stream for agents) against etcd.

    TLS is required: --tls-ca/--tls-cert/--tls-key (or FLEET_TLS_*), or server-*.crt in
    $FLEET_PKI_DIR; --insecure must be asked for.
    """
    from fleet.controlplane.agents import HostLimits
    from fleet.controlplane.server import ServerConfig, run_server
    from fleet.secrets import ensure_key_file

    _logging(log_level)
    transport = client_transport(
        ca=tls_ca, cert=tls_cert, key=tls_key, insecure=insecure, kind="server", name="controlplane"
    )
    etcd_files = (etcd_cacert, etcd_cert, etcd_key)
    if any(etcd_files) and not all(etcd_files):
        fail("etcd TLS needs all of --etcd-cacert, --etcd-cert and --etcd-key")
    config = ServerConfig(
        etcd=[e for e in etcd.split(",") if e],
        transport=transport,
        etcd_tls=TlsFiles(*etcd_files) if all(etcd_files) else None,  # type: ignore[arg-type]
        listen=listen,
        prefix=prefix,
        secrets_key=ensure_key_file(secrets_key_file) if secrets_key_file else None,
        host_lease_ttl=max(1, round(duration_option("--host-down-after", host_down_after))),
        token_listen=token_listen,
        metrics_listen=metrics_listen,
        metrics_insecure=metrics_insecure,
        reflection=reflection,
        reschedule_after=duration_option("--reschedule-after", reschedule_after)
        if reschedule_after
        else None,
        leader_ttl=max(2, round(duration_option("--leader-ttl", leader_ttl))),
        heartbeat_seconds=max(0.1, duration_option("--heartbeat-interval", heartbeat_interval)),
        compact_interval=duration_option("--compact-interval", compact_interval),
        server_id=server_id or "",
        etcd_max_txn_ops=etcd_max_txn_ops,
        host_limits=HostLimits(
            cpus=max_host_cpus,
            memory=memory_option("--max-host-memory", max_host_memory) if max_host_memory else None,
        ),
    )
    asyncio.run(run_server(config))


def _address_option(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        fail(f"--advertise-address must be an IP address, got {text!r}")


def _default_state_dir(host_id: str) -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/fleet-agent") / host_id
    return Path.home() / ".fleet" / f"agent-{host_id}"


def _labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--label {item!r} must be KEY=VALUE")
        labels[key] = value
    return labels


@app.command()
def agent(
    host_id: Annotated[str, typer.Option("--host-id", help="This host's name in the pool.")],
    server_: Annotated[
        str | None, typer.Option("--server", "-s", help="Control plane address(es).")
    ] = None,
    docker_url: Annotated[
        str | None,
        typer.Option("--docker", help="Docker daemon URL. Default: $DOCKER_HOST or the socket."),
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Host label KEY=VALUE (repeat).")
    ] = None,
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca", help="fleet's CA.")] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="This host's agent certificate.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its key.")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Plaintext to a server started with --insecure.")
    ] = False,
    allow: AllowOpt = None,
    allow_cap: AllowCapOpt = None,
    allow_bind: AllowBindOpt = None,
    cpus: Annotated[
        float | None,
        typer.Option("--cpus", help="Cores this host offers fleet (default: all it has)."),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", help="Memory this host offers fleet, e.g. 6Gi (default: all)."),
    ] = None,
    image_gc_after: Annotated[
        str | None,
        typer.Option(
            "--image-gc-after",
            help="Remove images fleet containers have not used for this long, e.g. 24h "
            "(never one a container uses). Default: keep them.",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Keeps restart counts across agent restarts. Default: "
            "/var/lib/fleet-agent/HOST_ID as root, else ~/.fleet/agent-HOST_ID.",
        ),
    ] = None,
    advertise_address: Annotated[
        str | None,
        typer.Option(
            "--advertise-address",
            help="Where this host's published ports answer (`fleet endpoints`). Default: "
            "its address on the route to the control plane.",
        ),
    ] = None,
    os_release: Annotated[
        Path,
        typer.Option(
            "--os-release", help="The os-release file whose NAME and VERSION_ID it reports."
        ),
    ] = Path("/etc/os-release"),
    allow_host_commands: Annotated[
        bool,
        typer.Option(
            "--allow-host-commands",
            help="Let `fleet upgrade-hosts --command` run its command on this host (as "
            "the agent's user, once per walk).",
        ),
    ] = False,
    log_level: LogLevel = "info",
) -> None:
    """Run the agent for one Docker host: it runs what the control plane places here.

    It authenticates with an agent certificate naming HOST_ID (--tls-*, FLEET_TLS_*, or
    agent-HOST_ID.crt in $FLEET_PKI_DIR).
    """
    from fleet.agent import Agent, AgentConfig, DockerRuntime

    _logging(log_level)
    transport = client_transport(
        ca=tls_ca, cert=tls_cert, key=tls_key, insecure=insecure, kind="agent", name=host_id
    )
    config = AgentConfig(
        servers=servers_from(server_),
        host_id=host_id,
        transport=transport,
        labels=_labels(label or []),
        policy=_policy(allow or [], allow_cap or [], allow_bind or []),
        state_dir=state_dir or _default_state_dir(host_id),
        cpus=cpus,
        memory=memory_option("--memory", memory) if memory else None,
        image_gc_after=duration_option("--image-gc-after", image_gc_after)
        if image_gc_after
        else None,
        address=_address_option(advertise_address) if advertise_address else "",
        os_release=os_release,
        allow_host_commands=allow_host_commands,
    )
    asyncio.run(Agent(config, DockerRuntime(docker_url)).run())


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where etcd keeps its data.")] = Path(
        ".fleet"
    ),
    listen: Annotated[
        str, typer.Option("--listen", help="Control plane address.")
    ] = "127.0.0.1:7400",
    etcd_port: Annotated[int, typer.Option("--etcd-port", help="etcd client port.")] = 7479,
    host_id: Annotated[str | None, typer.Option("--host-id", help="This host's id.")] = None,
    docker_url: Annotated[str | None, typer.Option("--docker", help="Docker daemon URL.")] = None,
    log_level: LogLevel = "info",
) -> None:
    """Run fleet on this one machine: etcd, the control plane and an agent, in the
    foreground (Ctrl-C stops all three). A later `fleet up` finds the same apps."""
    from fleet.up import UpConfig, run_up

    _logging(log_level)
    config = UpConfig(
        data_dir=data_dir,
        listen=listen,
        etcd_port=etcd_port,
        host_id=host_id,
        docker_url=docker_url,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_up(config))


def main() -> None:
    """Entry point: fleet errors become one clear line and an exit status."""
    try:
        app()
    except (SpecError, PolicyDenied) as error:
        # An app file's problems, and the fields the cluster policy refuses, each at its line.
        for problem in error.problems:
            print_error(str(problem))
        sys.exit(2)
    except FleetError as error:
        print_error(str(error))
        sys.exit(1)
