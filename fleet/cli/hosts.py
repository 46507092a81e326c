"""The host commands: ``fleet cordon``, ``uncordon``, ``drain`` and ``upgrade-hosts``
take hosts out for maintenance and back; ``fleet label host``: the labels admins give
hosts; ``fleet hosts remove``: take one out of the pool for good.

Drains and upgrade walks run in the control plane and live in etcd; these commands
start them and, if asked, poll until they are done. ``fleet get hosts`` and
``describe host`` are with the other listings (``fleet.cli.apps``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Annotated, Protocol

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from fleet._time import epoch
from fleet.cli.completion import complete_hosts
from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.jointokens import token_app
from fleet.cli.options import duration_option
from fleet.cli.output import (
    Format,
    OutputOpt,
    console,
    err_console,
    exit_with,
    fail,
    print_error,
    print_one,
    safe,
)
from fleet.cli.selectors import SelectorOpt, parse_selector, select_hosts
from fleet.client import FleetClient
from fleet.errors import InvalidArgument
from fleet.hostlabels import AGENT_PREFIX
from fleet.proto import fleet_pb2 as pb

__all__ = [
    "cordon",
    "drain",
    "follow_upgrade",
    "hosts_app",
    "label",
    "label_changes",
    "removed_lines",
    "uncordon",
    "upgrade_hosts",
    "wait_for_drain",
]

POLL_INTERVAL = 0.5
# A drain of a host's few replicas is over in seconds now that they all move at once;
# asking for one host's record is cheap, so --wait returns soon after it is drained.
DRAIN_POLL_INTERVAL = 0.2

HostArg = Annotated[str, typer.Argument(metavar="HOST", help="The host.", show_default=False)]


# ---------------------------------------------------------------------- cordon


# cordon's and uncordon's HOST (none with -l) has no help line in --help, unlike
# HostArg's.
OptionalHostArg = Annotated[
    str, typer.Argument(metavar="[HOST]", show_default=False, autocompletion=complete_hosts)
]


def _chosen_hosts(client: FleetClient, host: str, selector: str) -> list[str]:
    """HOST, or the hosts ``selector`` matches (exit 1 when none does)."""
    chosen = parse_selector(selector)
    if bool(host) == bool(chosen):
        fail("name a HOST, or select hosts with -l KEY=VALUE (not both)")
    if not chosen:
        return [host]
    found = [h.host_id for h in select_hosts(client.hosts(), chosen)]
    if not found:
        print_error(f"no host matches -l {chosen}")
        raise typer.Exit(1)
    return found


@connected
def cordon(
    host: OptionalHostArg = "", selector: SelectorOpt = "", conn: Connection = CONNECTION
) -> None:
    """Take no new replicas on HOST (or the hosts -l selects); what runs there stays
    (admin only).

    Examples:
      fleet cordon h1        # no new replicas on h1; those there stay
      fleet cordon -l rack=r2"""
    _set_host_state(conn, host, "cordoned", selector)


@connected
def uncordon(
    host: OptionalHostArg = "", selector: SelectorOpt = "", conn: Connection = CONNECTION
) -> None:
    """Let HOST (or the hosts -l selects) take new replicas again (admin only).

    Examples:
      fleet uncordon h1
      fleet uncordon -l rack=r2"""
    _set_host_state(conn, host, "ready", selector)


def _set_host_state(conn: Connection, host: str, state: str, selector: str = "") -> None:
    with conn.client() as client:
        for host_id in _chosen_hosts(client, host, selector):
            info = client.set_host_state(host_id, state)
            console.print(safe(f"host/{info.host_id} {info.state}"))


# ---------------------------------------------------------------------- drain


def _blocked_lines(info: pb.HostInfo) -> list[str]:
    return [f"{b.app}.{b.slot} cannot move: {b.reason}" for b in info.blocked]


class HostSource(Protocol):
    def hosts(self, name: str = "") -> list[pb.HostInfo]: ...


def wait_for_drain(
    client: HostSource, host: str, timeout: float, *, poll_interval: float = DRAIN_POLL_INTERVAL
) -> int:
    """Poll ``host`` until it is drained (0), its drain ends otherwise or its deadline
    passes unforced (1), or ``timeout`` seconds pass (1)."""
    hosts = client.hosts
    ends = time.monotonic() + timeout
    start: int | None = None
    last_said: list[str] = []
    progress = Progress(
        TextColumn("host/{task.fields[host]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("moved"),
        transient=True,
        disable=not sys.stderr.isatty(),
        console=err_console,
    )
    with progress:
        task = progress.add_task("drain", total=None, host=safe(host))
        while True:
            [info] = hosts(host)
            if start is None:
                start = max(info.remaining, 1)
                progress.update(task, total=start)
            progress.update(task, completed=max(0, start - info.remaining))
            said = _blocked_lines(info)
            if said != last_said:
                for line in said:
                    err_console.print(safe(f"host/{host}: {line}"), soft_wrap=True)
                last_said = said
            if info.state == "drained":
                return 0
            if info.state not in ("draining", "down"):
                print_error(f"host/{host} is {info.state}: the drain ended")
                return 1
            deadline = epoch(info.drain_deadline) if info.drain_deadline else None
            if deadline is not None and time.time() > deadline and not info.drain_force:
                print_error(
                    f"host/{host}: the deadline passed with {info.remaining} "
                    "replica(s) left; they stay until they can move (or drain again with --force)"
                )
                return 1
            if time.monotonic() > ends:
                print_error(
                    f"host/{host}: still draining after the --timeout, "
                    f"{info.remaining} replica(s) left"
                )
                return 1
            time.sleep(poll_interval)


@connected
def drain(
    host: Annotated[
        str,
        typer.Argument(
            metavar="[HOST]",
            help="The host (or -l).",
            show_default=False,
            autocompletion=complete_hosts,
        ),
    ] = "",
    selector: SelectorOpt = "",
    deadline: Annotated[
        str | None,
        typer.Option(
            "--deadline",
            help="How long replicas may take to move, e.g. 10m. Past it, --force stops "
            "what is left; without --force the drain goes on and --wait fails.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="At the deadline (at once, without one), stop the replicas that could "
            "not move, even below their app's min_available.",
        ),
    ] = False,
    include_global: Annotated[
        bool, typer.Option("--include-global", help="Stop global apps' replicas too.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the drain until the host is drained.")
    ] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", help="With --wait: give up after this long.")
    ] = "30m",
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Empty HOST for maintenance: cordon it, then move every replica elsewhere,
    make-before-break (the replacement is available before the old one stops),
    never taking an app below its min_available. It takes a slot of the cluster's
    maintenance semaphore; `fleet uncordon HOST` ends it and gives the slot back.

    Examples:
      fleet drain h1 --wait
      fleet drain -l rack=r2 --wait
      fleet drain h1 --deadline 30m --wait"""
    seconds = duration_option("--deadline", deadline) if deadline else 0.0
    limit = duration_option("--timeout", timeout)
    structured = output in (Format.json, Format.yaml)
    code = 0
    with conn.client() as client:
        # Several hosts (-l) are drained one after another, each waited for with --wait:
        # as many at once as the maintenance semaphore lets through would be a walk
        # (`fleet upgrade-hosts`).
        for host_id in _chosen_hosts(client, host, selector):
            info = client.drain_host(
                host_id, deadline=seconds, force=force, include_global=include_global
            )
            if structured:
                print_one(info, output)
            else:
                console.print(
                    safe(f"host/{host_id} {info.state}: {info.remaining} replica(s) to move")
                )
            if not wait:
                continue
            code = wait_for_drain(client, host_id, limit)
            if code:
                break  # the next host would take another maintenance slot: stop here
            if not structured:
                console.print(safe(f"host/{host_id} drained"))
    exit_with(code)


