"""``fleet pause``, ``fleet unpause`` and ``fleet kill``: Docker's verbs on every replica
of an app (or one, ``APP/SLOT``), through each host's agent. One line per replica; the
exit status is 1 if any of them failed."""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.output import console, fail, print_error, safe

__all__ = ["kill", "pause", "unpause"]

_DONE = {"pause": "paused", "unpause": "unpaused", "kill": "sent"}

Target = Annotated[
    str,
    typer.Argument(metavar="APP[/SLOT]", help="The app (every replica), or one replica."),
]


def _target(target: str) -> tuple[str, int]:
    app_name, _, slot_text = target.partition("/")
    if slot_text and not slot_text.isdigit():
        fail(f"{target!r}: expected APP or APP/SLOT")
    return app_name, int(slot_text) if slot_text else -1


def _run(conn: Connection, target: str, action: str, signal: str = "") -> None:
    app_name, slot = _target(target)
    with conn.client() as client:
        response = client.signal_replicas(app_name, action, slot=slot, signal=signal)
    failed = False
    what = f"{_DONE[action]} {response.signal}" if response.signal else _DONE[action]
    for result in response.results:
        who = f"{app_name}.{result.slot} on {result.host}"
        if result.error:
            failed = True
            print_error(f"{who}: {result.error}")
        else:
            console.print(safe(f"{who}: {what}"))
    if failed:
        raise typer.Exit(1)


@connected
def pause(target: Target, conn: Connection = CONNECTION) -> None:
    """Pause the replicas' processes (docker pause): they stay in memory, answer nothing,
    and leave the edges until `fleet unpause`.

    Examples:
      fleet pause web            # every replica
      fleet pause web/2          # one"""
    _run(conn, target, "pause")


@connected
def unpause(target: Target, conn: Connection = CONNECTION) -> None:
    """Let paused replicas run again (docker unpause).

    Examples:
      fleet unpause web
      fleet unpause web/2"""
    _run(conn, target, "unpause")


@connected
def kill(
    target: Target,
    signal: Annotated[
        str,
        typer.Option("--signal", help="The signal: a name (HUP, SIGUSR1) or a number."),
    ] = "KILL",
    conn: Connection = CONNECTION,
) -> None:
    """Send a signal to the replicas' main process (docker kill): `--signal HUP` to reload.
    A signal that ends the process ends the container, and its restart policy decides
    what comes next, as for any exit (to stop an app, scale it to 0).

    Examples:
      fleet kill web/0                  # SIGKILL: its restart policy decides
      fleet kill web --signal HUP       # reload every replica"""
    _run(conn, target, "kill", signal)
