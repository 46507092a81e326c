"""A whole compose file to fleet app documents: the top-level volumes, networks and secrets
named as compose names them, every service mapped (``_service``), the apps ordered so a
service's dependencies come first, and each app validated as an app file's would be."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from fleet.errors import SpecError, SpecProblem
from fleet.spec._files import (
    MAX_FILE_BYTES,
    AppFile,
    _documents,
    _duplicate_keys,
    _Loader,
    _message,
)
from fleet.spec._model import AppSpec
from fleet.spec._quote import show
from fleet.spec.compose._base import Project, ServiceApp
from fleet.spec.compose._interpolate import InterpolationError, Interpolator, parse_env_file
from fleet.spec.compose._report import Path, Report, path_text
from fleet.spec.compose._service import map_service
from fleet.spec.compose._values import dns_name

__all__ = ["ComposeSecret", "Conversion", "compose_environ", "convert", "is_compose"]

_TOP_LEVEL = {"version", "name", "services", "volumes", "networks", "secrets"}


@dataclass(frozen=True)
class ComposeSecret:
    """A top-level compose secret and the fleet secret it becomes."""

    key: str  # its compose name
    name: str  # the fleet secret (fleet secrets set NAME)
    file: str | None  # file: its path as written (beside the compose file)
    environment: str | None  # environment: the variable that holds it
    external: bool  # external: stored already
    apps: tuple[str, ...]  # the apps that use it (its scope)

    def command(self) -> str:
        """How a user stores it by hand."""
        scope = f"--apps {','.join(self.apps)}" if self.apps else "--all-apps"
        if self.file is not None:
            return f"fleet secrets set {self.name} --from-file {self.file} {scope}"
        if self.environment is not None:
            return f'printf %s "${self.environment}" | fleet secrets set {self.name} {scope}'
        return f"fleet secrets set {self.name} {scope}"


@dataclass(frozen=True)
class Conversion:
    """A compose file as fleet apps (in apply order: dependencies first), and what did
    not map: ``unsupported`` keys (nothing may be stored unless the user ignores them)
    and ``notes`` (mapped, with a meaning that differs a little)."""

    source: str
    project: str
    documents: list[dict[str, Any]]
    specs: list[AppSpec]
    unsupported: list[SpecProblem]
    notes: list[SpecProblem]
    secrets: list[ComposeSecret]
    origins: list[tuple[int, yaml.Node]]

    def app_file(self) -> AppFile:
        """The apps as an app file, to place the control plane's problems in the compose file."""
        return AppFile(self.source, self.specs, self.origins)

    def yaml(self) -> str:
        """The app documents as one multi-document fleet app file."""
        return "---\n".join(
            yaml.safe_dump(d, sort_keys=False, allow_unicode=True) for d in self.documents
        )


def is_compose(text: str) -> bool:
    """Whether ``text`` is a compose file: its (first) document has a ``services`` mapping
    (no app file has that field)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        try:
            data = next(yaml.safe_load_all(text), None)
        except yaml.YAMLError:
            return False
    return isinstance(data, dict) and isinstance(data.get("services"), dict)


def compose_environ(environ: Mapping[str, str], dotenv: str | None) -> dict[str, str]:
    """The variables interpolation sees: the ``.env`` file's, overridden by the
    environment's (as compose does)."""
    values, _bad = parse_env_file(dotenv or "")
    return {**{k: v for k, v in values.items() if v is not None}, **environ}


def _interpolate(data: object, path: Path, substitute: Interpolator, report: Report) -> object:
    if isinstance(data, str):
        before = len(substitute.unset)
        try:
            text = substitute(data)
        except InterpolationError as exc:
            report.error(path, str(exc))
            return data
        for name in substitute.unset[before:]:
            report.note(path, f"variable {name} is not set: it became an empty string")
        return text
    if isinstance(data, dict):
        return {k: _interpolate(v, (*path, str(k)), substitute, report) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate(v, (*path, i), substitute, report) for i, v in enumerate(data)]
    return data


def _project_name(data: dict[str, Any], project: str, report: Report) -> str:
    name = data.get("name", project)
    # Compose's normalization: lowercase, letters, digits, '_' and '-'.
    normal = re.sub(r"[^a-z0-9_-]", "", str(name).lower()).lstrip("_-")
    if not normal or not dns_name(normal):
        where: Path = ("name",) if "name" in data else ()
        report.error(
            where, f"cannot make a project name of {show(name)}: set name: at the top of the file"
        )
        return "compose"
    return normal


