"""Failures said once: a loop that fails every few seconds says so in the log once per
cause, neither on every round (that fills the disk) nor at debug level only (that hides
it).

``FailureLog`` is for the agent's rounds and tasks: fleet's own errors in a line,
anything unexpected with its traceback the first time. ``WarnOnce`` is for a loop that
keeps trying in the background (Docker's event stream, the usage sampler, a log
relay): a warning the first time a cause is seen, then debug lines until it works again.
"""

from __future__ import annotations

import logging

from fleet.errors import FleetError

__all__ = ["FailureLog", "WarnOnce"]

Cause = tuple[str, str]  # the error's class and text


def cause(error: BaseException) -> Cause:
    return (type(error).__name__, str(error))


class _Causes:
    """The causes already said; bounded (the oldest are forgotten first), since a cause
    may name a container or a time and so never come again."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._seen: dict[Cause, None] = {}

    def first(self, error: BaseException) -> bool:
        """True the first time ``error``'s cause is seen (since the last ``clear``)."""
        key = cause(error)
        if key in self._seen:
            return False
        if len(self._seen) >= self._limit:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = None
        return True

    def clear(self) -> None:
        self._seen.clear()


class FailureLog:
    """A failure in the log: fleet's own errors in a line, anything unexpected with its
    traceback the first time (then in a line: a loop must not fill the disk)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._tracebacks = _Causes()

    def failed(self, message: str, error: BaseException) -> None:
        if isinstance(error, FleetError) or not self._tracebacks.first(error):
            self._log.warning("%s", message)
            return
        self._log.error("%s", message, exc_info=error)


class WarnOnce:
    """``what`` failed: a warning per distinct cause, debug lines for its repeats, until
    ``worked`` says it works again (a later failure is news then)."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self._said = _Causes()

    def failed(self, error: BaseException, detail: str = "") -> None:
        level = logging.WARNING if self._said.first(error) else logging.DEBUG
        self._log.log(level, "%s%s: %s", self._what, detail, error)

    def worked(self) -> None:
        self._said.clear()
