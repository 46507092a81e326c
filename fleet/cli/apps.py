"""The app commands: ``apply``, ``diff``, ``delete`` and ``scale`` change what the
control plane stores; ``get`` and ``describe`` show apps, jobs, hosts and containers;
``schema`` prints the app file's JSON Schema.

``apply --wait`` follows its rollouts with ``fleet.cli.rollouts``; the tables ``get``
and ``describe`` print are in ``fleet.cli.tables``.
"""

from __future__ import annotations

import difflib
import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from fleet.cli import compose
from fleet.cli.completion import complete_apps, complete_names
from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.describing import (
    RECENT_EVENTS,
    describe_document,
    print_drain_blockers,
    print_recent_events,
    print_rollout,
)
from fleet.cli.options import duration_option
from fleet.cli.output import (
    Format,
    ListFormat,
    ListOutputOpt,
    NoHeadersOpt,
    OutputOpt,
    View,
    console,
    err_console,
    exit_with,
    fail,
    human_memory,
    print_error,
    print_one,
    print_records,
    safe,
)
from fleet.cli.rollouts import (
    EXIT_COMPLETE,
    EXIT_FAILED,
    TimeoutOpt,
    WaitOpt,
    follow_changes,
)
from fleet.cli.selectors import (
    SelectorOpt,
    parse_selector,
    select_apps,
    select_containers,
    select_hosts,
    selected_app_names,
)
from fleet.cli.tables import (
    capped_claim,
    edge_listen,
    ingress_backends,
    ingress_text,
    print_apps,
    print_containers,
    print_hosts,
    print_jobs,
)
from fleet.cli.watching import WatchOpt, run_listing, show_selected
from fleet.client import FleetClient
from fleet.errors import NotFound, PolicyDenied, SpecError
from fleet.hostlabels import AGENT_PREFIX
from fleet.proto import fleet_pb2 as pb
from fleet.spec import DEFAULT_LOGGING, AppFile, AppSpec, json_schema, load_file

__all__ = ["apply", "delete", "describe", "diff", "get", "scale", "schema"]


FileOpt = Annotated[
    Path,
    typer.Option(
        "--filename",
        "-f",
        metavar="FILE",
        help="App file (YAML, one or more documents; - for stdin).",
    ),
]


def _load(path: Path) -> list[AppSpec]:
    return load_file(str(path))


@connected
def apply(
    filename: FileOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change and where; store nothing.")
    ] = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = "10m",
    ignore_unsupported: compose.IgnoreOpt = False,
    project_name: compose.ProjectOpt = None,
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Create or update the apps in FILE (declarative: re-applying changes nothing).

    FILE may be a compose file: each service becomes an app (see fleet convert); its
    missing secrets are stored from their files, scoped to the apps that use them.

    Examples:
      fleet apply -f app.yaml
      fleet apply -f app.yaml --dry-run     # what would change, and where
      fleet apply -f app.yaml --wait        # then follow the rollout"""
    seconds = duration_option("--timeout", timeout)
    conversion = None
    if compose.is_compose_file(filename):
        conversion = compose.load(filename, project_name, ignore_unsupported)
        loaded = conversion.app_file()
    else:
        loaded = AppFile.read(filename)
    specs = loaded.specs
    with conn.client() as client:
        if conversion is not None:
            compose.guard_project(client, conversion)
            unstored = compose.store_secrets(client, conversion, dry_run)
            specs = compose.without_secrets(specs, unstored)
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


@connected
def diff(
    filename: FileOpt,
    ignore_unsupported: compose.IgnoreOpt = False,
    project_name: compose.ProjectOpt = None,
    conn: Connection = CONNECTION,
) -> None:
    """Show how FILE differs from what the control plane stores (exit 1 if it differs).

    FILE may be a compose file, as for apply.

    Examples:
      fleet diff -f app.yaml && echo unchanged"""
    if compose.is_compose_file(filename):
        specs = compose.load(filename, project_name, ignore_unsupported).specs
    else:
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


