"""Shell completion: ``fleet completion bash|zsh|fish`` prints the script a shell
sources; completing APP and HOST arguments asks the pool for their names.

The scripts are typer's (click's protocol): the shell runs ``fleet`` again with
``_FLEET_COMPLETE=complete_<shell>`` and the words typed so far, and fleet prints the
candidates. Names come from the API over the connection the typed words give (or the
default one) and fail silently: a shell shows no candidates, never a traceback.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from typer._completion_classes import completion_init
from typer._completion_shared import get_completion_script

from fleet.cli.connection import Connection, root_options

__all__ = ["COMPLETE_VAR", "complete_apps", "complete_hosts", "complete_names", "completion"]

COMPLETE_VAR = "_FLEET_COMPLETE"
_ASK_TIMEOUT = 3.0  # seconds: a shell waiting on a TAB

# typer registers its completion classes only with its own --install-completion.
completion_init()


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(
    shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.", show_default=False)],
) -> None:
    """Print the shell completion script (commands, options, app and host names).

    Examples:
      source <(fleet completion bash)
      fleet completion zsh > "${fpath[1]}/_fleet"
      fleet completion fish > ~/.config/fish/completions/fleet.fish"""
    print(get_completion_script(prog_name="fleet", complete_var=COMPLETE_VAR, shell=shell.value))


def _connection(ctx: typer.Context) -> Connection:
    """The connection the words typed so far give: options before the verb, then the
    verb's own (which win), else the defaults (context, FLEET_* variables)."""
    options: dict[str, Any] = {name: default for name, (_, default) in root_options().items()}
    chain = []
    node: Any = ctx
    while node is not None:
        chain.append(node)
        node = node.parent
    for level in reversed(chain):
        for name in options:
            if level.params.get(name) not in (None, False):
                options[name] = level.params[name]
    return Connection(**options)


def _names(ctx: typer.Context, hosts: bool) -> list[str]:
    try:
        with _connection(ctx).client(timeout=_ASK_TIMEOUT) as client:
            if hosts:
                return [h.host_id for h in client.hosts()]
            return [a.name for a in client.apps()]
    except Exception:  # no server, no credentials, refused: no candidates, no noise
        return []


def complete_apps(ctx: typer.Context, incomplete: str) -> list[str]:
    return [n for n in _names(ctx, hosts=False) if n.startswith(incomplete)]


def complete_hosts(ctx: typer.Context, incomplete: str) -> list[str]:
    return [n for n in _names(ctx, hosts=True) if n.startswith(incomplete)]


def complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """NAME of ``get``/``describe``/``delete``: hosts' or apps', by the KIND typed."""
    hosts = str(ctx.params.get("kind") or "").startswith("host")
    return [n for n in _names(ctx, hosts=hosts) if n.startswith(incomplete)]
