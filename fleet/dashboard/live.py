"""What makes the dashboard live: one subscription to the informer and one follower of
the event log for the whole server, however many browsers watch.

``ChangeHub`` turns the informer's wake-ups into numbered "topic changed" notices (at
most one computation per ``min_interval``); each browser's server-sent-event stream
waits for a notice newer than the last it sent and sends the topics it missed, paced
the same way, so a page fetches its one view again only when that view has changed.
``EventFeed`` keeps the newest events in memory from a single watch of the event log
(events are kept out of the informer's cache). ``UsageHistory`` samples each app's
live usage for the app page's sparklines from the same state.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from fleet.dashboard.views import topic_marks
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, EventLog, Informer

__all__ = ["ChangeHub", "EventFeed", "UsageHistory", "app_usage"]

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.5  # seconds: at most two notices a second, per browser too
# Live usage changes with every heartbeat of every host: its notice (which makes the
# pool and app pages fetch again) goes out at most this often.
USAGE_INTERVAL = 5.0
EVENTS_KEPT = 1000
USAGE_SAMPLES = 60


def app_usage(state: ClusterState) -> dict[str, tuple[float, int]]:
    """Each app's live usage, summed over its containers' last reports."""
    totals: dict[str, tuple[float, int]] = {}
    for status in state.status.values():
        for key, (cpu, memory) in status.value.container_usage.items():
            app = key.split("/", 1)[0]
            old_cpu, old_memory = totals.get(app, (0.0, 0))
            totals[app] = (old_cpu + cpu, old_memory + memory)
    return totals


class UsageHistory:
    """The last ``USAGE_SAMPLES`` usage totals of every app, one per change of the
    agents' reports (about one per heartbeat)."""

    def __init__(self) -> None:
        self._samples: dict[str, collections.deque[tuple[float, int]]] = {}
        self._mark: int | None = None

    def observe(self, state: ClusterState) -> None:
        mark = state.changes.status if state.changes is not None else state.revision
        if mark == self._mark:
            return
        self._mark = mark
        for app, usage in app_usage(state).items():
            self._samples.setdefault(app, collections.deque(maxlen=USAGE_SAMPLES)).append(usage)
        for app in list(self._samples):
            if app not in state.apps:
                del self._samples[app]

    def of(self, app: str) -> list[tuple[float, int]]:
        return list(self._samples.get(app, ()))


class ChangeHub:
    """Numbered notices of which topics changed (see ``views.topic_marks``)."""

    def __init__(self, informer: Informer, usage: UsageHistory) -> None:
        self._informer = informer
        self._usage = usage
        self.sequence = 0
        self._changed_at: dict[str, int] = {}
        self._advanced = asyncio.Condition()

    async def publish(self, topics: list[str]) -> None:
        if not topics:
            return
        self.sequence += 1
        for topic in topics:
            self._changed_at[topic] = self.sequence
        async with self._advanced:
            self._advanced.notify_all()

    def changed_since(self, sequence: int) -> list[str]:
        return sorted(t for t, at in self._changed_at.items() if at > sequence)

    async def wait_past(self, sequence: int) -> None:
        async with self._advanced:
            await self._advanced.wait_for(lambda: self.sequence > sequence)

    async def run(
        self, min_interval: float = MIN_INTERVAL, usage_interval: float = USAGE_INTERVAL
    ) -> None:
        subscription = self._informer.subscribe()
        last: dict[str, object] = {}
        loop = asyncio.get_running_loop()
        usage_sent = -usage_interval
        try:
            while True:
                await subscription.wait()
                state = self._informer.state()
                self._usage.observe(state)
                marks = topic_marks(state)
                changed = [t for t, mark in marks.items() if last.get(t) != mark]
                if "usage" in changed and loop.time() - usage_sent < usage_interval:
                    changed.remove("usage")  # told with a later heartbeat's
                    marks["usage"] = last.get("usage")
                elif "usage" in changed:
                    usage_sent = loop.time()
                await self.publish(changed)
                last = marks
                await asyncio.sleep(min_interval)  # changes meanwhile: one wake-up
        finally:
            self._informer.unsubscribe(subscription)


class EventFeed:
    """The newest ``EVENTS_KEPT`` events, from one watch of the event log; resumes (by
    reading the newest again) whenever the watch breaks."""

    def __init__(self, events: EventLog, on_new: Callable[[], Awaitable[None]]) -> None:
        self._log = events
        self._on_new = on_new
        self.events: collections.deque[pb.Event] = collections.deque(maxlen=EVENTS_KEPT)

    async def run(self, retry: float = 2.0) -> None:
        while True:
            try:
                newest, revision = await self._log.newest(EVENTS_KEPT, lambda _: True)
                self.events.clear()
                self.events.extend(newest)
                await self._on_new()
                async for event in self._log.follow(revision):
                    self.events.append(event)
                    await self._on_new()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # etcd away: the watch breaks; read again later
                log.warning("dashboard event feed broke (%s); again in %gs", error, retry)
            await asyncio.sleep(retry)
