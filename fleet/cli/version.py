"""``fleet --version`` (this program's version, at once) and ``fleet version`` (this
program's and, when one answers, the control plane's), like ``kubectl version``."""

from __future__ import annotations

import json
import platform
from typing import Annotated, Any

import typer
import yaml

from fleet import __version__
from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.output import Format, OutputOpt, console, safe, to_dict
from fleet.errors import FleetError, Unavailable

__all__ = ["print_version", "version"]

# A version question should not wait as long as a rollout may: a server that has not
# answered in this long is reported unreachable.
_TIMEOUT = 5.0


def print_version(value: bool) -> None:
    """The root's eager ``--version``: print the client's version and stop, before any
    command runs or any connection is made."""
    if value:
        print(f"fleet {__version__}")
        raise typer.Exit()


def _client_info() -> dict[str, str]:
    return {"version": __version__, "python": platform.python_version()}


def _server_info(conn: Connection) -> tuple[dict[str, Any] | None, str]:
    """The answering server's info, or None and why there is none."""
    try:
        with conn.client(timeout=_TIMEOUT) as client:
            return to_dict(client.server_info()), ""
    except Unavailable as error:
        return None, f"unreachable ({error})"
    except FleetError as error:  # reached, but it would not say (a role, a bad option)
        return None, f"unknown ({error})"


@connected
def version(
    client_only: Annotated[
        bool, typer.Option("--client", help="Only this program's version; ask no server.")
    ] = False,
    output: OutputOpt = Format.table,
    conn: Connection = CONNECTION,
) -> None:
    """Print this program's version and the control plane's (from the first server that
    answers, with the usual connection options). An unreachable server is reported, not
    an error: the exit status is 0 whenever the client's version was printed."""
    client = _client_info()
    server, problem = (None, "not asked (--client)") if client_only else _server_info(conn)
    if output in (Format.json, Format.yaml):
        data: dict[str, Any] = {"client": client, "server": server}
        if server is None:
            data["server_error"] = problem
        if output == Format.json:
            console.print_json(json.dumps(data))
        else:
            print(yaml.safe_dump(data, sort_keys=False), end="")
        return
    console.print(safe(f"client: {client['version']} (python {client['python']})"))
    if server is None:
        console.print(safe(f"server: {problem}"))
        return
    role = "leader" if server["leader"] else "follower"
    console.print(safe(f"server: {server['version']} ({server['server_id']}, {role})"))