@connected
def get(
    kind: Annotated[
        str,
        typer.Argument(
            help="apps, hosts, containers or jobs.",
            show_default=False,
            autocompletion=lambda incomplete: [k for k in Kind if k.startswith(incomplete)],
        ),
    ],
    name: Annotated[str, typer.Argument(help="Only this one.", autocompletion=complete_names)] = "",
    selector: SelectorOpt = "",
    watch: WatchOpt = False,
    no_headers: NoHeadersOpt = False,
    conn: Connection = CONNECTION,
    output: ListOutputOpt = ListFormat.table,
) -> None:
    """List apps, hosts, containers or jobs. With NAME and -o json or yaml, an app, job
    or host is one object (as `kubectl get pod NAME -o json`); containers stay a list
    (NAME is their app). -l selects by labels: an app's own (containers: their app's),
    a host's as constraints see them (admin labels, agent.KEY, facts).

    Examples:
      fleet get apps
      fleet get apps -l team=web -o name
      fleet get hosts -o wide
      fleet get app web -o json | jq .available
      fleet get containers web -w"""
    which = _kind(kind)
    chosen = parse_selector(selector)
    view = View(no_headers=no_headers, watch=watch)
    one = name and output in (ListFormat.json, ListFormat.yaml) and which != Kind.containers
    if one and (watch or chosen):
        fail("-w and -l list several: drop NAME, or -o json|yaml for a table")
    with conn.client() as client:
        if one and which == Kind.hosts:
            print_one(client.hosts(name)[0], Format(output.value))
            return
        if one:
            [app] = client.apps(name)
            if which == Kind.jobs and app.mode != "job":
                fail(f"app {name!r} is not a job (its mode is {app.mode})")
            print_one(app, Format(output.value))
            return

        def show(view: View) -> None:
            if which == Kind.apps:
                apps = select_apps(client.apps(name), chosen)
                show_selected(apps, chosen, output, view, print_apps)
            elif which == Kind.jobs:
                jobs = [a for a in select_apps(client.apps(name), chosen) if a.mode == "job"]
                show_selected(jobs, chosen, output, view, print_jobs)
            elif which == Kind.hosts:
                listing = client.host_list(name)
                hosts = select_hosts(list(listing.hosts), chosen)
                show_selected(hosts, chosen, output, view, print_hosts)
                warning = listing.moves_held
                if (
                    warning
                    and warning != view.warned
                    and output in (ListFormat.table, ListFormat.wide)
                ):
                    # (stderr: the table stays the table, for scripts that read it)
                    err_console.print(safe(f"warning: {warning}"), soft_wrap=True)
                view.warned = warning
            else:
                containers = select_containers(client, chosen, app=name)
                show_selected(containers, chosen, output, view, print_containers)

        run_listing(show, view)


