"""How many agents' registrations write to etcd at once.

A restart's start gate lets every waiting agent in together: at 5,000 hosts, 4,900
registrations made their etcd calls all at once, and the control plane grew by 70-80
MiB for the second those calls were in flight (the restart's peak; ``benchmarks/
README.md``, "A restart's storm without its spike"). The storm is bound by the event
loop's cpu, not by calls waiting on etcd, so a few dozen at a time register as fast.

A registration that waits too long for its turn (etcd hung: every turn before it ran
into etcd's timeout) is refused with a reason instead of waiting behind thousands, and
its agent tries again after its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fleet.errors import Unavailable

__all__ = ["RegistrationSlots"]


class RegistrationSlots:
    """``at_once`` registrations at a time; one that waits ``wait`` seconds for its turn
    is refused (``Unavailable``)."""

    def __init__(self, at_once: int, wait: float) -> None:
        self._slots = asyncio.Semaphore(at_once)
        self._at_once = at_once
        self._wait = wait

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._wait):
                await self._slots.acquire()
        except TimeoutError:
            raise Unavailable(
                f"the control plane's {self._at_once} registrations in progress have not "
                f"finished within {self._wait:g}s (etcd slow to answer?); retry"
            ) from None
        try:
            yield
        finally:
            self._slots.release()
