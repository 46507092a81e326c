"""``fleet registry``: credentials for private registries (sealed as fleet secrets,
sent only to the hosts that pull with them) and the pool's mirror for Docker Hub
images. A thin layer over ``fleet.client``; the rules are in ``fleet.registries``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.output import Format, OutputOpt, console, err_console, print_records, safe
from fleet.cli.secrets import AllAppsOpt, AppsOpt, app_names
from fleet.errors import InvalidArgument
from fleet.proto import fleet_pb2 as pb

__all__ = ["app"]

app = typer.Typer(
    help="Private registries: logins used for the pulls of apps whose image names the "
    "registry (passwords stored encrypted, never shown), and the pool's mirror.",
    no_args_is_help=True,
)

RegistryArg = Annotated[
    str,
    typer.Argument(
        metavar="REGISTRY", help="HOST[:PORT] as image references name it.", show_default=False
    ),
]


def _scope(info: pb.RegistryInfo) -> str:
    return "all apps" if info.scope.all_apps else ",".join(info.scope.apps)


@app.command("login")
@connected
def registry_login(
    registry: RegistryArg,
    username: Annotated[str, typer.Option("--username", "-u", help="The registry's user.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    apps: AppsOpt = None,
    all_apps: AllAppsOpt = False,
    conn: Connection = CONNECTION,
) -> None:
    """Store REGISTRY's credentials, encrypted (admin only). Every app whose image names
    REGISTRY pulls with them (or only --apps a,b); only hosts running such an app get
    them. Containers made before keep running as they are.

    Examples:
      fleet registry login registry.example:5000 -u ci --password-stdin"""
    if not password_stdin:
        raise InvalidArgument(
            "give the password on standard input, with --password-stdin (never as an "
            "argument: it would stay in the shell's history and the process list)"
        )
    if sys.stdin.isatty():
        err_console.print("Enter the password, then Ctrl-D:")
    password = sys.stdin.buffer.read()
    with conn.client() as client:
        info = client.registry_login(
            registry, username, password, apps=app_names(apps), all_apps=all_apps
        )
    console.print(
        safe(
            f"registry/{info.registry} login stored for user {info.username} "
            f"(version {info.version}), for {_scope(info)}"
        )
    )


@app.command("logout")
@connected
def registry_logout(registry: RegistryArg, conn: Connection = CONNECTION) -> None:
    """Forget REGISTRY's credentials (admin only): later pulls from it are anonymous.

    Examples:
      fleet registry logout registry.example:5000"""
    with conn.client() as client:
        client.registry_logout(registry)
    console.print(safe(f"registry/{registry} logged out"))


@app.command("list")
@connected
def registry_list(conn: Connection = CONNECTION, output: OutputOpt = Format.table) -> None:
    """The registries fleet has logins for (user, scope, apps that pull with them;
    never a password), and the mirror.

    Examples:
      fleet registry list"""
    with conn.client() as client:
        found = client.registries()
    rows = [
        [r.registry, r.username, _scope(r), ",".join(r.used_by) or "-", r.updated_at]
        for r in found.registries
    ]
    print_records(
        list(found.registries), output, ["REGISTRY", "USER", "SCOPE", "USED BY", "UPDATED"], rows
    )
    if output is Format.table:
        console.print(safe(f"mirror: {found.mirror or '-'}"))


@app.command("mirror")
@connected
def registry_mirror(
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL", help="HOST[:PORT] or http(s)://HOST[:PORT].", show_default=False
        ),
    ] = "",
    clear: Annotated[bool, typer.Option("--clear", help="Pull from Docker Hub directly.")] = False,
    conn: Connection = CONNECTION,
) -> None:
    """Pull Docker Hub images through URL first, with Docker Hub as the fallback when
    the mirror fails (as Docker's registry-mirrors); admin only. Images that name
    another registry are pulled from it.

    Examples:
      fleet registry mirror https://mirror.example:5000
      fleet registry mirror --clear"""
    if clear == bool(url):
        raise InvalidArgument("give the mirror's URL, or --clear (one of them)")
    with conn.client() as client:
        found = client.set_registry_mirror("" if clear else url)
    console.print(safe(f"registry mirror: {found.mirror or 'none'}"))
