"""The CLI's JSON as an interface: every `-o json` command's keys, run through the real
CLI against a real control plane and agent, must be exactly those docs/cli-json.md
documents (a renamed or dropped key fails here, and so does an undocumented one), and
every command that takes -o is documented there.

The document's sections are ``### `fleet ... -o json``` headings, each followed by a
paragraph that starts with "A list" (rows: JSON array, or one object per line where it
says "per line") or "An object", and names the keys in backticks after a colon. APP,
HOST and the like in a heading are filled in by the test."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import typer

from fleet.cli.main import app
from fleet.spec import load_documents
from tests.helpers import documented_json
from tests.integration.conftest import Fleet, fleet_cli, wait_containers


def _verbs_taking_output() -> set[str]:
    """Every command path ("get", "hosts token list", ...) with an --output option."""
    paths: set[str] = set()

    def walk(command: Any, prefix: str) -> None:
        if hasattr(command, "commands"):  # a group (typer's own click)
            for name, sub in command.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        elif any("--output" in getattr(p, "opts", ()) for p in command.params):
            paths.add(prefix)

    walk(typer.main.get_group(app), "")
    return paths


def test_every_command_with_output_is_documented_json() -> None:
    commands = documented_json()
    covered = {c.removeprefix("fleet ") for c in commands}
    missing = [
        verb
        for verb in sorted(_verbs_taking_output())
        if not any(c == verb or c.startswith(verb + " ") for c in covered)
    ]
    assert not missing, f"docs/cli-json.md does not document: {', '.join(missing)}"


def _keys(value: Any, shape: str, command: str) -> set[str]:
    if shape == "object":
        assert isinstance(value, dict), f"{command}: not an object: {value!r:.200}"
        return set(value)
    assert isinstance(value, list) and value, f"{command}: not a non-empty list: {value!r:.200}"
    shapes = {frozenset(item) for item in value}
    assert len(shapes) == 1, f"{command}: rows with different keys: {shapes}"
    return set(value[0])


def test_the_json_of_every_command_has_the_documented_keys(fleet: Fleet, tmp_path: Path) -> None:
    host = fleet.host.name
    spec = f"name: web\nimage: {fleet.image}\nreplicas: 1\nports: ['8080']\n"
    job = f"name: once\nimage: {fleet.image}\nmode: job\ncommand: [sh, -c, 'exit 0']\n"
    fleet.client.apply(load_documents(spec + "---\n" + job))
    wait_containers(fleet, "web", 1)

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return fleet_cli(*args, server=fleet.server.address, pki=fleet.pki, stdin=stdin)

    # State for the commands that list what was made first.
    assert cli("secrets", "set", "db-password", "--all-apps", stdin="s3cret").returncode == 0
    assert cli("tokens", "create", "ci", "--role", "viewer").returncode == 0
    login = ("registry", "login", "registry.example:5000", "-u", "bot", "--password-stdin")
    assert cli(*login, stdin="pw").returncode == 0
    assert cli("upgrade-hosts", "--no-wait").returncode == 0
    assert cli("upgrade-hosts", "--cancel").returncode == 0
    assert cli("uncordon", host).returncode == 0
    app_file = tmp_path / "web.yaml"
    app_file.write_text(spec)
    fill = {"APP": "web", "HOST": host, "FILE": str(app_file), "IMAGE": fleet.image}
    checked, wrong = [], []
    for command, (shape, keys) in documented_json().items():
        words = [fill.get(w, w) for w in shlex.split(command)[1:]]
        if words[0] == "context" or words[:2] == ["hosts", "token"]:
            # No server / a server that lets hosts join: test_contexts.py and
            # test_join.py check these against this same document.
            continue
        done = cli(*words)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        if shape == "lines":
            rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
            got = _keys(rows, "list", command)
        else:
            got = _keys(json.loads(done.stdout), shape, command)
        if got != keys:
            wrong.append(
                f"{command}: keys not documented: {sorted(got - keys)}; "
                f"documented but missing: {sorted(keys - got)}"
            )
        checked.append(command)
    assert not wrong, "\n".join(wrong)
    assert len(checked) >= 20
