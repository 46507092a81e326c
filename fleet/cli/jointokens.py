"""``fleet hosts token``: the tokens new hosts join the pool with (``fleet agent
--join``), as ``docker swarm join-token`` and k3s's tokens. Only a token's hash is
stored; it expires, may let in a bounded number of hosts, gives them the labels chosen
here, and is revoked at once by ``revoke``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
import yaml

from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.options import duration_option
from fleet.cli.output import Format, OutputOpt, console, err_console, print_records, safe, to_dict
from fleet.errors import InvalidArgument
from fleet.proto import fleet_pb2 as pb

__all__ = ["join_command", "token_app"]

token_app = typer.Typer(
    help="Join tokens: new hosts join the pool with one (fleet agent --join).",
    no_args_is_help=True,
)


def _labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--labels {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def join_command(made: pb.CreateJoinTokenResponse, server: str) -> str:
    """The agent's command line on a new host, with what this CLI and the server know:
    the join address is the server's --token-listen, on the host this CLI reached when
    it listens on every address."""
    join_at = made.token_listen
    host, _, port = join_at.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        join_at = f"{server.rpartition(':')[0] or '127.0.0.1'}:{port}"
    return (
        f"fleet agent --join {made.token} --ca-fingerprint {made.ca_fingerprint} "
        f"--join-server {join_at} --server {server}"
    )


@token_app.command("create")
@connected
def token_create(
    ttl: Annotated[
        str, typer.Option("--ttl", help="How long it lets hosts join, e.g. 1h or 7d.")
    ] = "24h",
    uses: Annotated[
        int, typer.Option("--uses", min=0, help="How many hosts may join with it; 0: any.")
    ] = 0,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--labels",
            "--label",
            metavar="KEY=VALUE",
            help="A label each host that joins with it gets (as `fleet label host` sets "
            "them); repeat for more.",
        ),
    ] = None,
    description: Annotated[
        str, typer.Option("--description", help="What it is for (shown by list).")
    ] = "",
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Make a join token (admin only) and print it once, with the command that starts
    the agent on a new host: the agent makes its own key, pins the control plane's CA
    by its fingerprint and gets a certificate for its host id. Needs a control plane
    with --ca-key and --token-listen.

    Examples:
      fleet hosts token create --ttl 2h --uses 3 --label zone=b
      fleet hosts token create -o json | jq -r .command"""
    seconds = duration_option("--ttl", ttl)
    with conn.client() as client:
        made = client.create_join_token(
            ttl=seconds, uses=uses, labels=_labels(labels or []), description=description
        )
    server = (conn.server or "127.0.0.1:7400").split(",")[0]
    if output in (Format.json, Format.yaml):
        data = to_dict(made)
        data["command"] = join_command(made, server)
        text = json.dumps(data, indent=2) if output == Format.json else yaml.safe_dump(data)
        print(text.rstrip("\n"))
        return
    info = made.info
    limit = f"{info.uses} host(s)" if info.uses else "any number of hosts"
    given = ", ".join(f"{k}={v}" for k, v in sorted(info.labels.items())) or "no labels"
    err_console.print(
        safe(f"join token {info.id}: until {info.expires_at}, {limit}, {given}; shown this once:")
    )
    print(made.token)
    err_console.print(safe("On the new host (as root, or in the agent's container):"))
    console.print(safe("  " + join_command(made, server)), soft_wrap=True)


@token_app.command("list")
@connected
def token_list(conn: Connection = CONNECTION, output: OutputOpt = Format.table) -> None:
    """List join tokens (never their secrets): expiry, uses, labels, hosts that joined.

    Examples:
      fleet hosts token list"""
    with conn.client() as client:
        found = client.join_tokens()
    rows = [
        [
            t.id,
            t.expires_at,
            f"{t.used}/{t.uses}" if t.uses else f"{t.used}/-",
            ",".join(f"{k}={v}" for k, v in sorted(t.labels.items())) or "-",
            ",".join(t.hosts) or "-",
            t.description or "-",
        ]
        for t in found
    ]
    columns = ["ID", "EXPIRES", "USED", "LABELS", "HOSTS", "DESCRIPTION"]
    print_records(found, output, columns, rows)


@token_app.command("revoke")
@connected
def token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID")], conn: Connection = CONNECTION
) -> None:
    """Revoke a join token at once: no host joins with it any more (the hosts that did
    keep their certificates; `fleet hosts remove` takes one out).

    Examples:
      fleet hosts token revoke jt3f9a2c"""
    with conn.client() as client:
        client.delete_join_token(token_id)
    console.print(safe(f"join token {token_id} revoked"))
