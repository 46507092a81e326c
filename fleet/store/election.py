"""Leader election among control-plane replicas: an etcd key bound to a lease.

A candidate becomes leader by creating the ``leader`` key (a transaction that only
succeeds while the key does not exist), bound to a lease it keeps alive. The key's
creation revision is the **fencing revision**: every controller write is guarded on the
key still having that revision, so a deposed leader's late writes (after a pause, a
partition, a lease that expired under it) fail instead of landing. When the leader
dies its lease expires after ``ttl`` seconds and the key goes with it; a leader that
stops resigns (revokes its lease), and the key goes at once. A standby watches the key
and campaigns as soon as it is deleted, either way. The ``LeaseKeeper`` renews the
lease from its own thread while this process's event loop keeps up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fleet._time import now_iso
from fleet.errors import Unavailable
from fleet.store._etcd import Compare, Etcd, Put, WatchCompacted
from fleet.store.keys import KeyLayout
from fleet.store.leases import LeaseKeeper

__all__ = ["Election", "LostLeadership"]

log = logging.getLogger(__name__)


class LostLeadership(Exception):
    """The lease behind the leader key expired or could not be kept alive in time."""


class Election:
    def __init__(
        self,
        etcd: Etcd,
        layout: KeyLayout,
        candidate: str,
        keeper: LeaseKeeper,
        *,
        ttl: int = 4,
        poll: float = 0.1,  # seconds between tries when etcd fails
    ) -> None:
        self._etcd = etcd
        self._keeper = keeper
        self._key = layout.leader()
        self.candidate = candidate
        self.ttl = ttl
        self._poll = poll
        self._lease = 0
        self.fence: Compare | None = None  # set while leading

    async def leader(self) -> str | None:
        """Who leads now (the candidate id in the key), None when nobody does."""
        kv = await self._etcd.get(self._key)
        if kv is None:
            return None
        try:
            return str(json.loads(kv.value)["candidate"])
        except (ValueError, KeyError, TypeError):
            return None

    async def campaign(self) -> Compare:
        """Wait until this candidate leads; returns the fence its writes carry."""
        while True:
            try:
                found, revision, _ = await self._etcd.get_range(self._key, self._key + b"\0")
                if found:
                    await self._wait_deleted(revision)
                    continue
                lease = await self._etcd.grant(self.ttl)
                value = json.dumps({"candidate": self.candidate, "since": now_iso()})
                result = await self._etcd.txn(
                    [Compare(self._key, 0)], [Put(self._key, value.encode(), lease)]
                )
                if result.succeeded:
                    self._lease = lease
                    self._keeper.hold(lease, self.ttl)
                    # The put was the key's creation: its revision is the txn's.
                    self.fence = Compare(self._key, result.revision)
                    log.info("%s leads (fencing revision %d)", self.candidate, result.revision)
                    return self.fence
                await self._etcd.revoke(lease)
            except (Unavailable, WatchCompacted) as error:
                log.warning("election: %s", error)
            await asyncio.sleep(self._poll)

    async def _wait_deleted(self, revision: int) -> None:
        """Until the leader key is deleted after ``revision`` (a leader resigned, or its
        lease expired), seen by a watch; at most ``ttl`` seconds, then the caller reads
        the key again (a watch that went quiet costs no more than a lease's life)."""
        with contextlib.suppress(TimeoutError):
            async with (
                asyncio.timeout(self.ttl),
                contextlib.aclosing(self._etcd.watch_prefix(self._key, revision + 1)) as watch,
            ):
                async for batch in watch:
                    if any(e.key == self._key and e.value is None for e in batch):
                        return

    async def keep(self) -> None:
        """Return only by raising ``LostLeadership``, once the keeper lost the lease."""
        why = await self._keeper.wait_lost(self._lease)
        self._keeper.release(self._lease)
        raise LostLeadership(f"the leader lease {why}")

    async def resign(self) -> None:
        """Give leadership up at once (a clean shutdown): a standby takes over now."""
        self.fence = None
        if self._lease:
            self._keeper.release(self._lease)
            try:
                await self._etcd.revoke(self._lease)
                log.info("%s resigned: a standby may lead now", self.candidate)
            except Unavailable as error:
                log.warning("could not resign (the lease will expire): %s", error)
            self._lease = 0
