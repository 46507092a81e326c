"""``fleet tokens``: bearer tokens for the API and ``/metrics``, for CI and scripts that
have no client certificate. Only a token's hash is stored; the server checks them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.output import Format, OutputOpt, console, err_console, print_records, safe

__all__ = ["app"]


app = typer.Typer(
    help="Bearer tokens for the API (for CI and scripts without a client certificate).",
    no_args_is_help=True,
)


@app.command("create")
@connected
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what uses it, e.g. ci.")],
    role: Annotated[str, typer.Option("--role", help="admin, deployer or viewer.")] = "viewer",
    conn: Connection = CONNECTION,
) -> None:
    """Create a token (admin only) and print it once: only its hash is kept. Use it with
    --token (or FLEET_TOKEN) against the server's --token-listen address, or as the
    bearer token that scrapes its /metrics.

    Examples:
      fleet tokens create ci --role deployer
      fleet tokens create grafana --role viewer"""
    with conn.client() as client:
        made = client.create_token(name, role)
    err_console.print(safe(f"token {made.id} for {name} ({role}); it is shown this once:"))
    print(made.token)


@app.command("list")
@connected
def tokens_list(conn: Connection = CONNECTION, output: OutputOpt = Format.table) -> None:
    """List tokens: id, name, role (never the secret).

    Examples:
      fleet tokens list"""
    with conn.client() as client:
        found = client.tokens()
    rows = [[t.id, t.name, t.role, t.created_at] for t in found]
    print_records(found, output, ["ID", "NAME", "ROLE", "CREATED"], rows)


@app.command("delete")
@connected
def tokens_delete(
    token_id: Annotated[str, typer.Argument(metavar="ID")], conn: Connection = CONNECTION
) -> None:
    """Revoke a token at once.

    Examples:
      fleet tokens delete tk5b1e07"""
    with conn.client() as client:
        client.delete_token(token_id)
    console.print(safe(f"token/{token_id} deleted"))
