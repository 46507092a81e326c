"""What the dashboard grants a hostile or runaway client: a few failed sign-ins a
minute per address, a few event streams per session and a bounded number in all.
Pure: time is a parameter, and nothing here touches a request.

``SignInLimiter`` counts failures only (a right token or certificate is never slowed
down) in a sliding window per client address; once an address has ``limit`` failures
in the window it is refused, without its credentials being looked at, until the
oldest of them leaves the window. It remembers at most ``max_clients`` addresses,
forgetting the quietest first, so a flood of addresses costs bounded memory.

``StreamLimiter`` counts open server-sent-event streams per session and in total;
each stream is one task and one socket held for as long as the page is open.
"""

from __future__ import annotations

import collections
import ipaddress
import math
from dataclasses import dataclass, field

__all__ = [
    "MAX_SIGNIN_FAILURES",
    "MAX_STREAMS",
    "MAX_STREAMS_PER_SESSION",
    "SIGNIN_WINDOW",
    "SignInLimiter",
    "StreamLimiter",
    "client_of",
    "retry_header",
]

MAX_SIGNIN_FAILURES = 10  # failed sign-ins an address may make per window
SIGNIN_WINDOW = 60.0  # seconds
MAX_STREAMS_PER_SESSION = 8  # open pages (tabs) of one session
MAX_STREAMS = 256  # open pages of everyone: each holds a task and a socket


def client_of(address: str | None) -> str:
    """Whom a peer address counts as: an IPv4 address itself, an IPv6 one by its /64
    (one machine commonly holds a whole /64, and would otherwise get a limit per
    address); "?" when unknown (all such clients share one count)."""
    if not address:
        return "?"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class SignInLimiter:
    limit: int = MAX_SIGNIN_FAILURES
    window: float = SIGNIN_WINDOW
    max_clients: int = 10_000
    # address -> times of its failures in the window, oldest first; the dict is kept in
    # order of each address's last failure, so the first entry is the quietest.
    _failures: dict[str, collections.deque[float]] = field(default_factory=dict)

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until ``client`` may try again (it may not try now), or None."""
        failures = self._recent(client, now)
        if failures is None or len(failures) < self.limit:
            return None
        return max(0.0, failures[0] + self.window - now)

    def failed(self, client: str, now: float) -> None:
        """Count a failed sign-in of ``client`` at ``now``."""
        failures = self._recent(client, now)
        if failures is None:
            failures = collections.deque(maxlen=self.limit)
        self._failures.pop(client, None)
        self._failures[client] = failures  # now the most recent
        failures.append(now)
        while len(self._failures) > self.max_clients:
            del self._failures[next(iter(self._failures))]

    def _recent(self, client: str, now: float) -> collections.deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures


def retry_header(seconds: float) -> str:
    """Retry-After's value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


@dataclass
class StreamLimiter:
    per_session: int = MAX_STREAMS_PER_SESSION
    total: int = MAX_STREAMS
    _open: dict[str, int] = field(default_factory=dict)

    @property
    def streams(self) -> int:
        return sum(self._open.values())

    def open(self, session: str) -> str | None:
        """Count a new stream of ``session``; why it is refused instead (not counted)."""
        if self.streams >= self.total:
            return f"the dashboard serves {self.total} live pages already: try again later"
        mine = self._open.get(session, 0)
        if mine >= self.per_session:
            return (
                f"this session has {self.per_session} live pages open already: close one "
                "(a closed page's stream ends within 15 s)"
            )
        self._open[session] = mine + 1
        return None

    def close(self, session: str) -> None:
        """A stream of ``session`` that ``open`` let through has ended."""
        left = self._open.get(session, 0) - 1
        if left > 0:
            self._open[session] = left
        else:
            self._open.pop(session, None)
