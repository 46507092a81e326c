"""What both ends of an exec session relayed over an agent's stream agree on (``ExecStream``
in fleet.proto): the window of credit each direction has, what a message costs in it,
and the ``Credit`` a sender waits on.

The agent's stream carries every session of its host along with heartbeats, so gRPC's
own flow control cannot slow one session down without stalling the others. Each
direction therefore counts bytes: the sender may have at most ``WINDOW`` sent that the
receiver has not yet passed on, and the receiver says how far it got with a running
total (``consumed``), so a lost or repeated acknowledgement cannot skew the count. A
receiver that is sent more than the window is talking to a broken peer, and ends the
session rather than buffer without bound.
"""

from __future__ import annotations

import asyncio

from fleet.proto import fleet_pb2 as pb

__all__ = ["CHUNK", "CONTROL_COST", "WINDOW", "Credit", "input_cost", "split"]

WINDOW = 128 * 1024  # bytes in flight per direction and session
CHUNK = 16 * 1024  # the largest piece of output or input sent in one message
# A resize or the end of input holds no bytes but still takes room at the agent:
# charged as this many, so a client sending only resizes is bounded too.
CONTROL_COST = 64


def input_cost(message: pb.ExecRelayInput) -> int:
    """What ``message`` takes of the input window (acknowledgements and the open and
    cancel of a session are free: one each, or bounded by the other direction)."""
    kind = message.WhichOneof("kind")
    if kind == "stdin":
        return len(message.stdin)
    if kind in ("resize", "close_stdin"):
        return CONTROL_COST
    return 0


def split(data: bytes, size: int = CHUNK) -> list[bytes]:
    """``data`` in pieces of at most ``size`` bytes (none for no data)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


class Credit:
    """The sender's side of a window: ``take`` waits until the bytes fit among those
    sent and not yet passed on; ``consumed`` is the receiver's running total."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.sent = 0
        self.acked = 0
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked

    async def take(self, cost: int) -> None:
        """Wait for room for ``cost`` more (a piece larger than the window goes once
        nothing else is in flight), then count it as sent. Raises ``EOFError`` once
        ``close`` was called."""
        while not self._closed and self.in_flight > 0 and self.in_flight + cost > self.window:
            self._room.clear()
            await self._room.wait()
        if self._closed:
            raise EOFError("the session ended")
        self.sent += cost

    def consumed(self, total: int) -> None:
        """The receiver passed on ``total`` so far (older totals are ignored; a total
        beyond what was sent is capped: it cannot open more room than was used)."""
        if total > self.acked:
            self.acked = min(total, self.sent)
            self._room.set()

    def close(self) -> None:
        """Wake every waiter: the session is over."""
        self._closed = True
        self._room.set()
