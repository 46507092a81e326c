"""Wall-clock stamps for records. Pure code takes ``now`` as a parameter instead."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["now_iso"]


def now_iso() -> str:
    """The current UTC time, e.g. ``2026-11-28T19:23:34.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
