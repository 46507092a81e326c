"""``fleet secrets``: values for env (``{secret: NAME}``), and which apps may use each.

A thin layer over ``fleet.client``; what a scope means is in ``fleet.secrets``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.output import Format, OutputOpt, console, err_console, print_records, safe
from fleet.proto import fleet_pb2 as pb

__all__ = ["AllAppsOpt", "AppsOpt", "app", "app_names", "outside_scope", "scope_text"]

app = typer.Typer(
    help="Secrets for env values ({secret: NAME}): stored encrypted, never printed, each "
    "usable only by the apps its scope names.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", show_default=False)]
AppsOpt = Annotated[
    list[str] | None,
    typer.Option("--apps", help="The apps that may use it, comma-separated (or repeat)."),
]
AllAppsOpt = Annotated[bool, typer.Option("--all-apps", help="Every app may use it.")]


def app_names(values: list[str] | None) -> list[str]:
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


def scope_text(info: pb.SecretInfo) -> str:
    """Who may use a secret, for a table cell."""
    if info.unscoped:
        return "all apps (unscoped)"
    return "all apps" if info.scope.all_apps else ",".join(info.scope.apps)


def outside_scope(info: pb.SecretInfo) -> list[str]:
    """The apps that use a secret its scope does not allow them (narrowed since)."""
    if info.unscoped or info.scope.all_apps:
        return []
    return [name for name in info.used_by if name not in info.scope.apps]


def _warn(info: pb.SecretInfo) -> None:
    """Say on stderr what an admin should know of a secret's scope."""
    if info.unscoped:
        err_console.print(
            safe(
                f"warning: secret {info.name} was stored before secrets had scopes, so "
                f"every app may use it; scope it with `fleet secrets scope {info.name} "
                "--apps APP[,APP...]` (or --all-apps)"
            ),
            soft_wrap=True,
        )
    for name in outside_scope(info):
        err_console.print(
            safe(
                f"warning: app {name} uses secret {info.name} but is not in its scope: its "
                "running containers keep the value until they are replaced; new ones are held"
            ),
            soft_wrap=True,
        )


@app.command("set")
@connected
def secrets_set(
    name: NameArg,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="Read the value from this file (default: stdin)."),
    ] = None,
    apps: AppsOpt = None,
    all_apps: AllAppsOpt = False,
    conn: Connection = CONNECTION,
) -> None:
    """Create or replace secret NAME with the value on stdin (or --from-file); admin only.
    A new secret needs --apps a,b (the apps that may use it) or --all-apps; a new value
    keeps the scope unless one is given. Running replicas keep the old value until they
    are replaced.

    Examples:
      printf %s "$DB_PASSWORD" | fleet secrets set db-password --apps web"""
    if from_file is not None:
        value = from_file.read_bytes()
    else:
        if sys.stdin.isatty():
            err_console.print("Enter the value, then Ctrl-D:")
        value = sys.stdin.buffer.read()
    with conn.client() as client:
        info = client.set_secret(name, value, apps=app_names(apps), all_apps=all_apps)
    console.print(safe(f"secret/{info.name} set (version {info.version}), for {scope_text(info)}"))
    _warn(info)


@app.command("scope")
@connected
def secrets_scope(
    name: NameArg,
    apps: AppsOpt = None,
    all_apps: AllAppsOpt = False,
    conn: Connection = CONNECTION,
) -> None:
    """Replace which apps may use secret NAME (--apps a,b or --all-apps), keeping its
    value; admin only. An app left out is refused at apply; its running containers keep
    the value until they are replaced, and new ones are held.

    Examples:
      fleet secrets scope db-password --apps web,worker
      fleet secrets scope tls-cert --all-apps"""
    with conn.client() as client:
        info = client.set_secret_scope(name, apps=app_names(apps), all_apps=all_apps)
    console.print(safe(f"secret/{info.name} is for {scope_text(info)}"))
    _warn(info)


@app.command("list")
@connected
def secrets_list(
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """List secrets: names, versions, which apps may use each and which do (never values).

    Examples:
      fleet secrets list
      fleet secrets list -o json"""
    with conn.client() as client:
        found = client.secrets()
    rows = [
        [s.name, str(s.version), s.updated_at, scope_text(s), ",".join(s.used_by) or "-"]
        for s in found
    ]
    print_records(found, output, ["NAME", "VERSION", "UPDATED", "SCOPE", "USED BY"], rows)
    for info in found:
        _warn(info)


@app.command("delete")
@connected
def secrets_delete(name: NameArg, conn: Connection = CONNECTION) -> None:
    """Delete secret NAME (refused while an app uses it).

    Examples:
      fleet secrets delete db-password"""
    with conn.client() as client:
        client.delete_secret(name)
    console.print(safe(f"secret/{name} deleted"))
