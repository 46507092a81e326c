"""Sizes and durations as users write them ("64Mi", "1G", "500ms", "1m30s"), for app files
and for the CLI's options alike; and the validator of a duration field within bounds."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import ValidationInfo

from fleet.spec._quote import show as _show

__all__ = [
    "DURATION_PATTERN",
    "DURATION_SCHEMA",
    "NUMBER",
    "format_memory",
    "is_number",
    "parse_duration",
    "parse_memory",
    "seconds",
]

NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i|[kKMGT])?")
_MEMORY_UNITS: dict[str | None, int] = {
    None: 1,
    **{f"{u}i": 1 << (10 * (i + 1)) for i, u in enumerate("KMGT")},
    **{u: 10 ** (3 * (i + 1)) for i, u in enumerate("kMGT")},
    "K": 1000,
}
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
# What a duration field accepts, for the JSON schema: the text form, or seconds.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}]
}


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float, and not a bool."""
    # YAML's true/false are bools, and bool is an int subclass; a bool is never a count here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_memory(value: str | int) -> int:
    """Bytes from an int or a size string: binary suffixes Ki Mi Gi Ti, decimal k/K M G T."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"expected a size of at least 0 bytes, got {value}")
        return value
    match = _MEMORY.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            "expected a size in bytes like 512, 64Mi or 1G (suffixes Ki Mi Gi Ti are powers "
            f"of 1024, k M G T powers of 1000), got {_show(value)}"
        )
    size = Decimal(match[1]) * _MEMORY_UNITS[match[2]]
    if size != size.to_integral_value():
        raise ValueError(f"expected a whole number of bytes, got {_show(value)} = {size} bytes")
    return int(size)


def format_memory(n: int) -> str:
    """The shortest exact size string for ``n`` bytes: "64Mi", or plain bytes like "1000"."""
    if n < 0:
        raise ValueError(f"a size cannot be negative, got {n}")
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _MEMORY_UNITS[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number of seconds or a string like "10s", "500ms", "1m30s" or "2h"."""
    if is_number(value):
        seconds = float(value)
    elif isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        seconds = float(value.strip())
    elif isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        parts = _DURATION_PART.findall(value.strip())
        seconds = float(sum(Decimal(n) * _DURATION_UNITS[unit] for n, unit in parts))
    else:
        raise ValueError(
            "expected a duration like 10s, 500ms, 1m30s or 2h, or a number of seconds, "
            f"got {_show(value)}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a duration of at least 0 seconds, got {_show(value)}")
    return seconds


def seconds(low: float, high: float) -> Callable[[object, ValidationInfo], float]:
    """The validator of a duration field from ``low`` to ``high`` seconds; its messages
    name the field."""

    def check(value: object, info: ValidationInfo) -> float:
        what = info.field_name
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"expected a duration like 2s or 500ms for {what}, got {_show(value)}")
        duration = parse_duration(value)
        if not low <= duration <= high:
            raise ValueError(f"expected {what} from {low:g}s to {high:g}s, got {_show(value)}")
        return duration

    return check
