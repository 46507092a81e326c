"""Sending every connected edge host (``fleet agent --ingress``) the whole routing table
(``edgefeed``) at once when it connects and whenever the table changes.

One feed per server computes the table once per change of the state, for every edge
session, and again exactly when a container is due to become available
(``edgefeed.next_change``) or a silent host's backends are due to leave it
(``edgefeed.hold_ends``): a timer, not polling. It keeps what the last table listed,
which the next one holds for silent hosts. Sessions only send what the feed
made, each the newest table once (a slow edge skips tables it had no time to take).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from fleet.controlplane._tasks import running
from fleet.controlplane.edgefeed import (
    BackendKey,
    Listed,
    edge_table,
    feed_inputs,
    hold_ends,
    next_change,
)
from fleet.controlplane.outbox import SessionOutbox, Wakeup
from fleet.proto import fleet_pb2 as pb
from fleet.store import Informer, Subscription

__all__ = ["EdgePush"]

log = logging.getLogger(__name__)

_COALESCE = 0.05  # seconds the feed waits after a change before it looks
_LATE = 0.01  # past a container's due time, so that it counts as available then


class EdgePush:
    def __init__(self, informer: Informer, clock: Callable[[], float] = time.time) -> None:
        self._informer = informer
        self._clock = clock
        self._wakers: dict[str, Wakeup] = {}  # edge host -> its session's wake-up
        self._config: pb.EdgeConfig | None = None  # the newest table (None: none yet)
        self._version = 0  # the last table's version: a next one is newer
        self._feed: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None  # the feed's
        self.computed = 0  # tables computed (tests count them: once per change)

    @property
    def config(self) -> pb.EdgeConfig | None:
        """The newest routing table (None before the first)."""
        return self._config

    async def run(self, host_id: str, outbox: SessionOutbox) -> None:
        """Put the newest routing table in ``outbox`` now and whenever it changes, until
        cancelled (the session's end)."""
        wake = Wakeup()
        wake.set()  # the table as it is goes out at once
        self._wakers[host_id] = wake
        self._feed = running(self._feed, self._compute, "edge-feed")
        if self._config is None and self._subscription is not None:
            self._subscription.notify()  # the first edge since none was: compute now
        sent = 0
        try:
            while True:
                await wake.wait()
                wake.clear()
                # One message at a time in the outbox, as desired sets (DesiredPush).
                await outbox.join()
                config = self._config
                if config is not None and config.version != sent:
                    await outbox.put(pb.ServerMessage(edge=config))
                    sent = config.version
        finally:
            if self._wakers.get(host_id) is wake:
                del self._wakers[host_id]

    async def _compute(self) -> None:
        """The table, on every change of the state and when a backend becomes ready;
        a new version (rising: at least the state's revision) only when it changed."""
        await self._informer.wait_synced()
        subscription = self._subscription = self._informer.subscribe()
        due: float | None = None
        inputs: object = None  # what the last table was made of
        memory: dict[BackendKey, Listed] = {}  # what it listed (edgefeed)
        try:
            while True:
                timeout = None if due is None else max(0.0, due - self._clock()) + _LATE
                try:
                    await asyncio.wait_for(subscription.wait(), timeout)
                    woken_by_time = False
                except TimeoutError:
                    woken_by_time = True
                await asyncio.sleep(_COALESCE)  # fold a burst into one look
                if not self._wakers:
                    # No edge connected: nothing to compute, until the next one is. The
                    # memory stays: an edge's own agent restarting is its host falling
                    # silent too, and the table it finds on its return holds its backends.
                    due = self._config = inputs = None
                    continue
                state, now = self._informer.state(), self._clock()
                now_inputs = feed_inputs(state)
                if not woken_by_time and now_inputs is not None and now_inputs == inputs:
                    continue  # a change of other apps' or hosts' reports: the same table
                try:
                    routes, memory = edge_table(state, now, memory)
                    ends = [t for t in (next_change(state, now), hold_ends(memory)) if t]
                    due = min(ends, default=None)
                except Exception:  # a bug must not end every edge's updates for good
                    log.exception("edge feed: the routing table could not be computed")
                    due, inputs = None, None
                    continue
                inputs = now_inputs
                self.computed += 1
                if self._config is not None and list(self._config.routes) == routes:
                    continue
                self._version = max(state.revision, self._version + 1)
                self._config = pb.EdgeConfig(version=self._version, routes=routes)
                for wake in self._wakers.values():
                    wake.set()
        finally:
            self._subscription = None
            self._informer.unsubscribe(subscription)

    async def close(self) -> None:
        """Stop the feed (the sessions' pushes end with their sessions)."""
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed
