"""What the agent watches on its host between reconcile rounds: the runtime's events
(each queued for the control plane, and each wakes the reconcile loop) and live usage
(sampled every few seconds for the heartbeats).

Both keep going whatever fails: a broken event stream is followed again after a pause
(the reconcile loop is woken, since events may have been missed), a failed sample
keeps the last usage. Each failure is a warning once per cause, until it works again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from fleet.agent.events import from_docker
from fleet.agent.logonce import WarnOnce
from fleet.agent.runtime import FollowedEvents, PushedEvents, Runtime, call
from fleet.agent.state import HostState

__all__ = ["HostWatch"]

log = logging.getLogger(__name__)


class HostWatch:
    """Follows one runtime's events and samples its usage into the host's state."""

    def __init__(self, runtime: Runtime, state: HostState) -> None:
        self.runtime = runtime
        self.state = state
        self._stop = threading.Event()
        self._stream_broke = WarnOnce(log, "docker events stream broke")
        self._sampling_failed = WarnOnce(log, "usage sampling failed")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start taking the runtime's events, however it delivers them."""
        runtime = self.runtime
        if isinstance(runtime, PushedEvents):
            runtime.push_events(self._on_pushed_event)
        elif isinstance(runtime, FollowedEvents):
            # A daemon thread: a blocking read of Docker's event stream must never hold
            # up the process's exit.
            thread = threading.Thread(
                target=self._follow, args=(loop, runtime), name="docker-events", daemon=True
            )
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        runtime = self.runtime
        if isinstance(runtime, PushedEvents):
            runtime.push_events(None)
        elif isinstance(runtime, FollowedEvents):
            runtime.stop_events()

    def _on_event(self, loop: asyncio.AbstractEventLoop, raw: dict[str, Any]) -> None:
        """Queue the event and wake the reconcile loop, from the events thread."""
        event = from_docker(raw)
        if event is not None:
            loop.call_soon_threadsafe(self.state.events.put, event)
        loop.call_soon_threadsafe(self.state.wake.set)

    def _on_pushed_event(self, raw: dict[str, Any]) -> None:
        """The same, called on the loop by a runtime that pushes its events: no hop
        through the loop's wake-up pipe (a write to it per event was a tenth of what a
        process of 250 hollow hosts spent starting their containers)."""
        event = from_docker(raw)
        if event is not None:
            self.state.events.put(event)
        self.state.wake.set()

    def _follow(self, loop: asyncio.AbstractEventLoop, runtime: FollowedEvents) -> None:
        delay = 0.2

        def on_event(raw: dict[str, Any]) -> None:
            self._stream_broke.worked()
            self._on_event(loop, raw)

        while not self._stop.is_set():
            try:
                runtime.events(on_event, self._stop)
                delay = 0.2
            except Exception as error:  # dockerd restarting: follow again after a pause
                self._stream_broke.failed(error)
                loop.call_soon_threadsafe(self.state.wake.set)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 5.0)

    async def sample_usage_forever(self, every: float) -> None:
        """Keep the state's usage fresh for heartbeats; a failed round keeps the last."""
        while True:
            try:
                self.state.usage = await call(self.runtime, self.runtime.sample_usage)
                self._sampling_failed.worked()
            except Exception as error:  # dockerd away: usage is simply not refreshed
                self._sampling_failed.failed(error)
            await asyncio.sleep(every)
