"""Builders shared by the fuzzing of app files (the parser's unit tests and the API's
integration tests): a valid spec using every field, and hypothesis strategies for random
keys and values and for mutations of that spec that must (or may) be refused."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from fleet.spec import AppSpec

# A valid app using every field of the README's example (only those the model has).
_FULL = {
    "name": "web",
    "image": "127.0.0.1:5000/web:v1",
    "replicas": 3,
    "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
    "env": {"GREETING": "hello"},
    "ports": ["8080", "9090:9000/udp"],
    "resources": {"cpu": 0.25, "memory": "64Mi"},
    "restart": "on-failure:3",
    "labels": {"team": "web"},
    "constraints": ["role=edge", "disk!=hdd", "gpu"],
    "stop_grace_period": "10s",
}
VALID: dict[str, Any] = {k: v for k, v in _FULL.items() if k in AppSpec.model_fields}
NESTED_FIELDS = ["cpu", "memory", "kind", "max_retries", "host_port", "container_port"]
NESTED_FIELDS += ["protocol", "key", "op", "value", "secret", "health", "update"]
FIELD_NAMES = sorted(set(AppSpec.model_fields) | set(NESTED_FIELDS))

# Random keys (the real fields among them) and scalar values, for random documents.
keys = st.one_of(
    st.sampled_from(FIELD_NAMES),
    st.text(max_size=12),
    st.integers(-5, 5),
    st.booleans(),
    st.none(),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=40),
    st.sampled_from(["64Mi", "8080", "1:2/udp", "10s", "on-failure:2", "a=b", "x" * 600]),
)


# Values of a type no coercion makes valid, per field.
_NOT_STR = st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.lists(scalars))
_NOT_MAP = st.one_of(st.integers(), st.floats(), st.booleans(), st.lists(scalars, min_size=1))
_NOT_LIST = st.one_of(st.integers(), st.floats(), st.booleans(), st.text(min_size=1))
WRONG_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "name": _NOT_STR,
    "image": _NOT_STR,
    "replicas": st.one_of(st.floats(), st.booleans(), st.none(), st.text(), st.lists(scalars)),
    "command": st.one_of(st.integers(), st.floats(), st.booleans(), st.dictionaries(keys, scalars)),
    "env": _NOT_MAP,
    "labels": _NOT_MAP,
    "resources": _NOT_MAP,
    "ports": st.one_of(st.floats(), st.booleans(), st.dictionaries(keys, scalars, min_size=1)),
    "constraints": _NOT_LIST,
    "restart": st.one_of(st.integers(), st.floats(), st.booleans(), st.lists(scalars)),
    "stop_grace_period": st.one_of(st.booleans(), st.none(), st.lists(scalars)),
}
WRONG_TYPE = {k: v for k, v in WRONG_TYPE.items() if k in VALID}

BAD_PIECES = ["..", "/", "\0", "\n", "../", "/..", "../../etc/passwd", "a\0b", "\r\n"]
LONG = [64, 254, 513, 5_000, 20_000]  # hypothesis warns of reprs above 30 kB


@st.composite
def injected(draw: st.DrawFn, base: str) -> tuple[str, str]:
    """``base`` with a hostile piece put somewhere; (the text, the piece)."""
    if draw(st.booleans()):
        piece = draw(st.sampled_from(BAD_PIECES))
    else:
        piece = "x" * draw(st.sampled_from(LONG))
    where = draw(st.sampled_from(["prefix", "suffix", "middle", "replace"]))
    middle = len(base) // 2
    text = {
        "prefix": piece + base,
        "suffix": base + piece,
        "middle": base[:middle] + piece + base[middle:],
        "replace": piece,
    }[where]
    return text, piece


def _is_long(piece: str) -> bool:
    return piece.startswith("x")


@st.composite
def mutations(draw: st.DrawFn) -> tuple[dict[str, Any], bool, str]:
    """A mutated copy of VALID; whether it must be refused; what was done."""
    doc = json.loads(json.dumps(VALID))
    kind = draw(
        st.sampled_from(
            ["drop", "wrong type", "name", "env key", "label key", "image", "free text"]
        )
    )
    if kind == "drop":
        field = draw(st.sampled_from(["name", "image"]))
        del doc[field]
        return doc, True, f"dropped {field}"
    if kind == "wrong type":
        field = draw(st.sampled_from(sorted(WRONG_TYPE)))
        doc[field] = draw(WRONG_TYPE[field])
        return doc, True, f"{field} = {doc[field]!r:.80}"
    if kind == "name":
        doc["name"], piece = draw(injected("web"))
        return doc, True, f"name {doc['name']!r:.80}"
    if kind == "env key":
        key, piece = draw(injected("GREETING"))
        doc["env"] = {key: "hello"}
        return doc, not _is_long(piece), f"env key {key!r:.80}"
    if kind == "label key":
        key, piece = draw(injected("team"))
        doc["labels"] = {key: "web"}
        must = (not _is_long(piece) and any(c in piece for c in "\0\n")) or len(key) > 253
        return doc, must, f"label key {key!r:.80}"
    if kind == "image":
        doc["image"], piece = draw(injected(VALID["image"]))
        # No image reference holds these; only the long pieces may leave a valid one.
        must = any(c in piece for c in "/\0\n\r") or len(doc["image"]) > 512
        return doc, must, f"image {doc['image']!r:.80}"
    # Free text into a value that may legitimately hold it: either outcome, if clean.
    field = draw(st.sampled_from(["env value", "label value", "command", "constraint"]))
    text, _ = draw(injected("hello"))
    if field == "env value":
        doc["env"] = {"GREETING": text}
    elif field == "label value":
        doc["labels"] = {"team": text}
    elif field == "command":
        doc["command"] = ["httpd", text]
    else:
        doc["constraints"] = [f"role={text}"]
    return doc, False, f"{field} {text!r:.80}"
