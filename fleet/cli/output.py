"""How the CLI prints, and how a command ends: tables for people, JSON and YAML for
scripts, errors and exit statuses.

Everything a user, a host or a server wrote passes ``safe`` on its way to the terminal.
``print_error`` is the one way errors are shown; ``fail`` shows one and exits 2.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import typer
import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from fleet._text import strip_control

__all__ = [
    "Format",
    "ListFormat",
    "ListOutputOpt",
    "NoHeadersOpt",
    "OutputOpt",
    "View",
    "console",
    "err_console",
    "exit_with",
    "fail",
    "human_memory",
    "print_error",
    "print_records",
    "print_table",
    "safe",
    "to_dict",
]

# Not a terminal (a pipe, a script): never wrap or truncate table cells.
# No highlighting and no emoji codes: text from hosts (":smile:" in a message) is shown
# as it was sent.
console = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else 4096)
err_console = Console(stderr=True, highlight=False, emoji=False)


def safe(text: object) -> str:
    """``text`` (a user's, a host's, a server's) for rich: no control characters, and
    its brackets shown as written, never read as markup."""
    return escape(strip_control(str(text)))


def print_error(message: str) -> None:
    """``error: message`` on stderr, the message shown as it is. The CLI's only error
    printer: every command, and ``main`` for the errors the server answers, use it."""
    err_console.print(f"[red]error:[/red] {safe(message)}", soft_wrap=True)


def fail(message: str) -> NoReturn:
    """Print ``message`` as an error and exit 2: the command was given something it
    cannot use, found before anything was changed."""
    print_error(message)
    raise typer.Exit(2)


def exit_with(code: int) -> None:
    """End the command with ``code`` (what a followed rollout, drain or walk ended
    with), unless it is 0: then the command goes on to its end."""
    if code:
        raise typer.Exit(code)


class Format(StrEnum):
    """The formats of a command that prints one thing, or a list with no wider view:
    no ``wide``, which would print the table unchanged (kubectl refuses what a command
    cannot print, too)."""

    table = "table"
    json = "json"
    yaml = "yaml"


class ListFormat(StrEnum):
    """The formats of listings (``get``, ``ps``): ``Format``'s and ``name``."""

    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"
    name = "name"


# The -o option of every command that prints records.
OutputOpt = Annotated[
    Format,
    typer.Option(
        "--output",
        "-o",
        metavar="FORMAT",
        help="Output format: table, json or yaml.",
        case_sensitive=False,
    ),
]


# The -o option of listings.
ListOutputOpt = Annotated[
    ListFormat,
    typer.Option(
        "--output",
        "-o",
        metavar="FORMAT",
        help="Output format: table, wide, json, yaml or name (KIND/NAME a line).",
        case_sensitive=False,
    ),
]
NoHeadersOpt = Annotated[
    bool, typer.Option("--no-headers", help="Print tables without their header line.")
]


@dataclass
class View:
    """How a listing is shown beyond its format: ``--no-headers``; and, for ``-w``, the
    rows printed so far (by their first column), so a poll prints only what changed."""

    no_headers: bool = False
    watch: bool = False
    seen: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    started: bool = False
    warned: str = ""  # the last warning said below the listing (said again once changed)


# Proto3's JSON writes 64-bit integers as strings (for JavaScript's doubles); fleet's
# readers are jq and scripts, which want numbers, as kubectl gives them.
_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _numbers(descriptor: Any, data: dict[str, Any]) -> None:
    """Turn ``data``'s 64-bit integer strings (of ``descriptor``'s message) into ints,
    and give an unset message field the value null: every record has every key."""
    for field in descriptor.fields:
        value = data.get(field.name)
        if value is None:
            if field.message_type is not None and field.name not in data:
                data[field.name] = None
            continue
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.type in _INT64:
                    data[field.name] = {k: int(v) for k, v in value.items()}
                elif value_field.message_type is not None:
                    for item in value.values():
                        _numbers(value_field.message_type, item)
            elif isinstance(value, list):
                for item in value:
                    _numbers(field.message_type, item)
            elif isinstance(value, dict):
                _numbers(field.message_type, value)
        elif field.type in _INT64:
            data[field.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif field.type == FieldDescriptor.TYPE_DOUBLE:
            data[field.name] = (
                [_tidy(v) for v in value] if isinstance(value, list) else _tidy(value)
            )


def _tidy(value: float | str) -> float | str:
    """A double without binary noise: sums the server made (0.1 + 0.2 cpus reserved)
    print as 0.3, not 0.30000000000000004; 12 significant digits keep every figure
    fleet shows. ("NaN"/"Infinity", strings in proto's JSON, stay as they are.)"""
    return float(f"{value:.12g}") if isinstance(value, float | int) else value


def to_dict(message: Message) -> dict[str, Any]:
    """A proto message as plain data: 64-bit integers as numbers, an embedded
    ``spec_json`` as ``spec``."""
    data = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _numbers(message.DESCRIPTOR, data)
    if "spec_json" in data:
        data["spec"] = json.loads(data.pop("spec_json"))
    return data


def human_memory(n: int) -> str:
    """Memory for people: ``96Mi``, ``23.5Gi``, ``0`` (exact spec values use
    ``format_memory``)."""
    if not n:
        return "0"
    for unit, size in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + unit
    return str(n)


def print_json_or_yaml(data: Any, fmt: Format) -> None:
    """Plain data (not a proto message) as JSON or YAML."""
    if fmt == Format.json:
        console.print_json(json.dumps(data))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")


def print_one(message: Message, fmt: Format) -> None:
    """One record as a JSON object or a YAML document (``get KIND NAME -o json``)."""
    if fmt == Format.json:
        console.print_json(json.dumps(to_dict(message)))
    else:
        print(yaml.safe_dump(to_dict(message), sort_keys=False), end="")


def print_table(table: Table) -> None:
    """A table as kubectl and docker print one: no value is ever cut ("...") or
    wrapped inside its cell to fit a narrow terminal. The table keeps its natural
    width, and a row longer than the terminal is wrapped by the terminal itself."""
    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if needed <= console.width:
        console.print(table)
        return
    wide = Console(
        highlight=False,
        emoji=False,
        width=needed,
        file=console.file,
        force_terminal=console.is_terminal,
        color_system=console.color_system,  # type: ignore[arg-type]
    )
    wide.print(table, crop=False)


def print_records(
    messages: Sequence[Message],
    output: Format | ListFormat,
    columns: list[str],
    rows: list[list[str]],
    *,
    wide_columns: list[str] | None = None,
    wide_rows: list[list[str]] | None = None,
    kind: str = "",
    view: View | None = None,
) -> None:
    """Print ``messages`` as JSON/YAML, or ``rows`` as a table (``wide`` adds columns),
    or ``-o name``: ``KIND/NAME`` (the first column) a line. Watched (``view.watch``),
    only the records that changed since the last call are printed, the header once."""
    view = view or View()
    fmt = ListFormat(output.value)
    if fmt == ListFormat.wide and wide_columns and wide_rows:
        columns = columns + wide_columns
        rows = [row + extra for row, extra in zip(rows, wide_rows, strict=True)]
    if view.watch:
        # AGE changes every second by itself: a row is reprinted when anything else does.
        kept = [i for i, column in enumerate(columns) if column != "AGE"]
        now = {row[0]: tuple(row[i] for i in kept) for row in rows}
        changed = [i for i, row in enumerate(rows) if view.seen.get(row[0]) != now[row[0]]]
        view.seen.update(now)
        if view.started and not changed:
            return
        if fmt in (ListFormat.json, ListFormat.yaml):
            messages = [messages[i] for i in changed]
        rows = [rows[i] for i in changed]
    started, view.started = view.started, True
    if view.watch and fmt == ListFormat.json:  # one object a line, as `kubectl get -w -o json`
        for message in messages:
            print(json.dumps(to_dict(message)), flush=True)
        return
    if fmt == ListFormat.json:
        console.print_json(json.dumps([to_dict(m) for m in messages]))
        return
    if fmt == ListFormat.yaml:
        print(yaml.safe_dump([to_dict(m) for m in messages], sort_keys=False), end="", flush=True)
        return
    if fmt == ListFormat.name:
        for row in rows:
            print(f"{kind}/{row[0]}" if kind else row[0], flush=True)
        return
    show_header = not (view.no_headers or started)
    table = Table(box=None, pad_edge=False, header_style="bold", show_header=show_header)
    # Cells are read as markup too: every one is data (top's titles come from hosts).
    for column in columns:
        table.add_column(safe(column))
    for row in rows:
        table.add_row(*map(safe, row))
    print_table(table)
    if view.watch:
        sys.stdout.flush()
