"""Reading app files: YAML (as docker compose reads it) to validated ``AppSpec``s, with
every problem reported at its file, document, field path and line; and, through
``AppFile.locate``, the problems the control plane finds later in the same specs."""

from __future__ import annotations

import difflib
import functools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import ErrorDetails

from fleet.errors import REQUEST, SpecError, SpecProblem
from fleet.spec._constraints import Constraint
from fleet.spec._docker import Logging, Ulimit
from fleet.spec._health import HealthCheck
from fleet.spec._ingress import Ingress
from fleet.spec._model import AppSpec
from fleet.spec._ports import PortSpec
from fleet.spec._quote import clean_text
from fleet.spec._quote import show as _show
from fleet.spec._resources import Resources
from fleet.spec._restart import RestartPolicy
from fleet.spec._update import UpdateStrategy

MAX_FILE_BYTES = 1 << 20  # the largest app file (or spec over the API) fleet reads
_NESTED_MODELS: dict[str, type[BaseModel]] = {
    "resources": Resources,
    "restart": RestartPolicy,
    "ports": PortSpec,
    "constraints": Constraint,
    "health": HealthCheck,
    "update": UpdateStrategy,
    "ingress": Ingress,
    "ulimits": Ulimit,
    "logging": Logging,
}
_EXPECTED = {
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
}


def _message(error: ErrorDetails) -> str:
    """A plain-words message for one pydantic error."""
    kind, loc = error["type"], error["loc"]
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return "required field is missing"
    if kind == "json_invalid":
        return f"invalid JSON: {error['ctx']['error'] if 'ctx' in error else error['msg']}"
    if kind == "extra_forbidden":
        field = clean_text(str(loc[-1]))
        model = AppSpec if len(loc) == 1 else _NESTED_MODELS.get(str(loc[0]), AppSpec)
        known = list(model.model_fields)
        close = difflib.get_close_matches(field, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown field {field!r}{hint}; known fields: {', '.join(known)}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_show(error['input'])}"
    return error["msg"]


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":
            continue  # the error is about the key just named
        name = clean_text(str(part))
        path += f"[{part}]" if isinstance(part, int) else f".{name}" if path else name
    return path


def _problems(
    error: ValidationError,
    source: str,
    document: int,
    line_of: Callable[[tuple[int | str, ...], bool], int | None],
) -> list[SpecProblem]:
    problems = []
    for e in error.errors(include_url=False):
        loc = e["loc"]
        at_key = e["type"] == "extra_forbidden" or loc[-1:] == ("[key]",)
        problems.append(
            SpecProblem(source, document, _path(loc), line_of(loc, at_key), _message(e))
        )
    return problems


def _node_line(root: yaml.Node, loc: tuple[int | str, ...], at_key: bool) -> int:
    """The 1-based line of the YAML node at ``loc``, or of its nearest ancestor found."""
    node = root
    parts = [p for p in loc if p != "[key]"]
    for i, part in enumerate(parts):
        found: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:  # the last duplicate wins, as in the loaded data
                if isinstance(key, yaml.ScalarNode) and key.value in (str(part), str(part).lower()):
                    found = key if at_key and i == len(parts) - 1 else value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            found = node.value[part] if 0 <= part < len(node.value) else None
        if found is None:
            break
        node = found
    return int(node.start_mark.line) + 1