@connected
def describe(
    kind: Annotated[str, typer.Argument(help="app or host.", show_default=False)],
    name: Annotated[
        str, typer.Argument(help="Its name.", show_default=False, autocompletion=complete_names)
    ],
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Show one app (spec, replicas, why any are pending, its rollout, recent events)
    or one host (what runs there, what blocks its drain, recent events) in detail.
    -o json|yaml prints it as one object.

    Examples:
      fleet describe app web
      fleet describe host h1
      fleet describe app web -o json | jq .rollout.state"""
    which = _kind(kind)
    document = output in (Format.json, Format.yaml)
    with conn.client() as client:
        if which == Kind.apps:
            if document:
                info = client.apps(name)[0]
                describe_document(
                    output,
                    app=info,
                    # A job is not rolled out: null.
                    rollout=client.rollout_status(name) if info.mode != "job" else None,
                    containers=client.containers(app=name),
                    events=list(client.events(app=name, limit=RECENT_EVENTS)),
                )
            else:
                _describe_app(client, name)
        elif which == Kind.hosts:
            if document:
                describe_document(
                    output,
                    host=client.hosts(name)[0],
                    containers=client.containers(host=name),
                    events=list(client.events(host=name, limit=RECENT_EVENTS)),
                )
            else:
                _describe_host(client, name)
        else:
            fail("describe takes app or host")


def _describe_app(client: FleetClient, name: str) -> None:
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
    if info.mode != "job":
        print_rollout(client.rollout_status(name))
    print(yaml.safe_dump(spec, sort_keys=False), end="")
    if "logging" not in spec:  # what the agent sets (new containers; running ones keep theirs)
        options = ", ".join(f"{k} {v}" for k, v in DEFAULT_LOGGING.options.items())
        console.print(safe(f"logging: {DEFAULT_LOGGING.driver}, {options} (fleet's default)"))
    if info.pending:
        console.print("[bold]pending[/bold]")
        for p in info.pending:
            console.print(safe(f"  {info.name}.{p.slot}: {p.reason}"))
    containers = client.containers(app=name)
    if spec.get("ingress"):
        _describe_ingress(client, spec, containers)
    console.print("[bold]containers[/bold]")
    print_containers(containers, Format.table)
    print_recent_events(list(client.events(app=name, limit=RECENT_EVENTS)))


def _describe_ingress(
    client: FleetClient, spec: dict[str, object], containers: list[pb.ContainerInfo]
) -> None:
    """The app's route through the edges and its backends there."""
    console.print("[bold]ingress[/bold] " + safe(ingress_text(spec)), soft_wrap=True)
    hosts = client.hosts()
    addresses = {h.host_id: h.address for h in hosts}
    # Every connected edge is pushed every app's route: those serve it now.
    edges = sorted(
        f"{h.host_id} at {edge_listen(h.ingress, spec)}" for h in hosts if h.ingress and h.connected
    )
    if edges:
        console.print(safe(f"  served by edges: {', '.join(edges)}"), soft_wrap=True)
    else:
        console.print(
            "  served by no edge: none is connected (fleet agent --ingress ADDR:PORT on a host)"
        )
    endpoints = client.endpoints(str(spec["name"]))
    rows = ingress_backends(spec, endpoints, containers, addresses)
    if not rows:
        console.print("  no backends: no container is available yet")
    print_records([], Format.table, ["BACKEND", "ADDRESS", "STATE"], rows)


def _describe_host(client: FleetClient, name: str) -> None:
    host = client.hosts(name)[0]
    print_hosts([host], ListFormat.wide)
    admin = ", ".join(f"{k}={v}" for k, v in sorted(host.labels.items())) or "-"
    console.print(safe(f"labels (set by admins, `fleet label host`): {admin}"))
    claimed = ", ".join(f"{AGENT_PREFIX}{k}={v}" for k, v in sorted(host.agent_labels.items()))
    console.print(safe(f"labels its agent claims (--label): {claimed or '-'}"))
    serial = host.cert_serial or "- (none: a plaintext control plane)"
    until = f", expires {host.cert_expires}" if host.cert_expires else ""
    console.print(
        safe(f"certificate serial (its agent's, last registration): {serial}{until}"),
        soft_wrap=True,
    )
    if host.past_serials:
        earlier = ", ".join(host.past_serials)
        console.print(
            safe(f"earlier certificates (`fleet hosts revoke-cert` denies one): {earlier}"),
            soft_wrap=True,
        )
    if host.maintenance:
        # Who holds its slot of the maintenance semaphore: fleet drain, upgrade-hosts,
        # or FleetLock (Zincati's reboot lock: `fleet hosts release` if it never returns).
        console.print(safe(f"maintenance slot: held by {host.maintenance}"), soft_wrap=True)
    if capped_claim(host):
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
    print_drain_blockers(host)
    console.print("[bold]containers[/bold]")
    print_containers(client.containers(host=name), Format.table)
    print_recent_events(list(client.events(host=name, limit=RECENT_EVENTS)))


@connected
def scale(
    args: Annotated[
        list[str],
        typer.Argument(metavar="[APP...] N", show_default=False, autocompletion=complete_apps),
    ],
    selector: SelectorOpt = "",
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Then wait until exactly N replicas run and are available (exit 1 if "
            "--timeout passes first, saying why the rest are not).",
        ),
    ] = False,
    timeout: TimeoutOpt = "5m",
    conn: Connection = CONNECTION,
) -> None:
    """Set the number of replicas of each APP (or of the apps -l selects).

    Examples:
      fleet scale web 5
      fleet scale -l team=web 2
      fleet scale web 0 --wait        # every replica stopped before it returns"""
    *names, count = args
    if not count.isdigit():
        fail(f"N must be a number of replicas (0 or more), not {count!r}: fleet scale APP N")
    replicas = int(count)
    chosen = parse_selector(selector)
    if bool(names) == bool(chosen):
        fail("name the apps to scale, or select them with -l (not both)")
    limit = duration_option("--timeout", timeout)
    with conn.client() as client:
        if chosen:
            names = sorted(selected_app_names(client.apps(), chosen))
            if not names:
                print_error(f"no app matches -l {chosen}")
                raise typer.Exit(1)
        for app_name in dict.fromkeys(names):
            result = client.scale(app_name, replicas)
            console.print(safe(f"app/{app_name} scaled {result.previous} -> {replicas}"))
        if wait:
            # One deadline for all: each app's wait takes what is left of it.
            ends = time.monotonic() + limit
            for app_name in dict.fromkeys(names):
                left = max(0.0, ends - time.monotonic())
                exit_with(wait_for_scale(client, app_name, replicas, left))


