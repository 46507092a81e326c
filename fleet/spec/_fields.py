"""How a spec's models and fields are declared: the frozen base model, the JSON schema of
what users write, and the readings YAML needs (null as empty, scalars as text, strict
booleans, a command as words). Every model of the spec builds on these."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, WithJsonSchema

from fleet.spec._quote import show as _show
from fleet.spec._units import is_number

__all__ = [
    "MAX_REPLICAS",
    "Model",
    "Words",
    "has_space",
    "none_as",
    "scalar_text",
    "schema",
    "strict_bool",
    "words_schema",
]

# The most replicas an app may ask for; every count of replicas is bounded by it.
MAX_REPLICAS = 10_000


class Model(BaseModel):
    """Frozen so a validated spec cannot drift; extra fields are typos and are rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def none_as(empty: Callable[[], object]) -> BeforeValidator:
    """A field's reading of null as ``empty()``."""
    # "env:" with every entry commented out is null in YAML; it means "none", not an error.
    return BeforeValidator(lambda v: empty() if v is None else v)


def schema(**schema: Any) -> WithJsonSchema:
    """A field's JSON schema, given whole."""
    # Describes what users write (e.g. "64Mi"), not the parsed type, so editors accept it.
    return WithJsonSchema(schema, mode="validation")


def scalar_text(value: object, what: str) -> str:
    """A string field's value; numbers and booleans become their text, as docker compose does."""
    if isinstance(value, str):
        if "\0" in value:
            raise ValueError(f"expected {what} without NUL characters")
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 (nor JSON) can carry it
            raise ValueError(f"expected {what} of valid Unicode text") from None
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return str(value)
    raise ValueError(f"expected {what}, got {_show(value)}")


def strict_bool(value: object) -> bool:
    """``value`` if it is true or false (YAML's "yes" or 1 is not)."""
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show(value)}")
    return value


def has_space(text: str) -> bool:
    return any(c.isspace() for c in text)


def _words(value: object, info: ValidationInfo) -> list[str] | None:
    """A command (or entrypoint) as its words: a list of strings, or a string split like
    a shell does; None (leave it out) for the image's own."""
    what = info.field_name or "command"
    if value is None:
        return None  # the image's CMD (or ENTRYPOINT)
    if isinstance(value, str):
        try:
            value = shlex.split(value)  # compose splits a string command the same way
        except ValueError as exc:
            raise ValueError(f"cannot split the {what} into words: {exc}") from None
    if not isinstance(value, list) or not value:
        own = {"command": "CMD", "entrypoint": "ENTRYPOINT"}.get(what)
        hint = f" (leave {what} out to run the image's {own})" if own else ""
        raise ValueError(
            f"expected a non-empty list of strings like [httpd, -f]{hint}, got {_show(value)}"
        )
    return [scalar_text(arg, f"a string for {what}[{i}]") for i, arg in enumerate(value)]


# A command field: its words, or a string of them; None when left out.
Words = Annotated[list[str] | None, BeforeValidator(_words)]


def words_schema(description: str, example: list[str]) -> WithJsonSchema:
    """A command field's JSON schema."""
    forms = [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]
    return schema(anyOf=forms, description=description, examples=[example])
