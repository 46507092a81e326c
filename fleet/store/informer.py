"""A watch-driven cache of everything under the prefix, as Kubernetes' informers do.

It lists once, then follows a watch from the next revision, applying each change to a
``LiveState`` (decoded once, indexed as it goes). When the watch breaks (etcd
restarted, a member was lost) it resumes from the last revision it saw; when that
revision was compacted it lists again. Subscribers are woken on every change; they read
the whole state (level-triggered), so a wake-up that was coalesced loses nothing, and
its ``changes`` tell them what they need to look at again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging

from fleet.errors import Unavailable
from fleet.store._etcd import LIST_PAGE, Etcd, WatchCompacted, WatchEvent, prefix_end
from fleet.store.keys import KeyLayout
from fleet.store.live import LiveState
from fleet.store.state import ClusterState
from fleet.store.written import Written

__all__ = ["Informer", "Subscription"]

log = logging.getLogger(__name__)

_EVENTS_PER_TURN = 500  # changes applied between two turns of the loop's other work


class Subscription:
    """A wake-up flag: ``wait()`` returns once something changed since the last call."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event.clear()


class Informer:
    def __init__(
        self,
        etcd: Etcd,
        layout: KeyLayout,
        *,
        retry_max: float = 2.0,
        list_page: int = LIST_PAGE,
        written: Written | None = None,
    ) -> None:
        self._etcd = etcd
        self._written = written  # records this process wrote (``Store.written``)
        self._list_page = list_page  # keys a page of the first list (``Etcd.get_all``)
        self._layout = layout
        self._retry_max = retry_max
        self._live = LiveState(layout)
        # Events are many and read only by `fleet events`: kept out of the cache.
        self._skip = layout.events()
        self._revision = 0
        self._subscriptions: list[Subscription] = []
        self._synced = asyncio.Event()
        # Callers waiting for a revision, soonest first: (revision, order, future). Woken
        # only once it is reached (a storm of registrations waits here together).
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_order = itertools.count()

    @property
    def revision(self) -> int:
        return self._revision

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def wait_for_revision(self, revision: int) -> None:
        """Return once the cache has seen ``revision`` (e.g. a write of our own)."""
        if self._revision >= revision:
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._waiter_order), waiter))
        await waiter

    def state(self) -> ClusterState:
        """The state at the latest revision seen (one snapshot per revision)."""
        return self._live.snapshot()

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscriptions.append(subscription)
        subscription.notify()  # a new subscriber looks at the state once
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    async def _notify(self, changed: bool = True) -> None:
        """Wake the subscribers (if the state ``changed``) and the revision's waiters."""
        if changed:
            for subscription in self._subscriptions:
                subscription.notify()
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._revision:
            _, _, waiter = heapq.heappop(waiters)
            if not waiter.done():  # (its caller may have given up: cancelled)
                waiter.set_result(None)

    async def _list(self) -> None:
        # Everything but the events, at one revision: the keys before the events' folder,
        # then those after it. Events never stand between a control plane and its state
        # (345 MB of them once kept a restarted one from starting at all).
        # Each page is decoded as the next is read (``Etcd.pages``), and the loop turns
        # between pages: a restarted control plane at 5,000 hosts lists 250,000 keys.
        # A revision compacted before the last page: WatchCompacted, and ``run`` lists
        # again.
        root, skip = self._layout.root, self._skip
        live = LiveState(self._layout)
        revision = 0  # the first page's, which the rest are read at
        for start, end in ((root, skip), (prefix_end(skip), prefix_end(root))):
            pages = self._etcd.pages(start, end, revision=revision, page=self._list_page)
            async for kvs, at in pages:
                revision = at
                for kv in kvs:
                    live.apply(kv.key, kv.value, kv.mod_revision)
        live.revision = revision
        self._live, self._revision = live, revision
        if self._written is not None:
            # The watch goes on from the listed revision: what was written before it is
            # never shown, and would stay held until newer writes pushed it out.
            self._written.clear()
        self._synced.set()
        await self._notify()

    async def run(self) -> None:
        """List, then follow the watch forever; never returns unless cancelled."""
        delay = 0.1
        listed = False
        while True:
            try:
                if not listed:
                    await self._list()
                    listed = True
                # The watch's answers come in pieces of at most etcd's request size
                # (``fragments``): a watch behind by 20,000 reports otherwise got them in
                # one answer held whole, and parsed, before the first was applied. A
                # piece's last revision may go on in the next: it is held back, so that
                # the state is only ever seen at the end of a revision.
                held: list[WatchEvent] = []
                async for batch in self._etcd.watch_prefix(
                    self._layout.root, self._revision + 1, skip=self._skip, fragments=True
                ):
                    applied = 0
                    last = 0  # the revision of the change applied last
                    changed = False  # (all of the answer's changes may be left out)
                    written = self._written
                    tail: list[WatchEvent] = []
                    for event in itertools.chain(held, batch) if held else batch:
                        if batch.fragment and event.mod_revision == batch.revision:
                            tail.append(event)
                            continue
                        if applied >= _EVENTS_PER_TURN and event.mod_revision != last:
                            # A revision is whole here: readers and heartbeats go before
                            # the rest (one answer of etcd held 8,000 reports, which
                            # held every call to the server for a second and more).
                            await asyncio.sleep(0)
                            applied = 0
                        made = None
                        if written is not None and event.value is not None:
                            made = written.take(event.key, event.value)
                        self._live.apply(event.key, event.value, event.mod_revision, made)
                        self._revision = max(self._revision, event.mod_revision)
                        last = event.mod_revision
                        applied += 1
                        changed = True
                    held = tail
                    # The watch is past the keys it left out too (events): a caller
                    # waiting for etcd's current revision, which an event's write may
                    # be, is not kept waiting for the next change of the state (an
                    # apply that lost a race waited 10 s for it once, and failed). A
                    # piece is past every revision before its last.
                    past = batch.revision - 1 if batch.fragment else batch.revision
                    self._revision = max(self._revision, past)
                    self._live.revision = self._revision
                    await self._notify(changed=changed)
                    delay = 0.1
            except WatchCompacted as compacted:
                log.warning("watch fell behind compaction (%s); listing again", compacted)
                listed = False
            except Unavailable as error:
                log.warning("etcd watch broke (%s); resuming in %.1fs", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
