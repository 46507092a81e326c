"""One gRPC channel per etcd member, and which one is in use.

One channel over every member (an ``ipv4:a:2379,b:2379,c:2379`` target) checks each
member's TLS certificate against a single authority made of all their addresses, which
no member's certificate names: with TLS on, every handshake failed ("Hostname
Verification Check failed") and the control plane never synced. A channel per member
checks each certificate against that member's own address or name, as etcd's own
client dials each endpoint with its own authority; per-member certificates, with the
member's IP or DNS name only, then work as issued.

Calls go to one member at a time. One that fails with UNAVAILABLE or DEADLINE_EXCEEDED
(down, unreachable, its certificate refused, or cut off from the cluster's leader) is
left for the next member, in turn; ``retryable`` says when the failed call may go again
at once, on the next member.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import grpc

__all__ = ["MEMBER_TROUBLE", "Members", "retryable", "target_of"]

log = logging.getLogger(__name__)

C = TypeVar("C")  # a grpc.aio.Channel or a grpc.Channel

# Codes that say "this member, now", not "this request": another member may answer.
# etcd itself answers UNAVAILABLE when it has no leader or a request timed out in raft.
MEMBER_TROUBLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# gRPC's words when no connection could be made, so the request was never sent.
_NOT_SENT = "failed to connect to all addresses"


def target_of(endpoint: str) -> str:
    """The gRPC target of one endpoint (``https://10.0.0.11:2379/`` -> ``10.0.0.11:2379``)."""
    return endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")


def retryable(code: grpc.StatusCode | None, details: str | None, *, idempotent: bool) -> bool:
    """Whether a call that failed so may go again at once, on the next member: reads
    and other idempotent requests after any UNAVAILABLE; a transaction only when it
    was never sent (etcd's clientv3 retries mutations only then, since one that may
    have been applied must not be applied twice). A deadline is not retried: the
    caller's time is spent."""
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    return idempotent or _NOT_SENT in (details or "")


class Members(Generic[C]):
    """A channel to each endpoint (made by ``dial``) and the one in use."""

    def __init__(self, endpoints: Sequence[str], dial: Callable[[str], C]) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [target_of(e) for e in endpoints]
        self.channels = [dial(target) for target in self.endpoints]
        self._current = 0

    def __len__(self) -> int:
        return len(self.channels)

    @property
    def current(self) -> int:
        """The index of the member calls go to now."""
        return self._current

    def failed(self, index: int, code: grpc.StatusCode | None, details: str | None) -> None:
        """A call to member ``index`` failed with ``code``: if that is member trouble
        and it is still the one in use, the next member is (one failure moves on once,
        however many calls it broke)."""
        if code not in MEMBER_TROUBLE or index != self._current or len(self.channels) == 1:
            return
        self._current = (index + 1) % len(self.channels)
        log.warning(
            "etcd member %s: %s: %s; using %s now",
            self.endpoints[index],
            code.name if code else "?",
            details,
            self.endpoints[self._current],
        )