# ---------------------------------------------------------------------- labels


def label_changes(items: list[str]) -> tuple[dict[str, str], list[str]]:
    """(labels to set, keys to remove) from ``KEY=VALUE`` and ``KEY-`` arguments;
    InvalidArgument for anything else."""
    put: dict[str, str] = {}
    remove: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key:
            put[key] = value
        elif not sep and len(item) > 1 and item.endswith("-"):
            remove.append(item[:-1])
        else:
            raise InvalidArgument(
                f"{item!r}: expected KEY=VALUE to set a label, KEY- to remove one"
            )
    return put, remove


def _shown(labels: Mapping[str, str], prefix: str = "") -> str:
    return ",".join(f"{prefix}{k}={v}" for k, v in sorted(labels.items())) or "-"


@connected
def label(
    kind: Annotated[str, typer.Argument(metavar="host", help="What to label: host.")],
    host: HostArg,
    changes: Annotated[
        list[str],
        typer.Argument(
            metavar="KEY=VALUE|KEY-...",
            help="Labels to set (KEY=VALUE) and to remove (KEY-).",
            show_default=False,
        ),
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Change labels that have another value.")
    ] = False,
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Set or remove the labels of HOST that constraints match by name (admin only),
    as kubectl label does: `fleet label host h1 tier=secure disk-`. These are the only
    labels a host cannot give itself: what its agent claims (`fleet agent --label k=v`)
    is matched as agent.k.

    Examples:
      fleet label host h1 zone=a
      fleet label host h1 zone-     # remove it"""
    if kind not in ("host", "hosts"):
        fail(f"fleet label takes host, not {kind!r}: fleet label host HOST KEY=VALUE")
    try:
        put, remove = label_changes(changes)
    except InvalidArgument as error:
        fail(str(error))
    with conn.client() as client:
        info = client.label_host(host, put, remove, overwrite=overwrite)
    if output in (Format.json, Format.yaml):
        print_one(info, output)
        return
    console.print(
        safe(
            f"host/{info.host_id} labeled: {_shown(info.labels)} "
            f"(its agent claims {_shown(info.agent_labels, AGENT_PREFIX)})"
        ),
        soft_wrap=True,
    )


# ---------------------------------------------------------------------- upgrade walks


class UpgradeSource(Protocol):
    def upgrade(self) -> pb.UpgradeInfo: ...


def _print_walk(walk: pb.UpgradeInfo) -> None:
    console.print(
        safe(
            f"upgrade {walk.id}: {walk.state}, at most {walk.max_parallel} host(s) at a time"
            + (f", running `{walk.command}`" if walk.command else ", upgraded by hand")
        )
    )
    for h in walk.hosts:
        console.print(safe(f"  {h.host_id:<16} {h.phase:<10} {h.message}"), soft_wrap=True)


def follow_upgrade(
    client: UpgradeSource, timeout: float, *, poll_interval: float = POLL_INTERVAL
) -> int:
    """Print each host's phase as it changes until the walk is done (0; 1 if a host
    failed), stopped (1) or ``timeout`` passes (1)."""
    ends = time.monotonic() + timeout
    seen: dict[str, tuple[str, str]] = {}
    while True:
        walk = client.upgrade()
        for h in walk.hosts:
            if seen.get(h.host_id) != (h.phase, h.message):
                seen[h.host_id] = (h.phase, h.message)
                console.print(safe(f"host/{h.host_id} {h.phase}: {h.message}"), soft_wrap=True)
        if walk.state == "done":
            failed = [h.host_id for h in walk.hosts if h.phase == "failed"]
            if failed:
                print_error(f"not upgraded: {', '.join(failed)}")
                return 1
            console.print(safe(f"upgrade {walk.id}: every host is done"))
            return 0
        if walk.state == "cancelled":
            err_console.print(safe(f"upgrade {walk.id} was cancelled"))
            return 1
        if walk.state == "stopped":
            err_console.print(safe(f"upgrade {walk.id} is stopped; `fleet upgrade-hosts --resume`"))
            return 1
        if time.monotonic() > ends:
            print_error(
                f"upgrade {walk.id} still {walk.state} after the --timeout; "
                "it goes on (see `fleet upgrade-hosts --status`)"
            )
            return 1
        time.sleep(poll_interval)


@connected
def upgrade_hosts(
    selector: Annotated[
        list[str] | None,
        typer.Option(
            "--selector",
            "-l",
            help="Only hosts with this label (an admin's, agent.* or a fact): k=v, k!=v "
            "or k (repeat).",
        ),
    ] = None,
    max_parallel: Annotated[
        int, typer.Option("--max-parallel", min=1, max=100, help="Hosts out at once.")
    ] = 1,
    command: Annotated[
        str,
        typer.Option(
            "--command",
            help="Run on each drained host by its agent (which needs --allow-host-commands), "
            "e.g. 'rpm-ostree upgrade --reboot'. Without it, fleet waits for ops to upgrade "
            "and reboot each host.",
        ),
    ] = "",
    canary: Annotated[
        str,
        typer.Option(
            "--canary",
            help="Before uncordoning an upgraded host, run one replica of this app there and "
            "wait until it is healthy; a failed canary keeps the host out and stops the walk.",
        ),
    ] = "",
    stop: Annotated[
        bool, typer.Option("--stop", help="Take no further host (those out finish).")
    ] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Go on with a stopped walk.")] = False,
    cancel: Annotated[
        bool,
        typer.Option(
            "--cancel",
            "--clear",
            help="End the walk now and give back what it holds: hosts draining are "
            "uncordoned, hosts upgrading stay cordoned (their upgrade may be under way) "
            "and every maintenance slot it took is released.",
        ),
    ] = False,
    status: Annotated[bool, typer.Option("--status", help="Show the walk and exit.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the walk until it is done.")
    ] = True,
    timeout: Annotated[
        str, typer.Option("--timeout", help="With --wait: stop following after this long.")
    ] = "6h",
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Upgrade the OS of the pool's hosts a few at a time (CoreOS locksmith's way): each
    host takes a slot of the maintenance semaphore, is drained, upgraded (by --command,
    or by ops), waited for until its agent is back with a new boot id or OS version,
    checked with a --canary replica if asked, and uncordoned; then the next host goes.
    The walk lives in the control plane: Ctrl-C stops following it, not the walk.

    Examples:
      fleet upgrade-hosts --command 'systemctl reboot' --max-parallel 2
      fleet upgrade-hosts --status
      fleet upgrade-hosts --cancel"""
    limit = duration_option("--timeout", timeout)
    if sum((stop, resume, status, cancel)) > 1:
        fail("use one of --stop, --resume, --cancel and --status")
    with conn.client() as client:
        if status:
            walk = client.upgrade()
            if not walk.id:
                console.print("no upgrade walk has run")
                return
        elif stop or resume or cancel:
            walk = client.upgrade_hosts("stop" if stop else "resume" if resume else "cancel")
        else:
            walk = client.upgrade_hosts(
                "start",
                selector=selector or [],
                max_parallel=max_parallel,
                command=command,
                canary_app=canary,
            )
        if output in (Format.json, Format.yaml):
            print_one(walk, output)
            return
        _print_walk(walk)
        if status or stop or cancel or not wait:
            return
        code = follow_upgrade(client, limit)
    exit_with(code)


# ---------------------------------------------------------------------- removal


hosts_app = typer.Typer(
    help="The pool's hosts (list them with `fleet get hosts`).", no_args_is_help=True
)
hosts_app.add_typer(token_app, name="token")


def removed_lines(removed: pb.RemoveHostResponse) -> list[str]:
    """What ``fleet hosts remove`` says it did, and what follows from it."""
    host = removed.host_id
    if removed.denied_serials:
        serials = ", ".join(removed.denied_serials)
        denied = f"certificate serial(s) {serials} denied on every control plane"
    else:
        denied = "no certificate serial known (a plaintext control plane): nothing denied"
    ended = "its agent's stream ended" if removed.was_connected else "its agent was not connected"
    lines = [f"host/{host} removed: {denied}; {ended}"]
    if removed.replicas:
        lines.append(
            f"{removed.replicas} replica(s) it had are placed elsewhere (`fleet get containers`)"
        )
    lines.append(
        f"to rejoin, it needs a new certificate: `fleet certs issue agent {host} --force`, "
        "or a join token (`fleet hosts token create`), then start its agent with it"
    )
    return lines


@hosts_app.command("remove")
@connected
def remove(
    host: HostArg,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove it even while replicas are placed on it: they are placed "
            "elsewhere as a lost host's, without waiting for their replacements.",
        ),
    ] = False,
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Take HOST out of the pool for good (admin only): the certificates it registered
    with are denied on every control plane, so its agent's stream ends at once and
    cannot open again; its record and labels go. Refused while it still has replicas:
    drain it first (`fleet drain HOST --wait`), or give --force.

    Examples:
      fleet drain h7 --wait && fleet hosts remove h7"""
    with conn.client() as client:
        removed = client.remove_host(host, force=force)
    if output in (Format.json, Format.yaml):
        print_one(removed, output)
        return
    for line in removed_lines(removed):
        console.print(safe(line), soft_wrap=True)


@hosts_app.command("revoke-cert")
@connected
def revoke_cert(
    host: HostArg,
    serial: Annotated[
        str,
        typer.Argument(
            help="The serial (hex) of a certificate HOST registered with before, as "
            "`fleet describe host` lists them."
        ),
    ],
    conn: Connection = CONNECTION,
) -> None:
    """Deny an earlier certificate of HOST (one it renewed) on every control plane: no
    agent connects with it again. The host's current certificate is not taken: `fleet
    hosts remove` takes a host out.

    Examples:
      fleet get hosts -o wide              # CERT EXPIRES
      fleet hosts revoke-cert h7 1f3a9c0b2e"""
    with conn.client() as client:
        client.revoke_certificate(host, serial)
    console.print(safe(f"host/{host}: certificate serial {serial} denied"))


def released_lines(released: pb.ReleaseHostResponse) -> list[str]:
    """What ``fleet hosts release`` says it did, and what follows from it."""
    host = released.host_id
    if not released.holder:
        return [f"host/{host} holds no FleetLock slot: nothing to release ({released.state})"]
    where = "its agent is connected" if released.connected else "its agent is not connected"
    return [
        f"host/{host}: its maintenance slot ({released.holder}, taken {released.taken_at}) "
        "released; the next host may take it",
        f"host/{host} stays cordoned ({where}): `fleet uncordon {host}` once it is back",
    ]


@hosts_app.command("release")
@connected
def release(
    host: HostArg,
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Give back the maintenance slot HOST took through FleetLock (Zincati's reboot
    lock) and never returned, because it did not come back (admin only). The next host
    may then reboot; HOST stays cordoned until you uncordon it.

    Examples:
      fleet hosts release h4"""
    with conn.client() as client:
        released = client.release_host(host)
    if output in (Format.json, Format.yaml):
        print_one(released, output)
        return
    for line in released_lines(released):
        console.print(safe(line), soft_wrap=True)