def _volumes(data: dict[str, Any], project: str, report: Report) -> dict[str, str]:
    declared = data.get("volumes") or {}
    if not isinstance(declared, dict):
        report.error(("volumes",), "expected a mapping of volume names")
        return {}
    names: dict[str, str] = {}
    for key, settings in declared.items():
        settings = settings or {}
        where: Path = ("volumes", key)
        if not isinstance(settings, dict):
            report.error(where, "expected a mapping of volume settings (or nothing)")
            continue
        for name, value in settings.items():
            if name == "driver" and value == "local":
                continue
            if name not in ("name", "external"):
                report.unsupported(
                    (*where, name),
                    "fleet makes plain local volumes on each host that runs the app, with no "
                    "driver, options or labels",
                )
        # As compose names it, so a host's existing compose volume is found again.
        default = key if settings.get("external") else f"{project}_{key}"
        names[key] = str(settings.get("name", default))
    return names


def _networks(data: dict[str, Any], project: str, report: Report) -> dict[str, str]:
    declared = data.get("networks") or {}
    if not isinstance(declared, dict):
        report.error(("networks",), "expected a mapping of network names")
        declared = {}
    names = {"default": dns_name(f"{project}-default")}
    for key, settings in declared.items():
        settings = settings or {}
        where: Path = ("networks", key)
        if not isinstance(settings, dict):
            report.error(where, "expected a mapping of network settings (or nothing)")
            continue
        for name, value in settings.items():
            if name == "driver" and value == "bridge":
                continue
            if name == "driver":
                reason = (
                    f"fleet's networks are bridges on each host, not {value}: nothing "
                    "crosses hosts (reach other hosts' apps through the ingress or "
                    "published ports)"
                )
            elif name == "external":
                reason = "fleet makes and names its own networks (fleet-NAME) on each host"
            else:
                reason = "fleet takes no settings for a network"
            if name != "name":
                report.unsupported((*where, name), reason)
        name = dns_name(str(settings.get("name", f"{project}-{key}")))
        if not name:
            report.error(where, f"cannot make a fleet network name of {key!r}")
            continue
        names[str(key)] = name
    return names


def _secrets(data: dict[str, Any], report: Report) -> dict[str, tuple[str, dict[str, Any]]]:
    declared = data.get("secrets") or {}
    if not isinstance(declared, dict):
        report.error(("secrets",), "expected a mapping of secret names")
        return {}
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, settings in declared.items():
        where: Path = ("secrets", key)
        if not isinstance(settings, dict):
            report.error(where, "expected file:, environment: or external:")
            continue
        for name in settings:
            if name not in ("file", "environment", "external", "name"):
                report.unsupported((*where, name), "fleet secrets have a value and a scope only")
        sources = [s for s in ("file", "environment", "external") if settings.get(s)]
        wrong = [
            s for s in ("file", "environment") if s in sources and not isinstance(settings[s], str)
        ]
        if wrong:
            report.error((*where, wrong[0]), f"expected {wrong[0]} as text")
        elif len(sources) != 1:
            report.error(where, "expected exactly one of file:, environment: or external: true")
            continue
        name = dns_name(str(settings.get("name", key)))
        if not name:
            report.error(where, f"cannot make a fleet secret name (a DNS label) of {key!r}")
            continue
        found[str(key)] = (name, settings)
    return found


def _services(data: dict[str, Any], report: Report) -> dict[str, str]:
    services: dict[str, str] = {}
    used: dict[str, str] = {}
    for key in data["services"]:
        name = dns_name(str(key))
        where: Path = ("services", key)
        if not name:
            report.error(where, f"cannot make an app name (a DNS label) of {show(key)}")
            continue
        if name in used:
            report.error(where, f"services {used[name]} and {key} would both be app {name}")
            continue
        if name != key:
            report.note(where, f"becomes app {name}: other apps reach it by that name, not {key}")
        used[name] = str(key)
        services[str(key)] = name
    return services


def _order(mapped: list[ServiceApp], report: Report) -> list[ServiceApp]:
    """Dependencies first, otherwise in the file's order; a cycle is an error."""
    by_key = {s.key: s for s in mapped}
    done: list[ServiceApp] = []
    state: dict[str, str] = {}

    def visit(service: ServiceApp, chain: list[str]) -> None:
        if state.get(service.key) == "done":
            return
        if state.get(service.key) == "visiting":
            cycle = " -> ".join([*chain[chain.index(service.key) :], service.key])
            report.error(("services", service.key, "depends_on"), f"a dependency cycle: {cycle}")
            return
        state[service.key] = "visiting"
        for name in service.depends_on:
            if name in by_key:
                visit(by_key[name], [*chain, service.key])
        state[service.key] = "done"
        done.append(service)

    for service in mapped:
        visit(service, [])
    return done


def _unmerged(text: str, node: yaml.Node) -> yaml.Node:
    """The document's node as written: constructing the data merged every ``<<: *anchor``
    into the mappings' nodes, where an override of a merged key would look repeated."""
    for document in yaml.compose_all(text, Loader=_Loader):
        if isinstance(document, yaml.MappingNode):
            return document
    return node


def _service_node(root: yaml.Node, key: str) -> yaml.Node:
    """The YAML node of service ``key``, where the control plane's problems of its app go."""
    for name, value in root.value if isinstance(root, yaml.MappingNode) else []:
        if name.value == "services" and isinstance(value, yaml.MappingNode):
            for service, settings in value.value:
                if service.value == key:
                    found: yaml.Node = settings
                    return found
    return root


