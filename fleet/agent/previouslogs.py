"""The log of each replica's last removed container, kept by the agent so that
``fleet logs --previous`` finds it after a rollout, a rollback or a drain replaced the
container (as the kubelet keeps a pod's previous container): the agent removes a
replaced container, and Docker's log goes with it.

One file per replica, ``<state dir>/previous-logs/<app>.<slot>.log``: the end of the
container's log (at most ``MAX_BYTES``, whole lines, with Docker's timestamps, so
``--since`` and ``--timestamps`` work on it as on a live log), written when the
container is removed and replaced by the next removal of that replica. Reading it back
(``select``) is pure.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path

__all__ = ["MAX_BYTES", "PreviousLogs", "select"]

log = logging.getLogger(__name__)

MAX_BYTES = 256 * 1024  # of a container's log kept, its end
MAX_LINES = 5000  # asked of Docker: the end of a long log, not all of it


def _stamp(line: bytes) -> tuple[float | None, bytes]:
    """(epoch seconds, the rest) of a line Docker wrote with ``timestamps``."""
    head, _, rest = line.partition(b" ")
    text = head.decode("ascii", "replace")
    if not text.endswith("Z") or "T" not in text:
        return None, line
    whole, _, fraction = text[:-1].partition(".")
    try:
        at = datetime.fromisoformat(whole + "+00:00").timestamp()
    except ValueError:
        return None, line
    return at + float(f"0.{fraction or 0}"[:12]), rest


def select(data: bytes, *, tail: int, since: float, timestamps: bool) -> bytes:
    """The lines of a kept log a request asks for: those at or after ``since`` (epoch
    seconds; 0: all), the last ``tail`` of them (< 0: all), with or without Docker's
    timestamp in front."""
    lines = data.splitlines(keepends=True)
    chosen = []
    for line in lines:
        at, rest = _stamp(line)
        if since and at is not None and at < since:
            continue
        chosen.append(line if timestamps or at is None else rest)
    if tail >= 0:
        chosen = chosen[len(chosen) - tail :] if tail else []
    return b"".join(chosen)


def _end(data: bytes) -> bytes:
    """At most ``MAX_BYTES`` of ``data``'s end, from the start of a line."""
    if len(data) <= MAX_BYTES:
        return data
    cut = data[-MAX_BYTES:]
    newline = cut.find(b"\n")
    return cut[newline + 1 :] if newline >= 0 else cut


class PreviousLogs:
    """The kept logs, in ``directory`` (None: none are kept, as without a state dir)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def path(self, app: str, slot: int) -> Path | None:
        return None if self.directory is None else self.directory / f"{app}.{slot}.log"

    def save(self, app: str, slot: int, data: bytes) -> None:
        """Keep ``data`` (a removed container's log, with timestamps) as the replica's
        previous log; a failure is logged, never raised (the removal goes on)."""
        path = self.path(app, slot)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(_end(data))
            os.replace(temporary, path)
        except OSError as error:
            log.warning("could not keep the log of %s.%d for --previous: %s", app, slot, error)

    def read(self, app: str, slot: int) -> tuple[bytes, float] | None:
        """The replica's kept log and when it was kept (epoch seconds), or None."""
        path = self.path(app, slot)
        if path is None:
            return None
        try:
            return path.read_bytes(), path.stat().st_mtime
        except OSError:
            return None
