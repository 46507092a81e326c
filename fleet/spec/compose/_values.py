"""Compose's value shapes turned into fleet's: sizes (Docker's binary units), lists that
may be mappings and mappings that may be lists, names that must become DNS labels."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from fleet._names import is_dns_label
from fleet.spec._units import format_memory

__all__ = ["as_list", "as_mapping", "dns_name", "size_text"]

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([bkmgtp]?)b?", re.IGNORECASE)
_POWERS = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def size_text(value: object) -> str | None:
    """A compose size (bytes, or ``512m``, ``1g``, ``1.5GB``: Docker's units, powers of
    1024) in fleet's spelling (``512Mi``), or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return format_memory(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        return None
    try:
        size = Decimal(match[1]) * (1024 ** _POWERS[match[2].lower()])
    except InvalidOperation:
        return None
    return format_memory(int(size))


def as_mapping(value: object, separator: str = "=") -> dict[str, object] | None:
    """Compose's mapping-or-list (``{A: b}`` or ``[A=b, C]``; a bare ``C`` maps to None),
    or None if it is neither."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        pairs: dict[str, object] = {}
        for item in value:
            if not isinstance(item, str | int | float) or isinstance(item, bool):
                return None
            key, has, rest = str(item).partition(separator)
            pairs[key.strip()] = rest if has else None
        return pairs
    return None


def as_list(value: object) -> list[object] | None:
    """A list, or one string as a list of one; None if neither."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value if isinstance(value, list) else None


def dns_name(name: str) -> str:
    """A compose name (``db_data``, ``My.App``) as a DNS label (``db-data``, ``my-app``),
    or "" if it cannot be one."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return label if is_dns_label(label) else ""
