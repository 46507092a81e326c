"""``fleet context``: name the pools this CLI talks to and switch between them, as
``kubectl config use-context`` and ``docker context use`` do (``fleet.contexts``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.output import Format, OutputOpt, console, fail, print_json_or_yaml, print_table, safe
from fleet.client import parse_addresses
from fleet.contexts import Context, Contexts
from fleet.errors import InvalidArgument

__all__ = ["app"]

app = typer.Typer(
    help="Contexts: the pools this CLI talks to (server and credentials), by name.",
    no_args_is_help=True,
)


def _files(
    pki: Path | None, client: str, ca: Path | None, cert: Path | None, key: Path | None
) -> tuple[str, str, str]:
    """(ca, cert, key), absolute, from --pki DIR (as `fleet certs` writes it) or the
    three paths; each must exist."""
    if pki is not None:
        if any((ca, cert, key)):
            raise InvalidArgument("give --pki DIR or --tls-ca/--tls-cert/--tls-key, not both")
        ca, cert, key = pki / "ca.crt", pki / f"client-{client}.crt", pki / f"client-{client}.key"
    chosen = [p for p in (ca, cert, key) if p is not None]
    if chosen and len(chosen) != 3:
        raise InvalidArgument("--tls-ca, --tls-cert and --tls-key go together")
    for path in chosen:
        if not path.is_file():
            raise InvalidArgument(
                f"{path} does not exist (fleet certs issue client NAME writes it)"
            )
    if not chosen:
        return "", "", ""
    found = [str(p.resolve()) for p in chosen]
    return found[0], found[1], found[2]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Its name, e.g. prod.")],
    server: Annotated[
        str, typer.Option("--server", "-s", help="The control plane(s), HOST:PORT[,...].")
    ],
    pki: Annotated[
        Path | None,
        typer.Option(
            "--pki",
            help="A directory as `fleet certs` writes it: its ca.crt and the client "
            "certificate named by --client.",
        ),
    ] = None,
    client: Annotated[
        str, typer.Option("--client", help="With --pki: client-NAME.crt/.key.")
    ] = "admin",
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca", help="CA certificate.")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="Client certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its key.")] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="A bearer token instead (the server's token port)."),
    ] = None,
    read_server: Annotated[
        str,
        typer.Option(
            "--read-server",
            help="The servers' read ports (fleet server --read-listen), HOST:PORT[,...]: "
            "get, ps, endpoints and rollout status go there, and stay fast while the "
            "main port is busy. Certificates only (a token context reads from --server).",
        ),
    ] = "",
    use: Annotated[bool, typer.Option("--use", help="Make it the current context.")] = False,
) -> None:
    """Add (or replace) a context. The first one added becomes current.

    Examples:
      fleet context add prod -s cp1:7400,cp2:7400 --pki ~/prod-pki --use
      fleet context add prod -s cp1:7400 --read-server cp1:7403 --pki ~/prod-pki
      fleet context add ci -s cp1:7401 --token fleet_... --tls-ca ca.crt"""
    contexts = Contexts.load()
    try:
        parse_addresses(server, "server")  # refused now, not at its first use
        if token:
            if tls_cert or tls_key or pki or read_server:
                raise InvalidArgument(
                    "a token context takes --tls-ca only (to check the server); the read "
                    "port takes certificates"
                )
            ca = str(tls_ca.resolve()) if tls_ca else ""
            context = Context(name, server, tls_ca=ca, token=token)
        else:
            parse_addresses(read_server, "read server")
            ca, cert, key = _files(pki, client, tls_ca, tls_cert, tls_key)
            context = Context(name, server, ca, cert, key, read_server=read_server)
        contexts.put(context)
    except InvalidArgument as error:
        fail(str(error))
    if use or not contexts.current:
        contexts.current = name
    contexts.save()
    now = " (current)" if contexts.current == name else ""
    console.print(safe(f"context/{name} saved in {contexts.path}{now}"), soft_wrap=True)


@app.command("use")
def use(name: Annotated[str, typer.Argument(help="The context.")]) -> None:
    """Make NAME the current context: commands without --server use it.

    Examples:
      fleet context use prod
      fleet --context staging get apps   # one command only"""
    contexts = Contexts.load()
    if name not in contexts.items:
        fail(f"no context {name!r} (see `fleet context list`)")
    contexts.current = name
    contexts.save()
    console.print(safe(f"now using context/{name} ({contexts.items[name].server})"))


@app.command("list")
def list_(output: OutputOpt = Format.table) -> None:
    """The contexts; * marks the current one (never a token's value).

    Examples:
      fleet context list
      fleet context list -o json"""
    contexts = Contexts.load()
    items = [contexts.items[n] for n in sorted(contexts.items)]
    if output in (Format.json, Format.yaml):
        data = [{**c.shown(), "current": c.name == contexts.current} for c in items]
        print_json_or_yaml(data, output)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("CURRENT", "NAME", "SERVER", "CREDENTIALS"):
        table.add_column(column)
    for c in items:
        credentials = "token" if c.token else (c.tls_cert or "-")
        table.add_row(
            "*" if c.name == contexts.current else "",
            safe(c.name),
            safe(c.server),
            safe(credentials),
        )
    print_table(table)


@app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="The context.")]) -> None:
    """Forget a context (its files stay where they are).

    Examples:
      fleet context remove old-lab"""
    contexts = Contexts.load()
    if contexts.items.pop(name, None) is None:
        fail(f"no context {name!r} (see `fleet context list`)")
    if contexts.current == name:
        contexts.current = ""
    contexts.save()
    console.print(safe(f"context/{name} removed"))
