"""Option values typer hands over as text, read in one place: durations and memory sizes.

A bad value exits 2 with an error that names the flag the user gave it to (``--deadline
'10q': ...``), before anything is changed.
"""

from __future__ import annotations

from fleet.cli.output import fail
from fleet.spec import parse_duration, parse_memory

__all__ = ["duration_option", "memory_option"]


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
