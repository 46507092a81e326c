"""The example app files: each loads as it is, examples/reference.yaml names every field
of the app spec (so it cannot go stale when a field is added), and every `fleet ...`
command their comments give is one the CLI takes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from fleet.cli.main import app
from fleet.spec import AppSpec, load_documents

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
VERBS = set(typer.main.get_group(app).commands)


def _fields(schema: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> set[str]:
    """Every key path the app file's JSON schema defines (``health``, ``health.http``,
    ...): what a user writes, not how fleet parses it (``ports`` are strings)."""
    paths = set()
    for key, field in schema.get("properties", {}).items():
        paths.add(prefix + key)
        for option in [field, *field.get("anyOf", [])]:
            ref = option.get("$ref", "")
            if ref:
                paths |= _fields(defs[ref.split("/")[-1]], defs, f"{prefix}{key}.")
    return paths


def _written(data: object, prefix: str = "") -> set[str]:
    """Every key path a YAML document writes (lists of mappings looked into)."""
    paths: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            paths.add(prefix + str(key))
            paths |= _written(value, f"{prefix}{key}.")
    elif isinstance(data, list):
        for item in data:
            paths |= _written(item, prefix)
    return paths


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_each_example_loads(path: Path) -> None:
    assert load_documents(path.read_text())


def test_the_reference_example_shows_every_field() -> None:
    text = (EXAMPLES / "reference.yaml").read_text()
    written: set[str] = set()
    for document in yaml.safe_load_all(text):
        written |= _written(document)
    schema = AppSpec.model_json_schema()
    fields = _fields(schema, schema.get("$defs", {}))
    missing = sorted(f for f in fields if f not in written)
    assert not missing, f"examples/reference.yaml does not show: {', '.join(missing)}"


def _commands() -> list[tuple[str, str]]:
    """Every `fleet VERB ...` in the examples' comments, up to a quote, bracket, ';'
    or the end of the comment."""
    found = []
    for path in FILES:
        for line in path.read_text().splitlines():
            comment = line.partition("#")[2]
            for match in re.finditer(r"\bfleet ([a-z][^#`();]*)", comment):
                words = match.group(1).strip().rstrip(":,.")
                if words.split()[0] in VERBS:  # not prose ("fleet makes ...")
                    found.append((path.name, f"fleet {words}"))
    return found


@pytest.mark.parametrize(("name", "command"), _commands())
def test_commands_in_the_examples_comments_are_ones_the_cli_takes(name: str, command: str) -> None:
    """Each command parses: its verb exists and takes those options (--help, eager,
    stops before anything connects)."""
    words = shlex.split(command)[1:]
    result = CliRunner().invoke(app, [*words, "--help"])
    assert result.exit_code == 0, f"{name}: `{command}`: {result.output}"
