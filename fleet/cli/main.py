"""``fleet``: the root command. Every command and group is registered here, in the
order ``fleet --help`` lists them, from the module that holds it; ``main`` is the entry
point, which turns fleet errors into one line and an exit status."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from fleet.cli import (
    apps,
    certs,
    completion,
    compose,
    contexts,
    daemons,
    hosts,
    observe,
    policy,
    registries,
    rollouts,
    secrets,
    signals,
    tokens,
    version,
)
from fleet.cli.connection import root_options, set_before_the_verb
from fleet.cli.daemonconfig import DaemonCommand
from fleet.cli.output import print_error
from fleet.errors import FleetError, PolicyDenied, SpecError

__all__ = ["COMMANDS", "GROUPS", "app", "main"]


def _help_reads_as_kubectls() -> None:
    """Patches of typer 0.29's help, so it reads as kubectl's and docker's does.

    Arguments are named in capitals. Option types: typer labels every option's type,
    flags too (`--wait <bool>`, as if a flag took a value), a repeatable one as
    `<list[str]>` and a bounded number as `<int range> [x>=0]`: a flag is shown bare,
    and the others by what one value is (`<str>`, `<int>`; the help says when an
    option repeats).

    Prose: typer keeps the single line breaks of a help's later paragraphs, so a
    paragraph written at 88 columns comes out ragged at 80 ("... its" / "missing ...").
    A paragraph of prose is joined into one line for Rich to wrap at the terminal's
    width; one with indented lines (Examples) is kept as written."""
    import re

    from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

    def one_value(label: str | None) -> str | None:
        if label is None:
            return None
        label = re.sub(r"^<list\[(\w+)\]>", r"<\1>", label)
        return re.sub(r"^<(int|float) range>.*$", r"<\1>", label)

    option_type = TyperOption.display_type_rich
    argument_type = TyperArgument.display_type_rich

    def option_display(self: TyperOption, ctx: Any) -> str | None:
        if self.is_bool_flag:
            return None
        label = option_type(self, ctx)
        return label if self.metavar is not None else one_value(label)

    def argument_display(self: TyperArgument, ctx: Any) -> str | None:
        return one_value(argument_type(self, ctx))

    # An argument without a metavar is named in capitals, as click and kubectl do
    # (`fleet get KIND [NAME]`, not `{kind} [name]`).
    TyperArgument.display_name_raw = property(  # type: ignore[method-assign,assignment]
        lambda self: self.metavar if self.metavar is not None else self.name.upper()
    )
    TyperOption.display_type_rich = option_display  # type: ignore[method-assign]
    TyperArgument.display_type_rich = argument_display  # type: ignore[method-assign,assignment]

    def fix_linebreaks(paragraphs: list[str], markup_mode: Any) -> str:
        def joined(paragraph: str) -> str:
            lines = paragraph.split("\n")
            if paragraph.startswith("\b") or any(line[:1].isspace() for line in lines[1:]):
                return paragraph
            return " ".join(line.strip() for line in lines)

        # After this, typer dedents the text as a docstring (inspect.cleandoc: by the
        # least indent of every line but the first), which took the Examples' indent
        # away when they were the only paragraph left: a blank first line keeps it.
        return "\n" + "\n\n".join(joined(p) for p in paragraphs)

    # typer.rich_utils brings Rich's markdown and pygments (7 MiB in every daemon that
    # never prints a help): patched when a help is first formatted, not at import.
    def patched_on_first_help(cls: type[TyperCommand] | type[TyperGroup]) -> None:
        format_help = cls.format_help

        def format_help_patched(self: Any, ctx: Any, formatter: Any) -> None:
            import typer.rich_utils

            typer.rich_utils._fix_linebreaks = fix_linebreaks
            format_help(self, ctx, formatter)

        cls.format_help = format_help_patched  # type: ignore[method-assign]

    patched_on_first_help(TyperCommand)
    patched_on_first_help(TyperGroup)


_help_reads_as_kubectls()

app = typer.Typer(
    name="fleet",
    help="Run containers on a pool of Docker hosts: declare apps, fleet places and keeps them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Every command, by name, in the order `fleet --help` lists them.
COMMANDS: dict[str, Callable[..., None]] = {
    "apply": apps.apply,
    "convert": compose.convert_command,
    "diff": apps.diff,
    "get": apps.get,
    "ps": observe.ps,
    "describe": apps.describe,
    "events": observe.events,
    "stats": observe.stats,
    "logs": observe.logs,
    "exec": observe.exec_,
    "top": observe.top,
    "pause": signals.pause,
    "unpause": signals.unpause,
    "kill": signals.kill,
    "cordon": hosts.cordon,
    "uncordon": hosts.uncordon,
    "scale": apps.scale,
    "delete": apps.delete,
    "endpoints": rollouts.endpoints,
    "drain": hosts.drain,
    "wait": rollouts.wait,
    "upgrade-hosts": hosts.upgrade_hosts,
    "label": hosts.label,
    "schema": apps.schema,
    "server": daemons.server,
    "agent": daemons.agent,
    "up": daemons.up,
    "version": version.version,
    "completion": completion.completion,
}
# Every group of subcommands, listed after the commands.
GROUPS: dict[str, typer.Typer] = {
    "certs": certs.app,
    "context": contexts.app,
    "rollout": rollouts.rollout_app,
    "set": rollouts.set_app,
    "hosts": hosts.hosts_app,
    "secrets": secrets.app,
    "registry": registries.app,
    "policy": policy.app,
    "tokens": tokens.app,
}


def _root(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=version.print_version,
            help="Print fleet's version and exit (no connection; `fleet version` asks "
            "the server too).",
        ),
    ] = False,
    **connection: Any,
) -> None:
    """Options of the root command itself (the commands are registered below): the
    connection options may come before the verb too, as `fleet -s HOST get apps`."""
    given = {k: v for k, v in connection.items() if v not in (None, False)}
    if given and ctx.invoked_subcommand in CONFIGURABLE | {"up"}:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        raise typer.BadParameter(
            f"{flags} before `{ctx.invoked_subcommand}` would be ignored: give "
            f"{'it' if len(given) == 1 else 'them'} after it (its own options)"
        )
    set_before_the_verb(given)


# The root command takes the connection options too (each verb's own win).
_own = list(inspect.signature(_root, eval_str=True).parameters.values())[:2]
_root.__signature__ = inspect.signature(_root).replace(  # type: ignore[attr-defined]
    parameters=[
        *_own,
        *(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=dflt, annotation=hint)
            for name, (hint, dflt) in root_options().items()
        ),
    ]
)
app.callback()(_root)


# The daemons take every option from a FLEET_* variable and a --config file too.
CONFIGURABLE = {"server", "agent"}
for _name, _command in COMMANDS.items():
    app.command(_name, cls=DaemonCommand if _name in CONFIGURABLE else None)(_command)
for _name, _group in GROUPS.items():
    app.add_typer(_group, name=_name)


def main() -> None:
    """Entry point: fleet errors become one clear line and an exit status."""
    try:
        app(complete_var=completion.COMPLETE_VAR)  # the same under `python -m fleet`
    except (SpecError, PolicyDenied) as error:
        # An app file's problems, and the fields the cluster policy refuses, each at its line.
        for problem in error.problems:
            print_error(str(problem))
        sys.exit(2)
    except FleetError as error:
        print_error(str(error))
        sys.exit(1)
