"""How app-file values are quoted in messages: in YAML's terms, bounded, and with control
characters escaped (hostile input must not reach a terminal or a gRPC trailer raw)."""

from __future__ import annotations

__all__ = ["clean_text", "show"]


def clean_text(text: str, limit: int = 64) -> str:
    """``text`` safe to print in a message: control characters escaped, at most
    ``limit`` characters (hostile input must not reach a terminal or a gRPC trailer raw)."""
    escaped = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text[: limit + 1])
    return escaped[:limit] + ("..." if len(text) > limit or len(escaped) > limit else "")


def show(value: object) -> str:
    """How a rejected input is quoted in messages, in YAML terms rather than Python's."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(clean_text(value, 60))
    if isinstance(value, int) and value.bit_length() > 64:
        return "a number far too large"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "a mapping" if isinstance(value, dict) else type(value).__name__
