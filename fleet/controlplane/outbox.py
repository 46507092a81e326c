"""What one connected agent's stream holds at rest, kept small: its outbox and its
pushes' wake-ups.

An ``asyncio.Queue`` is four deques, each allocating a block of 64 slots at once (about
3 KiB empty), and an ``asyncio.Event`` one; the stream's handler also waited on the
queue with a task per message and on the session's end with a task of its own. Counted
at 1,000 hosts, these were most of what fleet's own part of a host at rest came down
from (19 to 8 KiB, ``benchmarks/hostcost.py``; #24 item 3). ``SessionOutbox`` has one
taker (the stream's handler) and ends when the session does, so its wait needs no task;
``Wakeup`` has one waiter.
"""

from __future__ import annotations

import asyncio

from fleet.proto import fleet_pb2 as pb

__all__ = ["Outgoing", "SessionOutbox", "Wakeup"]

# A message to an agent, or one already serialized: a desired set is put serialized
# (``DesiredPush``), since a set waits here for as long as its agent is slow to read,
# and parsed it is five times its size (97 KiB at 100 containers, 19 KB as bytes). The
# agent stream's serializer sends bytes as they are (``_handlers``).
Outgoing = pb.ServerMessage | bytes


class SessionOutbox:
    """The messages going to one agent, in order: put by the session's pushes and
    relays, taken by its stream's handler (``get``, then ``task_done`` once sent).
    ``end`` ends it: the taker gets None, and what is left is not sent."""

    __slots__ = ("_drained", "_ended", "_messages", "_taker", "_unsent")

    def __init__(self) -> None:
        self._messages: list[Outgoing] = []  # few: one set or table at a time
        self._unsent = 0  # put and not yet told sent (``task_done``)
        self._taker: asyncio.Future[None] | None = None  # the handler waiting in ``get``
        self._drained: asyncio.Future[None] | None = None  # ``join``'s waiters wait on it
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def put_nowait(self, message: Outgoing) -> None:
        if self._ended:
            return  # nobody takes it any more
        self._messages.append(message)
        self._unsent += 1
        if self._taker is not None and not self._taker.done():
            self._taker.set_result(None)

    async def put(self, message: Outgoing) -> None:
        """As ``put_nowait`` (the outbox is unbounded), for callers that await a queue."""
        self.put_nowait(message)

    def empty(self) -> bool:
        return not self._messages

    def get_nowait(self) -> Outgoing:
        if not self._messages:
            raise asyncio.QueueEmpty
        return self._messages.pop(0)

    async def get(self) -> Outgoing | None:
        """The next message; None once the outbox has ended (for one taker only)."""
        while not self._messages and not self._ended:
            self._taker = asyncio.get_running_loop().create_future()
            try:
                await self._taker
            finally:
                self._taker = None
        return None if self._ended else self._messages.pop(0)

    def task_done(self) -> None:
        """A message taken was sent."""
        self._unsent -= 1
        if self._unsent <= 0:
            self._unsent = 0
            self._release_drained()

    async def join(self) -> None:
        """Until every message put so far was sent, or the outbox ended."""
        while self._unsent and not self._ended:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            # Shielded: several wait on one future, and a waiter cancelled (its session's
            # push ending) must not cancel it under the others.
            await asyncio.shield(self._drained)

    def end(self) -> None:
        """The session is over: the taker and ``join``'s waiters stop waiting."""
        self._ended = True
        self._messages.clear()
        if self._taker is not None and not self._taker.done():
            self._taker.set_result(None)
        self._release_drained()

    def _release_drained(self) -> None:
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None


class Wakeup:
    """An ``asyncio.Event`` for one waiter, without the Event's deque of waiters."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        """Until set (at once if it is); for one waiter at a time."""
        while not self._set:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
