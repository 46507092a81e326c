"""Option values typer hands over as text, read in one place: durations, memory sizes, shares.

A bad value exits 2 with an error that names the flag the user gave it to (``--deadline
'10q': ...``), before anything is changed.
"""

from __future__ import annotations

import math

from fleet.cli.output import fail
from fleet.spec import parse_duration, parse_memory

__all__ = ["duration_option", "memory_option", "share_option"]


def duration_option(flag: str, text: str) -> float:
    """Seconds from ``text``, the value of ``flag`` (10s, 500ms, 1m30s, 2h or seconds)."""
    try:
        return parse_duration(text)
    except ValueError as error:
        fail(f"{flag} {text!r}: {error}")


def memory_option(flag: str, text: str) -> int:
    """Bytes from ``text``, the value of ``flag`` (512Mi, 6Gi, ...)."""
    try:
        return parse_memory(text)
    except ValueError as error:
        fail(f"{flag} {text!r}: {error}")


def share_option(flag: str, text: str) -> float | None:
    """A share from ``text``, the value of ``flag``: a percentage (55%, more than 0 and at
    most 100) as a fraction, or None for ``off``."""
    value = text.strip().lower()
    if value == "off":
        return None
    if value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            percent = math.nan
        if 0 < percent <= 100:
            return percent / 100
    fail(f"{flag} {text!r}: give a percentage of hosts above 0 and at most 100% (55%), or off")
