"""What keeps failing on a host, remembered between reconcile rounds. Pure: time comes
in as ``now``.

A pull of a mistyped tag, a create that dockerd refuses, a round that raises: each is
tried again with backoff (not on every round and every wake-up), said once (a log line
and an event when it starts or its reason changes, not every 10 s), and reported for as
long as it lasts (the replica's status says why it does not run).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from fleet.agent.restarts import Backoff

__all__ = ["Failure", "FailureBook"]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Failure:
    reason: str  # a short word: image-not-found, create-failed, ...
    message: str  # what happened, for people
    count: int  # failures in a row
    retry_at: float  # epoch seconds: not tried again before


class FailureBook(Generic[K]):
    """Failures in a row per key (an image, a task), with when to try each again."""

    def __init__(self, backoff: Backoff) -> None:
        self._backoff = backoff
        self._failures: dict[K, Failure] = {}

    def get(self, key: K) -> Failure | None:
        return self._failures.get(key)

    def due(self, key: K, now: float) -> bool:
        """Whether ``key`` may be tried now: it never failed, or its backoff is over."""
        failure = self._failures.get(key)
        return failure is None or failure.retry_at <= now

    def failed(self, key: K, reason: str, message: str, now: float) -> bool:
        """Record a failure; True when it is news (the first, or a different reason or
        message than the last): worth a log line and an event."""
        before = self._failures.get(key)
        count = 1 if before is None else before.count + 1
        self._failures[key] = Failure(reason, message, count, now + self._backoff.delay(count - 1))
        return before is None or (before.reason, before.message) != (reason, message)

    def succeeded(self, key: K) -> bool:
        """Forget ``key``'s failures; True if it had any."""
        return self._failures.pop(key, None) is not None

    def forget(self, key: K) -> None:
        """Drop ``key``'s failures: what it failed with changed (new credentials)."""
        self._failures.pop(key, None)

    def forget_except(self, keys: Iterable[K]) -> None:
        """Drop what is no longer wanted (an image no replica uses any more)."""
        keep = set(keys)
        self._failures = {k: f for k, f in self._failures.items() if k in keep}

    def next_retry(self) -> float | None:
        """The earliest time something is due again (None: nothing failed)."""
        return min((f.retry_at for f in self._failures.values()), default=None)

    def __len__(self) -> int:
        return len(self._failures)
