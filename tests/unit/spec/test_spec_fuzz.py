"""Fuzzing the app-file parser (hypothesis): random text and bytes, random YAML built from
JSON-like values, mutations of a valid spec, YAML bombs and files around the 1 MiB limit.

Every call of ``load_documents``, ``load_file`` or ``parse_spec_json`` must either return
specs that hold fleet's invariants (a DNS-label name, no reserved label key, an exact JSON
round trip through ``parse_spec_json``) or raise ``SpecError`` whose every problem has a
message and a document number; never any other exception, never a hang.

The tests at the end of the file pin bugs this fuzzing found, since fixed.
"""

from __future__ import annotations

import json
import re
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker.auth import resolve_repository_name
from docker.utils import parse_repository_tag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.errors import SpecError, SpecProblem
from fleet.spec import (
    DNS_LABEL,
    MAX_FILE_BYTES,
    RESERVED_LABEL_PREFIX,
    AppSpec,
    json_schema,
    load_documents,
    load_file,
    parse_spec_json,
)
from tests.unit.spec.builders import FIELD_NAMES, VALID, keys, mutations, scalars

SOURCE = "fuzz.yaml"
FAST = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
FILES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# YAML's line breaks, for the upper bound of a reported line number.
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


# ---------------------------------------------------------------- the checks


def check_specs(specs: list[AppSpec]) -> None:
    """What every accepted spec must satisfy."""
    assert specs, "load_documents returned no spec and no error"
    assert len({s.name for s in specs}) == len(specs), "two specs with one name"
    for spec in specs:
        assert isinstance(spec, AppSpec)
        assert DNS_LABEL.match(spec.name), spec.name
        assert not any(k.startswith(RESERVED_LABEL_PREFIX) for k in spec.labels), spec.labels
        assert parse_spec_json(spec.model_dump_json()) == spec


def check_error(error: SpecError, source: str, *, max_line: int | None, json: bool = False) -> None:
    """What every refusal must satisfy: problems that say what and where."""
    assert error.problems, "a SpecError without problems"
    assert str(error)
    for problem in error.problems:
        assert isinstance(problem, SpecProblem)
        assert problem.source == source
        assert isinstance(problem.message, str) and problem.message.strip(), problem
        assert "Traceback" not in problem.message
        assert isinstance(problem.document, int) and problem.document >= 0, problem
        if problem.document == 0:  # whole-file problems name no field
            assert problem.path == "", problem
        if json:
            assert problem.document in (0, 1) and problem.line is None, problem
        elif problem.line is not None:
            assert max_line is not None and 1 <= problem.line <= max_line, (problem, max_line)


def _max_line(text: str) -> int:
    return len(_LINE_BREAK.findall(text)) + 1


def check_load(text: str, source: str = SOURCE) -> list[AppSpec] | SpecError:
    try:
        specs = load_documents(text, source)
    except SpecError as error:
        check_error(error, source, max_line=_max_line(text))
        return error
    check_specs(specs)
    return specs


def check_file(path: Path) -> list[AppSpec] | SpecError:
    try:
        specs = load_file(path)
    except SpecError as error:
        text = path.read_bytes().decode("utf-8", "replace")
        check_error(error, str(path), max_line=_max_line(text))
        return error
    check_specs(specs)
    return specs


def check_json(text: str | bytes) -> AppSpec | SpecError:
    try:
        spec = parse_spec_json(text)
    except SpecError as error:
        check_error(error, "<request>", max_line=None, json=True)
        return error
    check_specs([spec])
    return spec


# ---------------------------------------------------------------- strategies