def wait_for_scale(
    client: FleetClient, app: str, replicas: int, timeout: float, interval: float = 0.5
) -> int:
    """Poll until ``app`` runs exactly ``replicas``, all available (0, or 1 when
    ``timeout`` seconds pass first, saying why)."""
    ends = time.monotonic() + timeout
    said = ""
    while True:
        [info] = client.apps(app)
        # Every container its hosts run, those leaving too: scaled down, a replica is no
        # longer desired at once, but runs until its agent has stopped it.
        running = sum(1 for c in client.containers(app=app) if c.status.state == "running")
        line = f"app/{app}: {running} running, {info.available} available of {replicas}"
        if line != said:
            err_console.print(safe(line))
            said = line
        if running == replicas and info.available == replicas and info.placed == replicas:
            console.print(safe(f"app/{app}: {replicas} replica(s) available"))
            return EXIT_COMPLETE
        if time.monotonic() > ends:
            why = f": {info.message}" if info.message else ""
            print_error(f"app/{app} not at {replicas} available replicas in time{why}")
            return EXIT_FAILED
        time.sleep(interval)  # polled, as `rollout status` is, within the deadline


@connected
def delete(
    kind: Annotated[
        str, typer.Argument(help="app (apps are what fleet deletes).", show_default=False)
    ] = "",
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME...", show_default=False, autocompletion=complete_names),
    ] = None,
    filename: Annotated[
        Path | None, typer.Option("--filename", "-f", help="Delete the apps in this file.")
    ] = None,
    ignore_not_found: Annotated[
        bool,
        typer.Option(
            "--ignore-not-found",
            help="An app that does not exist is no error (exit 0 if the rest went).",
        ),
    ] = False,
    selector: SelectorOpt = "",
    conn: Connection = CONNECTION,
) -> None:
    """Delete apps (`fleet delete app NAME...`, or those -l selects) or the apps of a
    file (`-f FILE`); their containers are stopped on every host. Every name is tried:
    a missing one is said and makes the exit status 1, unless --ignore-not-found (a
    file's missing apps are always skipped, as `kubectl delete -f` does with
    --ignore-not-found).

    Examples:
      fleet delete app web worker
      fleet delete app -l team=web
      fleet delete -f app.yaml
      fleet delete app web --ignore-not-found"""
    selected = parse_selector(selector)
    if filename is not None:
        chosen = [s.name for s in _load(filename)]
        ignore_not_found = True
    elif _kind(kind or "?") == Kind.apps and (names or selected):
        chosen = list(dict.fromkeys(names or []))
    else:
        fail(
            "use `fleet delete app NAME...`, `fleet delete app -l KEY=VALUE` or "
            "`fleet delete -f FILE`"
        )
    missing = 0
    with conn.client() as client:
        if selected:
            found = sorted(selected_app_names(client.apps(), selected))
            if not found:
                print_error(f"no app matches -l {selected}")
                raise typer.Exit(1)
            chosen += [name for name in found if name not in chosen]
        for app_name in chosen:
            try:
                client.delete_app(app_name)
            except NotFound as error:
                if ignore_not_found:
                    console.print(safe(f"app/{app_name} not found (ignored)"))
                    continue
                print_error(str(error))
                missing += 1
                continue
            console.print(safe(f"app/{app_name} deleted"))
    if missing:
        raise typer.Exit(1)


def schema() -> None:
    """Print the JSON Schema of app files (for editors and linters)."""
    print(json.dumps(json_schema(), indent=2))
