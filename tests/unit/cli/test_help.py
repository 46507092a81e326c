"""Every command's --help, as a user reads it in an 80-column terminal: an Examples
section on each verb, no line longer than the terminal, no example line wrapped, flags
shown bare (no `<bool>`) and no Python type names (`<list[str]>`)."""

from __future__ import annotations

import inspect
import re
import shlex
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fleet.cli.main import app

# Verbs whose help need no Examples: the daemons (their flags are the manual), and
# commands that take nothing.
NO_EXAMPLES = {"server", "agent", "version", "schema", "completion"}
_EXAMPLE = re.compile(r"^\s+(?:.*\|\s*)?(fleet\s[^#|>]*)")


def _commands() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []

    def walk(command: Any, path: str) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            found.append((path, command))

    walk(typer.main.get_group(app), "")
    return found


COMMANDS = _commands()


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_help_fits_80_columns_and_shows_no_python_types(path: str, command: Any) -> None:
    result = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, path
    for bad in ("<bool>", "<list[", "range>"):
        assert bad not in result.output, f"{path}: {bad}"
    if " Examples:" in lines:  # shown indented under their heading, as written
        after = lines[lines.index(" Examples:") + 1]
        assert after.startswith("   ") and after.strip(), f"{path}: {after!r}"


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_examples_are_there_fit_and_parse(path: str, command: Any) -> None:
    """Every verb has Examples (but the daemons and the bare ones); an example line is
    printed as written (one space before it), so it must fit 80 columns on its own (a
    wrapped command line cannot be copied); and each example's command is one the CLI
    takes (its verb and options exist: --help, eager, stops before anything runs)."""
    text = inspect.cleandoc(command.help or "")
    if path.split()[0] not in NO_EXAMPLES:
        assert "Examples:" in text, f"{path}: no Examples"
    lines = text.replace("\\\n", " ").splitlines()
    for line in text.splitlines():
        if line[:1].isspace():
            assert len(line) <= 79, f"{path}: an example line too long: {line!r}"
    for line in lines:
        found = _EXAMPLE.match(line)
        if not found or not line[:1].isspace():
            continue
        words = shlex.split(found.group(1))[1:]
        if "--" in words:  # what follows is the command's own
            words = words[: words.index("--")]
        result = CliRunner().invoke(app, [*words, "--help"])
        assert result.exit_code == 0, f"{path}: example {found.group(1)!r}: {result.output}"