def _validate(service: ServiceApp, report: Report, failed: bool) -> AppSpec | None:
    """The app as fleet validates it; its problems at the compose keys they came from
    (a service with errors already has its missing fields left unsaid: they follow)."""
    try:
        return AppSpec.model_validate(service.app)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            field = str(loc[0]) if loc else ""
            where = service.origins.get(field, ("services", service.key))
            # The field's own place in the compose file where it kept compose's shape.
            rest = tuple(p for p in loc[1:] if p != "[key]")
            if field and rest and service.origins.get(field, ())[-1:] == (field,):
                where = (*where, *rest)
            said = {p.path for p in report.errors}
            if (failed and where == ("services", service.key)) or path_text(where) in said:
                continue
            message = _message(error)
            if field and service.origins.get(field, ())[-1:] != (field,):
                message = f"(as fleet's {field}) {message}"
            report.error(where, message)
        return None


def convert(
    text: str,
    source: str = "<stdin>",
    *,
    project: str = "compose",
    environ: Mapping[str, str] | None = None,
    read_file: Callable[[str], str] | None = None,
) -> Conversion:
    """The fleet apps of a compose file's text. ``project`` is the project name when the
    file sets none (compose uses the file's directory name); ``environ`` holds the
    variables for interpolation (``compose_environ``); ``read_file`` reads a file beside
    the compose file (``env_file``). Raises one ``SpecError`` listing every error; keys
    fleet cannot honour are ``Conversion.unsupported``, for the caller to refuse or list."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise SpecError([SpecProblem(source, 0, "", None, "the file is larger than 1 MiB")])
    documents, problems = _documents(text, source)
    if problems:
        raise SpecError(problems)
    documents = [d for d in documents if d[2] is not None]
    if len(documents) != 1 or not isinstance(documents[0][2], dict):
        message = "expected one YAML document with a services: mapping (a compose file)"
        raise SpecError([SpecProblem(source, 0, "", None, message)])
    _index, node, raw = documents[0]
    assert isinstance(raw, dict)
    node = _unmerged(text, node)
    report = Report(source, node)
    for path, line in _duplicate_keys(node):
        message = "duplicate key: YAML would silently keep only the last one"
        report.errors.append(SpecProblem(source, 0, path, line, message))
    if not isinstance(raw.get("services"), dict) or not raw["services"]:
        report.error(("services",), "expected a mapping of services")
        raise SpecError(report.errors)
    substitute = Interpolator(dict(environ or {}))
    data = _interpolate(raw, (), substitute, report)
    assert isinstance(data, dict)
    for key in data:
        if key == "configs":
            report.unsupported(
                (key,), "fleet has no config files for containers: use the image or env"
            )
        elif key not in _TOP_LEVEL and not str(key).startswith("x-"):
            report.error((key,), f"unknown top-level key {show(key)} of a compose file")
    name = _project_name(data, project, report)
    secrets = _secrets(data, report)
    services = _services(data, report)

    def no_file(path: str) -> str:
        raise OSError(f"no file reader given for {path}")

    shared = Project(
        name=name,
        volumes=_volumes(data, name, report),
        networks=_networks(data, name, report),
        secrets={k: v[0] for k, v in secrets.items()},
        services=services,
        environ=dict(environ or {}),
        read_file=read_file or no_file,
    )
    mapped: list[ServiceApp] = []
    for key, settings in data["services"].items():
        if key not in services:
            continue
        if not isinstance(settings, dict):
            report.error(("services", key), "expected a mapping of service settings")
            continue
        mapped.append(map_service(str(key), settings, shared, report))
    ordered = _order(mapped, report)
    failed = {p.path.split(".")[1].split("[")[0] for p in report.errors if p.path.count(".")}
    checked = [_validate(m, report, m.key in failed) for m in ordered]
    specs = [s for s in checked if s is not None]
    if report.errors:
        raise SpecError(sorted(report.errors, key=lambda p: p.line or 0))
    used: dict[str, list[str]] = {}
    for service in ordered:
        for key in service.secrets:
            used.setdefault(key, []).append(service.app["name"])
    compose_secrets = [
        ComposeSecret(
            key=key,
            name=fleet_name,
            file=settings.get("file"),
            environment=settings.get("environment"),
            external=bool(settings.get("external")),
            apps=tuple(dict.fromkeys(used.get(key, []))),
        )
        for key, (fleet_name, settings) in secrets.items()
    ]
    origins = [(1, _service_node(node, m.key)) for m in ordered]
    return Conversion(
        source=source,
        project=name,
        documents=[m.app for m in ordered],
        specs=specs,
        unsupported=sorted(report.unsupported_keys, key=lambda p: p.line or 0),
        notes=sorted(report.notes, key=lambda p: p.line or 0),
        secrets=compose_secrets,
        origins=origins,
    )