ALL_CHARACTERS = st.characters(exclude_categories=())  # surrogates and controls included
YAML_CHARACTERS = st.sampled_from(list(":-?[]{},&*!|>'\"%@`#\n\t \\.0123456789abcxyz/\0"))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@st.composite
def documents(draw: st.DrawFn) -> object:
    """A mapping mixing the real fields (often with valid values) and random keys."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # not even a mapping, sometimes
    doc: dict[object, object] = {}
    for key in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=10, unique=True)):
        valid = st.just(VALID[key]) if key in VALID else st.nothing()
        doc[key] = draw(st.one_of(valid, valid, json_values))
    doc.update(draw(st.dictionaries(keys, json_values, max_size=2)))
    return doc


def _dump(docs: list[object]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------- (a), (b): text and bytes


@FAST
@given(st.text(ALL_CHARACTERS, max_size=300))
def test_arbitrary_text(text: str) -> None:
    check_load(text)


@FAST
@given(st.text(YAML_CHARACTERS, max_size=200))
def test_arbitrary_yaml_punctuation(text: str) -> None:
    check_load(text)


@FAST
@given(st.text(YAML_CHARACTERS, max_size=120))
def test_valid_spec_followed_by_garbage(garbage: str) -> None:
    check_load(yaml.safe_dump(VALID, sort_keys=False) + garbage)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decoded(data: bytes) -> None:
    check_load(data.decode("utf-8", errors="replace"))


@FILES
@given(data=st.binary(max_size=300), bom=st.booleans())
def test_arbitrary_bytes_as_a_file(tmp_path: Path, data: bytes, bom: bool) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    check_file(path)


# ---------------------------------------------------------------- (c): structured YAML


@FAST
@given(st.lists(documents(), min_size=1, max_size=3))
def test_structured_yaml(docs: list[object]) -> None:
    check_load(_dump(docs))


@FAST
@given(documents())
def test_structured_yaml_and_json_agree(doc: object) -> None:
    """One document as YAML and as JSON: both accept the same spec or both refuse."""
    try:
        text = json.dumps(doc)
    except (TypeError, ValueError):
        return  # non-string keys: no JSON
    from_json = check_json(text)
    from_yaml = check_load(_dump([doc]))
    if isinstance(from_json, AppSpec):
        assert from_yaml == [from_json]
    else:
        assert isinstance(from_yaml, SpecError)


# ---------------------------------------------------------------- (d): mutations of a valid spec


def test_the_valid_spec_is_valid() -> None:
    assert [s.name for s in load_documents(yaml.safe_dump(VALID), SOURCE)] == ["web"]
    assert parse_spec_json(json.dumps(VALID)).name == "web"


@settings(FAST, max_examples=200)
@given(mutations())
def test_mutations_of_a_valid_spec(mutation: tuple[dict[str, Any], bool, str]) -> None:
    doc, must_refuse, what = mutation
    from_yaml = check_load(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    from_json = check_json(json.dumps(doc))
    if must_refuse:
        assert isinstance(from_yaml, SpecError), f"accepted from YAML: {what}"
        assert isinstance(from_json, SpecError), f"accepted from JSON: {what}"
    else:
        assert isinstance(from_yaml, SpecError) == isinstance(from_json, SpecError), what


# Pieces of image references, so that some random strings of them are references.
IMAGE_PIECES = ["a", "b0", "Z", "-", "--", ".", "_", "__", ":", "::", "/", "//", "@", "5000"]
IMAGE_PIECES += ["localhost", "reg.io", "[::1]", "sha256:", "0123456789abcdef" * 4, "v1.2"]
IMAGE_PATTERN = json_schema()["properties"]["image"]["pattern"]


@settings(FAST, max_examples=300)
@given(st.lists(st.sampled_from(IMAGE_PIECES), min_size=1, max_size=8).map("".join))
def test_image_references(image: str) -> None:
    """A refusal names the field and says what is wrong; what is accepted, the schema and
    docker-py (which pulls it) accept too, and docker-py splits it back into the same text."""
    result = check_json(json.dumps({**VALID, "image": image}))
    if isinstance(result, SpecError):
        [problem] = result.problems
        assert problem.path == "image", problem
        assert " is not an image reference: " in problem.message, problem.message
        return
    assert re.search(IMAGE_PATTERN, image), image
    repository, tag = parse_repository_tag(image)
    assert (f"{repository}{'@' if '@' in image else ':'}{tag}" if tag else repository) == image
    resolve_repository_name(repository)


@pytest.mark.parametrize("field", ["name", "image"])
def test_every_document_missing_a_required_field_is_reported(field: str) -> None:
    """Three documents, the second one broken: the problem names document 2 and the field."""
    broken = {k: v for k, v in VALID.items() if k != field}
    docs = [VALID, broken, {**VALID, "name": "other"}]
    with pytest.raises(SpecError) as raised:
        load_documents(_dump(docs), SOURCE)
    check_error(raised.value, SOURCE, max_line=_max_line(_dump(docs)))
    assert [(p.document, p.path) for p in raised.value.problems] == [(2, field)]


# ---------------------------------------------------------------- (e): YAML bombs

BOMB_SECONDS = 5.0  # generous: the suite may share the machine; a hang takes forever
BOMB_BYTES = 64 << 20


def _laughs(depth: int = 9, width: int = 9) -> list[str]:
    """Anchored lists a0..a{depth}, each holding ``width`` aliases of the one before."""
    lines = ["&a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, depth + 1):
        lines.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return lines


def _bomb_in(field: str) -> str:
    """The anchors inside ``command`` (a known field), then the last alias used in ``field``."""
    anchors = "[" + ", ".join(_laughs()) + "]"
    use = {"env": "{A: *a9}", "labels": "{a: *a9}", "resources": "{cpu: *a9}"}.get(field, "*a9")
    return f"name: web\nimage: x\ncommand: {anchors}\n{field}: {use}\n"


BOMBS: dict[str, Callable[[], str]] = {
    "laughs at the top": lambda: "- " + "\n- ".join(_laughs()) + "\n",
    "laughs in an unknown field": lambda: "name: web\nimage: x\nx: [" + ", ".join(_laughs()) + "]",
    **{
        f"laughs used in {f}": (lambda f=f: _bomb_in(f))
        for f in ["name", "image", "command", "env", "labels", "ports", "constraints", "resources"]
    },
    "laughs in many documents": lambda: "---\n".join(
        f"name: a{i}\nimage: x\ncommand: [{', '.join(_laughs())}]\n" for i in range(20)
    ),
    "self-referencing list": lambda: "name: web\nimage: x\ncommand: &a [*a, *a]\nports: &b [*b]\n",
    "self-referencing mapping": lambda: "name: web\nimage: x\nenv: &a {A: *a}\nlabels: &b {b: *b}",
    "self-referencing document": lambda: "&a {name: web, image: x, command: *a, x: *a}\n",
    "deep flow list": lambda: "[" * 5_000 + "]" * 5_000,
    "deep flow list in command": lambda: "name: web\nimage: x\ncommand: " + "[" * 5_000,
    "deep flow mapping in env": lambda: "name: web\nimage: x\nenv: " + "{a: " * 20_000,
    "deep block lists": lambda: "".join(" " * i + "-\n" for i in range(1_400)),
    "deep block mappings": lambda: "".join(" " * i + "a:\n" for i in range(1_400)),
    "many empty documents": lambda: "---\n" * 20_000,
    "many anchors": lambda: "[" + ", ".join(f"&a{i} x" for i in range(10_000)) + "]",
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_yaml_bombs_are_refused_quickly(name: str) -> None:
    """Refused, in bounded time; alias bombs also in bounded memory (tracemalloc, which
    would slow the big nested ones too much to time them)."""
    text = BOMBS[name]()
    assert len(text.encode()) <= MAX_FILE_BYTES, "the bomb itself must fit the limit"
    traced = "*" in text
    if traced:
        tracemalloc.start()
    started = time.process_time()  # CPU time: other work on the machine does not count
    try:
        result = check_load(text)
        elapsed = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1] if traced else 0
    finally:
        tracemalloc.stop()
    assert isinstance(result, SpecError), f"{name} was accepted"
    assert elapsed < BOMB_SECONDS, f"{name} took {elapsed:.1f}s"
    assert peak < BOMB_BYTES, f"{name} allocated {peak >> 20} MiB"


# ---------------------------------------------------------------- (f): files around 1 MiB


def _padded(head: bytes, size: int, filler: bytes = b"#") -> bytes:
    """``head`` then a comment padding the file to exactly ``size`` bytes."""
    body = head + b"#"
    body += filler * ((size - len(body) - 1) // len(filler))
    body += b"#" * (size - len(body) - 1) + b"\n"
    assert len(body) == size
    return body


_SPEC_BYTES = yaml.safe_dump(VALID, sort_keys=False).encode()


@pytest.mark.parametrize(
    ("what", "content", "accepted"),
    [
        ("exactly 1 MiB", _padded(_SPEC_BYTES, MAX_FILE_BYTES), True),
        ("1 MiB of multibyte text", _padded(_SPEC_BYTES, MAX_FILE_BYTES, "é".encode()), True),
        ("1 MiB with a BOM", b"\xef\xbb\xbf" + _padded(_SPEC_BYTES, MAX_FILE_BYTES - 3), True),
        ("1 MiB + 1 byte", _padded(_SPEC_BYTES, MAX_FILE_BYTES + 1), False),
        ("1 MiB + 1 multibyte", _padded(_SPEC_BYTES, MAX_FILE_BYTES + 1, "é".encode()), False),
        ("8 MiB", _padded(_SPEC_BYTES, 8 * MAX_FILE_BYTES), False),
        ("1 MiB of NUL", b"\0" * MAX_FILE_BYTES, False),
        ("invalid UTF-8", _SPEC_BYTES + b"# \xff\xfe\n", False),
        ("UTF-16", _SPEC_BYTES.decode().encode("utf-16"), False),
    ],
)
def test_files_at_and_above_the_limit(
    tmp_path: Path, what: str, content: bytes, accepted: bool
) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    result = check_file(path)
    assert time.monotonic() - started < 5.0, what
    if accepted:
        assert isinstance(result, list) and [s.name for s in result] == ["web"], what
    else:
        assert isinstance(result, SpecError), what
        if len(content) > MAX_FILE_BYTES:
            assert [(p.document, p.line) for p in result.problems] == [(0, None)], what
            assert "larger than 1 MiB" in result.problems[0].message


def test_text_above_the_limit_is_refused_before_parsing() -> None:
    started = time.monotonic()
    for text in ["#" * MAX_FILE_BYTES + "\n", "é" * (MAX_FILE_BYTES // 2 + 1), "[" * 4_000_000]:
        error = check_load(text)
        assert isinstance(error, SpecError)
        assert [p.document for p in error.problems] == [0]
    assert time.monotonic() - started < 1.0


def test_unreadable_paths_are_spec_errors(tmp_path: Path) -> None:
    for path in [tmp_path / "missing.yaml", tmp_path]:
        with pytest.raises(SpecError) as raised:
            load_file(path)
        assert [p.document for p in raised.value.problems] == [0], path


# ---------------------------------------------------------------- parse_spec_json

JSON_TEXT = st.characters(codec="utf-8")  # what a protobuf string can carry


@FAST
@given(st.text(JSON_TEXT, max_size=200))
def test_parse_spec_json_arbitrary_text(text: str) -> None:
    check_json(text)


@FAST
@given(st.binary(max_size=200))
def test_parse_spec_json_arbitrary_bytes(data: bytes) -> None:
    check_json(data)


@FAST
@given(json_values)
def test_parse_spec_json_arbitrary_json_values(value: object) -> None:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return
    check_json(text)
    check_json(text.encode())


@FAST
@given(documents(), st.sampled_from(["", " ", "\n", "x", "}", "\0", ",", "{}"]))
def test_parse_spec_json_documents_with_garbage(doc: object, garbage: str) -> None:
    try:
        text = json.dumps(doc)
    except (TypeError, ValueError):
        return
    check_json(garbage + text)
    check_json(text + garbage)
    check_json(text[: len(text) // 2])


def test_parse_spec_json_above_the_limit() -> None:
    doc = {**VALID, "labels": {"a": "x" * MAX_FILE_BYTES}}
    for text in [json.dumps(doc), json.dumps(doc).encode(), " " * (MAX_FILE_BYTES + 1)]:
        error = check_json(text)
        assert isinstance(error, SpecError)
        assert [p.document for p in error.problems] == [0]


# ---------------------------------------------------------------- once bugs, now fixed


@pytest.mark.parametrize(
    "text",
    [
        "name: web\nimage: x\nreplicas: " + "9" * 5000 + "\n",
        "name: web\nimage: x\nenv: 0x" + "f" * 5000 + "\n",
    ],
    ids=["decimal-replicas", "hex-env"],
)
def test_integers_beyond_the_digit_limit_are_spec_errors(text: str) -> None:
    assert isinstance(check_load(text), SpecError)


@pytest.mark.parametrize(
    "text", ["\ud800", '{"name": "web\udfff", "image": "x"}'], ids=["alone", "in-a-name"]
)
def test_parse_spec_json_lone_surrogates_are_spec_errors(text: str) -> None:
    assert isinstance(check_json(text), SpecError)


@pytest.mark.parametrize("field", ["image", "env value", "label value", "command"])
def test_nul_in_strings_that_reach_docker_is_refused(field: str) -> None:
    doc = json.loads(json.dumps(VALID))
    if field == "image":
        doc["image"] = "web\0:v1"
    elif field == "env value":
        doc["env"] = {"A": "x\0y"}
    elif field == "label value":
        doc["labels"] = {"a": "x\0y"}
    else:
        doc["command"] = ["sh", "-c", "x\0y"]
    assert isinstance(check_json(json.dumps(doc)), SpecError)
    assert isinstance(check_load(yaml.safe_dump(doc)), SpecError)


@pytest.mark.parametrize(
    "doc",
    [
        {**VALID, "env": {"A\x1b[2J\0": "x"}},
        {**VALID, "labels": {"\x1b]0;owned\x07": "x"}},
        {**VALID, "resources": {"\x1b[31m": 1}},
    ],
    ids=["env-key", "label-key", "resources-key"],
)
def test_problem_paths_hold_no_control_characters(doc: dict[str, Any]) -> None:
    error = check_json(json.dumps(doc))
    assert isinstance(error, SpecError)
    for problem in error.problems:
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", str(problem)), repr(str(problem))


@pytest.mark.parametrize(
    "doc",
    [{**VALID, "k" * 100_000: 1}, {**VALID, "env": {"-" * 100_000: "x"}}],
    ids=["unknown-field", "env-key"],
)
def test_problem_text_is_bounded(doc: dict[str, Any]) -> None:
    error = check_json(json.dumps(doc))
    assert isinstance(error, SpecError)
    assert len(str(error)) < 4096, len(str(error))


def test_alias_expansion_of_strings_is_bounded() -> None:
    text = "name: web\nimage: x\ncommand: [&s " + "x" * 1000 + ", " + "*s, " * 2000 + "*s]\n"
    assert len(text) < 10_000
    result = check_load(text)  # accepted specs must round-trip through parse_spec_json
    assert isinstance(result, SpecError) or len(result[0].model_dump_json()) < MAX_FILE_BYTES
