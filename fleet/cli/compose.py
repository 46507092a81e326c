"""Compose files at the CLI: ``fleet convert`` prints the app file a compose file becomes;
``fleet apply -f compose.yaml`` (through ``load``, ``guard_project`` and
``store_secrets``) applies it. The mapping itself is ``fleet.spec.compose``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.output import err_console, fail, safe
from fleet.client import FleetClient
from fleet.errors import SpecError, SpecProblem
from fleet.spec import AppSpec, SecretRef
from fleet.spec._files import _read_text
from fleet.spec.compose import Conversion, compose_environ, convert, is_compose

__all__ = [
    "IgnoreOpt",
    "ProjectOpt",
    "convert_command",
    "guard_project",
    "is_compose_file",
    "load",
    "store_secrets",
    "without_secrets",
]

IgnoreOpt = Annotated[
    bool,
    typer.Option(
        "--ignore-unsupported",
        help="Compose files: go on without the keys fleet cannot honour (each is listed).",
    ),
]
ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project-name",
        "-p",
        help="Compose files: the project name when the file sets none (default: its "
        "directory's name, as docker compose).",
    ),
]
_PROJECT_LABEL = "com.docker.compose.project"


def is_compose_file(path: Path) -> bool:
    """Whether the file at ``path`` is a compose file (a top-level services: mapping)."""
    if str(path) == "-":
        return False  # stdin is read once, as an app file
    try:
        return is_compose(_read_text(path, str(path)))
    except SpecError:
        return False  # the app file reader says what is wrong with it


def _say(kind: str, problem: SpecProblem) -> None:
    err_console.print(safe(f"{kind}: {problem}"), soft_wrap=True)


def load(path: Path, project: str | None, ignore_unsupported: bool) -> Conversion:
    """The apps of the compose file at ``path``; its notes and (with
    ``ignore_unsupported``) the keys left out on stderr. Without it, raises ``SpecError``
    listing the keys fleet cannot honour, so nothing is stored."""
    source = str(path)
    text = _read_text(path, source)
    folder = path.resolve().parent
    dotenv = folder / ".env"

    def read_file(name: str) -> str:
        return (folder / name).read_text(encoding="utf-8")

    environ = compose_environ(os.environ, dotenv.read_text() if dotenv.is_file() else None)
    conversion = convert(
        text,
        source,
        project=project or os.environ.get("COMPOSE_PROJECT_NAME") or folder.name,
        environ=environ,
        read_file=read_file,
    )
    for note in conversion.notes:
        _say("note", note)
    if conversion.unsupported and not ignore_unsupported:
        hint = SpecProblem(
            source,
            0,
            "",
            None,
            f"{len(conversion.unsupported)} key(s) above cannot be honoured by fleet; nothing "
            "was stored. Change the file, or give --ignore-unsupported to go on without them",
        )
        raise SpecError([*conversion.unsupported, hint])
    for problem in conversion.unsupported:
        _say("ignored", problem)
    return conversion


def guard_project(client: FleetClient, conversion: Conversion) -> None:
    """Refuse to overwrite an app of the same name that another compose project, or no
    compose file, made: compose's service names are short and often the same (db, web)."""
    stored = {a.name: a for a in client.apps()}
    problems = []
    for spec in conversion.specs:
        if spec.name not in stored:
            continue
        labels = json.loads(stored[spec.name].spec_json).get("labels") or {}
        owner = labels.get(_PROJECT_LABEL)
        if owner != conversion.project:
            made = f"compose project {owner}" if owner else "an app file, not this compose project"
            problems.append(
                SpecProblem(
                    conversion.source,
                    0,
                    f"services.{spec.labels.get('com.docker.compose.service', spec.name)}",
                    None,
                    f"app {spec.name} exists already, made by {made} "
                    f"({conversion.project}): rename the service, or delete that app first",
                )
            )
    if problems:
        raise SpecError(problems)


def store_secrets(client: FleetClient, conversion: Conversion, dry_run: bool) -> set[str]:
    """Store each secret the file names that fleet lacks yet, from its file (beside the
    compose file) or variable, scoped to the apps that use it. A secret fleet has is left
    as it is (never overwritten); an external one it lacks is an error saying how to set
    it. Returns the secrets a dry run would have stored."""
    have = {s.name for s in client.secrets()}
    folder = Path(conversion.source).resolve().parent
    missing = []
    would: set[str] = set()
    for secret in conversion.secrets:
        if not secret.apps or secret.name in have:
            continue
        if secret.external:
            missing.append(f"secret {secret.name} is external but not stored: {secret.command()}")
            continue
        if secret.file is not None:
            try:
                value = (folder / secret.file).read_bytes()
            except OSError as exc:
                missing.append(f"cannot read secret {secret.key}'s file {secret.file}: {exc}")
                continue
        else:
            assert secret.environment is not None
            if secret.environment not in os.environ:
                missing.append(
                    f"secret {secret.key} comes from ${secret.environment}, which is not set"
                )
                continue
            value = os.environ[secret.environment].encode()
        if dry_run:
            err_console.print(safe(f"secret/{secret.name} would be created (dry run)"))
            would.add(secret.name)
            continue
        info = client.set_secret(secret.name, value, apps=list(secret.apps))
        err_console.print(
            safe(
                f"secret/{secret.name} created from {secret.file or '$' + str(secret.environment)}"
                f" (version {info.version}), for {','.join(secret.apps)}"
            )
        )
    if missing:
        fail("; ".join(missing))
    return would


def without_secrets(specs: list[AppSpec], names: set[str]) -> list[AppSpec]:
    """``specs`` with the env values of secrets ``names`` as placeholders: what a dry run
    sends, since the control plane refuses a reference to a secret it lacks."""
    out = []
    for spec in specs:
        env = {
            k: f"(secret {v.secret}, stored by the apply)"
            if isinstance(v, SecretRef) and v.secret in names
            else v
            for k, v in spec.env.items()
        }
        out.append(spec.model_copy(update={"env": env}))
    return out


def convert_command(
    filename: Annotated[Path, typer.Argument(metavar="COMPOSE_FILE", show_default=False)],
    ignore_unsupported: IgnoreOpt = False,
    project_name: ProjectOpt = None,
) -> None:
    """Print the fleet app file a compose file becomes.

    One YAML document per service, dependencies first; on stderr what did not map and
    the commands that store its secrets. Nothing is printed if a key cannot be honoured,
    unless --ignore-unsupported.

    Examples:
      fleet convert compose.yaml > app.yaml
      fleet convert compose.yaml --ignore-unsupported"""
    conversion = load(filename, project_name, ignore_unsupported)
    sys.stdout.write(conversion.yaml())
    for secret in conversion.secrets:
        if secret.apps:
            err_console.print(safe(f"secret {secret.key}: {secret.command()}"), soft_wrap=True)
