"""Watching what runs: ``ps``, ``events``, ``stats``, ``logs``, ``top``, and ``exec`` to
run a command in a replica.

All but ``exec`` only read; ``exec -i``/``-it`` streams input, with a terminal
(``fleet.cli.terminal``). ``ps`` prints the containers table of ``fleet.cli.tables``;
the others print what they are sent as it comes.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Annotated

import typer
import yaml
from rich.live import Live
from rich.table import Table

from fleet.cli.completion import complete_apps
from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.options import duration_option
from fleet.cli.output import (
    Format,
    ListFormat,
    ListOutputOpt,
    NoHeadersOpt,
    OutputOpt,
    View,
    console,
    fail,
    human_memory,
    print_records,
    print_table,
    safe,
    to_dict,
)
from fleet.cli.selectors import SelectorOpt, parse_selector, select_containers
from fleet.cli.tables import print_containers
from fleet.cli.terminal import run_session
from fleet.cli.watching import WatchOpt, run_listing, show_selected
from fleet.proto import fleet_pb2 as pb

__all__ = ["events", "exec_", "logs", "ps", "stats", "top"]


@connected
def ps(
    app_name: Annotated[
        str, typer.Argument(metavar="APP", help="Only this app.", autocompletion=complete_apps)
    ] = "",
    host: Annotated[str, typer.Option("--host", help="Only this host.")] = "",
    selector: SelectorOpt = "",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only container ids (as docker ps -q).")
    ] = False,
    watch: WatchOpt = False,
    no_headers: NoHeadersOpt = False,
    conn: Connection = CONNECTION,
    output: ListOutputOpt = ListFormat.table,
) -> None:
    """List the containers of every app (or one), with their host, state and ports.
    -l selects by the apps' labels.

    Examples:
      fleet ps
      fleet ps web -o wide
      fleet ps -l team=web -w
      fleet ps -q --host h1"""
    chosen = parse_selector(selector)
    view = View(no_headers=no_headers, watch=watch)
    with conn.client() as client:

        def show(view: View) -> None:
            found = select_containers(client, chosen, app=app_name, host=host)
            if quiet:  # ids only: what `docker ps -q` gives a script (none yet: not listed)
                ids = [c.status.container_id[:12] for c in found if c.status.container_id]
                fresh = [i for i in ids if i not in view.seen]
                view.seen.update((i, ()) for i in ids)
                for container_id in fresh:
                    print(container_id, flush=True)
                view.started = True
            else:
                show_selected(found, chosen, output, view, print_containers)

        run_listing(show, view)


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
    with a count (shown as xN). -o json prints one object per line.

    Examples:
      fleet events --app web --since 10m
      fleet events -f -o json | jq .kind"""
    seconds = duration_option("--since", since) if since else 0.0
    header = output not in (Format.json, Format.yaml)
    with conn.client() as client:
        for event in client.events(
            app=app_name, host=host, since_seconds=seconds, follow=follow, limit=limit
        ):
            if header:  # above the first event (with none, nothing: as kubectl's "No resources")
                console.print(
                    f"[bold]{'TIME':<24}  {'HOST':<12} {'REPLICA':<16} {'KIND':<18} MESSAGE[/bold]",
                    soft_wrap=True,
                )
                header = False
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
            f"{human_memory(c.status.memory_bytes)} / {human_memory(limit) if limit else '-'}",
            share,
        )
    return table


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
    (sampled by the agents every few seconds). Ctrl-C stops the refresh.

    Examples:
      fleet stats
      fleet stats web"""
    with conn.client() as client:
        if no_stream or output in (Format.json, Format.yaml):
            found = client.containers(app=app_name, host=host)
            if output in (Format.json, Format.yaml):
                print_records([c for c in found if c.status.state == "running"], output, [], [])
            else:
                print_table(_stats_table(found))
            return
        with contextlib.suppress(KeyboardInterrupt), Live(console=console) as live:
            while True:
                live.update(_stats_table(client.containers(app=app_name, host=host)))
                time.sleep(2)  # the agents sample every few seconds: no use asking faster


@connected
def logs(
    target: Annotated[
        str,
        typer.Argument(
            metavar="APP[/SLOT]",
            help="The app, or one replica of it.",
            show_default=False,
            autocompletion=complete_apps,
        ),
    ],
    slot: Annotated[int, typer.Option("--slot", help="Only this replica (as APP/SLOT).")] = -1,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    tail: Annotated[int, typer.Option("--tail", help="Lines from the end (-1: all).")] = -1,
    timestamps: Annotated[bool, typer.Option("--timestamps", "-t")] = False,
    since: Annotated[
        str,
        typer.Option(
            "--since", help="Only lines newer than this, e.g. 10m, 1h.", show_default=False
        ),
    ] = "",
    previous: Annotated[
        bool,
        typer.Option(
            "--previous",
            "-p",
            help="The replica's last exited container (one that crashed, or stopped), "
            "not the running one.",
        ),
    ] = False,
    conn: Connection = CONNECTION,
) -> None:
    """Print the replicas' logs, each line prefixed with its replica (like docker compose).

    Examples:
      fleet logs web --tail 20
      fleet logs web/2 -f
      fleet logs web --since 10m
      fleet logs web/0 --previous"""
    seconds = duration_option("--since", since) if since else 0.0
    app_name, _, slot_text = target.partition("/")
    if slot_text and not slot_text.isdigit():
        fail(f"{target!r}: expected APP or APP/SLOT")
    if slot_text and slot >= 0 and int(slot_text) != slot:
        fail(f"{target!r} and --slot {slot} name different replicas")
    chosen = int(slot_text) if slot_text else slot
    partial: dict[str, str] = {}
    with conn.client() as client:
        chunks = client.logs(
            app_name,
            slot=chosen,
            follow=follow,
            tail=tail,
            timestamps=timestamps,
            since_seconds=seconds,
            previous=previous,
        )
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


@connected
def exec_(
    target: Annotated[
        str, typer.Argument(metavar="APP[/SLOT]", help="The app, and which replica.")
    ],
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive", "-i", help="Stream this terminal's input to the command (stdin)."
        ),
    ] = False,
    tty: Annotated[
        bool,
        typer.Option(
            "--tty",
            "-t",
            help="Give the command a terminal; with -i this one goes raw, so Ctrl-C and "
            "every other key reach the command, and its size follows this one's.",
        ),
    ] = False,
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout",
            help="Hang the command up (SIGHUP) after this long and exit 124, as "
            "timeout(1) does. Default: none; the command runs as long as it runs.",
            show_default=False,
        ),
    ] = "",
    conn: Connection = CONNECTION,
) -> None:
    """Run a command in a replica (admin only) and exit with its exit code; its output
    comes as it is written, stdout to stdout and stderr to stderr. -i streams this
    terminal's input to it, -t gives it a terminal.

    Examples:
      fleet exec web/0 -- cat /etc/hostname
      fleet exec --timeout 1m web -- tail -f /var/log/app.log
      tar c conf/ | fleet exec -i web/0 -- tar x -C /tmp
      fleet exec -it web -- sh"""
    app_name, _, slot_text = target.partition("/")
    if slot_text and not slot_text.isdigit():
        fail(f"{target!r}: expected APP or APP/SLOT")
    slot = int(slot_text) if slot_text else -1
    limit = duration_option("--timeout", timeout) if timeout else None
    start = pb.ExecStart(app=app_name, slot=slot, command=command, tty=tty, stdin=interactive)
    with conn.client() as client:
        raise typer.Exit(run_session(client, start, timeout=limit))


@connected
def top(
    target: Annotated[str, typer.Argument(metavar="APP|HOST", show_default=False)],
    conn: Connection = CONNECTION,
) -> None:
    """The processes of an app's replicas, or of every fleet container on a host
    (deployers and admins: command lines may hold secrets).

    Examples:
      fleet top web
      fleet top h1"""
    with conn.client() as client:
        is_host = any(h.host_id == target for h in client.hosts())
        entries = client.top(host=target) if is_host else client.top(app=target)
    for entry in entries:
        console.print(f"[bold]{safe(entry.app)}.{entry.slot}[/bold] on {safe(entry.host)}")
        print_records(
            [], Format.table, list(entry.titles), [list(p.fields) for p in entry.processes]
        )