def _duplicate_keys(
    node: yaml.Node, path: str = "", seen: set[int] | None = None
) -> Iterator[tuple[str, int]]:
    """(path, line) of every key repeated in its mapping: YAML loaders silently keep the last."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return  # an alias already walked (aliases can even make cycles)
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else ""
            here = f"{path}.{clean_text(name)}" if path else clean_text(name)
            if name and name in keys:
                yield here, key.start_mark.line + 1
            keys.add(name)
            yield from _duplicate_keys(value, here, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{i}]", seen)


class _Loader(yaml.SafeLoader):
    """A SafeLoader reading scalars like YAML 1.2 (as docker compose does): only true/false are
    booleans, so ``restart: no`` and ``DEBUG: yes`` stay strings and ``"22:22"`` is no integer."""


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float", "timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    # YAML 1.2: "010" is ten (1.1 read it as octal), "0o10" is eight.
    assert isinstance(node, yaml.ScalarNode)
    text = str(loader.construct_scalar(node))
    base = {"0o": 8, "0x": 16}.get(text[:2], 10)
    try:
        return int(text[2:] if base != 10 else text, base)
    except ValueError:  # beyond Python's limit on digits: no field takes such a number
        raise yaml.constructor.ConstructorError(
            None, None, "this number has far too many digits", node.start_mark
        ) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _yaml_problem(exc: Exception, text: str, source: str, document: int) -> SpecProblem:
    if isinstance(exc, RecursionError):
        return SpecProblem(source, document, "", None, "the YAML is nested too deeply")
    line = None
    if isinstance(exc, yaml.reader.ReaderError):  # a control character, before any parsing
        line = text.count("\n", 0, exc.position) + 1
        detail = f"character #x{exc.character:04x} is not allowed in YAML"
    elif isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        context = exc.context or ""
        if context and exc.context_mark and exc.context_mark.line != getattr(mark, "line", None):
            context += f" started on line {exc.context_mark.line + 1}"
        detail = ", ".join(t for t in (context, exc.problem) if t)
    else:
        detail = str(exc)
    return SpecProblem(source, document, "", line, f"invalid YAML: {detail}")


def _too_large(source: str, what: str = "file") -> SpecError:
    message = f"the {what} is larger than {MAX_FILE_BYTES >> 20} MiB"
    return SpecError([SpecProblem(source, 0, "", None, message)])


def _expands_beyond(data: object, limit: int) -> bool:
    """True once the document, with every alias expanded, passes ``limit`` characters;
    stops counting there, so an alias bomb costs no more than ``limit`` steps."""
    total = 0
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
            total += 2 * len(item)
        elif isinstance(item, list):
            stack.extend(item)
            total += len(item)
        else:
            total += len(item) if isinstance(item, str) else 8
        if total > limit:
            return True
    return False


def _documents(
    text: str, source: str
) -> tuple[list[tuple[int, yaml.Node, object]], list[SpecProblem]]:
    """Every document as (1-based index, node, data); YAML errors end the reading."""
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        return [], [_yaml_problem(exc, text, source, 1)]
    documents: list[tuple[int, yaml.Node, object]] = []
    try:
        index = 0
        while True:
            index += 1
            try:
                if not loader.check_node():
                    return documents, []
                node = loader.get_node()
                assert node is not None  # check_node() said a document follows
                data = loader.construct_document(node)
            except (yaml.YAMLError, RecursionError) as exc:
                return documents, [_yaml_problem(exc, text, source, index)]
            if _expands_beyond(data, MAX_FILE_BYTES):
                message = "this document expands to more than 1 MiB (YAML aliases?)"
                line = node.start_mark.line + 1
                return documents, [SpecProblem(source, index, "", line, message)]
            documents.append((index, node, data))
    finally:
        loader.dispose()


_LOC_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _loc(path: str) -> tuple[int | str, ...]:
    """A field path as ``SpecProblem`` writes it (``volumes[1]``, ``resources.memory``)
    back to the parts ``_node_line`` walks."""
    return tuple(int(i) if i else name for i, name in _LOC_PART.findall(path))


@dataclass(frozen=True)
class AppFile:
    """The apps of one app file and where each came from: the control plane names a
    problem by the app's place in the request (``REQUEST``, document i: the i-th of
    ``specs``) and a field path; ``locate`` puts it at its file, document and line."""

    source: str
    specs: list[AppSpec]
    origins: list[tuple[int, yaml.Node]]  # each spec's document and its YAML node

    @classmethod
    def read(cls, path: str | Path) -> AppFile:
        """The apps in a YAML file ("-" reads stdin); raise ``SpecError`` on any problem."""
        source = "<stdin>" if str(path) == "-" else str(path)
        return cls.parse(_read_text(path, source), source)

    @classmethod
    def parse(cls, text: str, source: str = "<stdin>") -> AppFile:
        """The apps in a YAML text; raise one ``SpecError`` with all problems found."""
        return _load(text, source)

    def locate(self, problem: SpecProblem) -> SpecProblem:
        """``problem``, found in a request of ``specs``, at its place in this file."""
        if problem.source != REQUEST:
            return problem
        if not 1 <= problem.document <= len(self.origins):
            return replace(problem, source=self.source, document=0)
        document, node = self.origins[problem.document - 1]
        line = _node_line(node, _loc(problem.path), False)
        return SpecProblem(self.source, document, problem.path, line, problem.message)

    def located(self, problems: list[SpecProblem]) -> list[SpecProblem]:
        """Every problem located, in the order of the file."""
        found = [self.locate(p) for p in problems]
        return sorted(found, key=lambda p: (p.source != self.source, p.document, p.line or 0))


def load_documents(text: str, source: str = "<stdin>") -> list[AppSpec]:
    """Validate every app in a YAML text; raise one ``SpecError`` with all problems found."""
    return _load(text, source).specs


def _load(text: str, source: str) -> AppFile:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise _too_large(source)
    documents, problems = _documents(text, source)
    specs: list[AppSpec] = []
    origins: list[tuple[int, yaml.Node]] = []
    names: dict[str, tuple[int, int]] = {}  # app name -> (document, line) of its first use
    for document, node, data in documents:
        if data is None:
            continue  # an empty document, e.g. after a trailing "---"
        start = node.start_mark.line + 1
        if not isinstance(data, dict):
            message = f"expected a mapping of app fields (name, image, ...), got {_show(data)}"
            problems.append(SpecProblem(source, document, "", start, message))
            continue
        for path, line in _duplicate_keys(node):
            message = "duplicate key: YAML would silently keep only the last one"
            problems.append(SpecProblem(source, document, path, line, message))
        try:
            spec = AppSpec.model_validate(data)
        except ValidationError as exc:
            problems.extend(_problems(exc, source, document, functools.partial(_node_line, node)))
            continue
        line = _node_line(node, ("name",), False)
        if spec.name in names:
            first_document, first_line = names[spec.name]
            message = (
                f"the app name {spec.name!r} is already used by document {first_document} "
                f"(line {first_line}); app names must be unique"
            )
            problems.append(SpecProblem(source, document, "name", line, message))
            continue
        names[spec.name] = (document, line)
        specs.append(spec)
        origins.append((document, node))
    if not problems and not specs:
        message = "no apps in the file: expected YAML documents with at least name and image"
        problems.append(SpecProblem(source, 0, "", None, message))
    if problems:
        problems.sort(key=lambda p: (p.document, p.line or 0))
        raise SpecError(problems)
    return AppFile(source, specs, origins)


def load_file(path: str | Path) -> list[AppSpec]:
    """Load the apps in a YAML file ("-" reads stdin); raise ``SpecError`` on any problem."""
    return AppFile.read(path).specs


def _read_text(path: str | Path, source: str) -> str:
    try:
        if str(path) == "-":
            text = sys.stdin.read(MAX_FILE_BYTES + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
            if len(raw) > MAX_FILE_BYTES:
                raise _too_large(source)
            text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        message = f"the file is not UTF-8 text (bad byte at offset {exc.start})"
        raise SpecError([SpecProblem(source, 0, "", None, message)]) from None
    except OSError as exc:
        message = f"cannot read the app file: {exc.strerror or exc}"
        raise SpecError([SpecProblem(source, 0, "", None, message)]) from None
    return text


def parse_spec_json(text: str | bytes, source: str = REQUEST) -> AppSpec:
    """Validate one JSON app spec, as sent over the API; raise ``SpecError`` with field paths."""
    try:
        data = text.encode() if isinstance(text, str) else text
    except UnicodeEncodeError:
        raise SpecError(
            [SpecProblem(source, 1, "", None, "the spec is not valid UTF-8 text")]
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(source, "spec")
    try:
        return AppSpec.model_validate_json(data)
    except ValidationError as exc:
        raise SpecError(_problems(exc, source, 1, lambda loc, at_key: None)) from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of an app document as users write it, for editors and linters."""
    schema = AppSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fleet app"
    return schema
