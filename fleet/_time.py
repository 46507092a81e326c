"""Wall-clock stamps for records. Pure code takes ``now`` as a parameter instead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["epoch", "iso_at", "iso_seconds_ago", "now_iso"]


def now_iso() -> str:
    """The current UTC time, e.g. ``2026-11-28T19:23:34.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_at(seconds: float) -> str:
    """``now_iso()``'s form for a moment given in epoch seconds (pure code's ``now``)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_seconds_ago(seconds: float) -> str:
    """``now_iso()`` as it was ``seconds`` ago (comparable as text with it)."""
    moment = datetime.now(UTC) - timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(stamp: str) -> float | None:
    """Seconds since the epoch of a ``now_iso()`` stamp; None if it is not one."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
