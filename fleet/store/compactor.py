"""Compaction of etcd's history by the leader, as kube-apiserver does it.

etcd keeps every revision of every key until told otherwise; with hosts reporting
every few seconds its database grows without end. Every ``interval`` the leader
compacts to the revision it recorded at the previous tick, so at least one interval of
history is always kept: a watcher further behind gets a compacted error and lists
again (``fleet.store.informer``).
"""

from __future__ import annotations

import asyncio
import logging

from fleet.errors import Unavailable
from fleet.store._etcd import Etcd

__all__ = ["DEFAULT_COMPACT_INTERVAL", "Compactor"]

log = logging.getLogger(__name__)

DEFAULT_COMPACT_INTERVAL = 300.0  # seconds, kube-apiserver's --etcd-compaction-interval


class Compactor:
    """Run by the leader only; ``run()`` until cancelled."""

    def __init__(self, etcd: Etcd, interval: float = DEFAULT_COMPACT_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError("a compaction interval must be positive (0 means: no compactor)")
        self._etcd = etcd
        self.interval = interval
        self.compacted = 0  # the revision etcd's history now starts at (0: not yet)

    async def run(self) -> None:
        previous = 0  # the revision recorded at the last tick
        while True:
            await asyncio.sleep(self.interval)
            try:
                current = await self._etcd.revision()
                if previous:
                    await self.compact(previous)
                previous = current
            except Unavailable as error:
                log.warning("etcd compaction: %s", error)

    async def compact(self, revision: int) -> None:
        if await self._etcd.compact(revision):
            log.debug("compacted etcd's history up to revision %d", revision)
        else:
            log.debug("etcd's history was already compacted past revision %d", revision)
        self.compacted = max(self.compacted, revision)
