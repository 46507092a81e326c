"""Lease keep-alives from a thread of their own, vouched for by the event loop.

The control plane's event loop is busy in bursts: a controller round over 100,000
replicas, a thousand agents reporting at once. Renewals sent from that loop waited
behind the work, so at 2,000 hosts the 15 s host leases expired in waves, every agent
registered again, and that made the next burst. ``LeaseKeeper`` renews from its own
thread over its own synchronous gRPC channel, so a renewal waits only for etcd.

It still renews only what the loop vouches for, in the loop's own time: ``loop_seen``
is when the newest probe the loop has run was posted, so everything that reached the
loop before then has been handled.

- A **host** lease is renewed while the loop has heard from the host within the
  lease's TTL of ``loop_seen``; a host silent for longer is revoked, so it is down
  about one TTL after its last word, however far behind the loop runs.
- A **leader** lease is renewed while the loop itself keeps up.
- Nothing is renewed once the loop has not run a probe for ``stall_limit``: a wedged
  process lets its hosts and its leadership go to a healthy replica.

If the whole process dies, every lease simply expires one TTL after its last renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from aetcd import rpc

from fleet.store._etcd import _target
from fleet.transport import TlsFiles, Transport

__all__ = ["LeaseKeeper", "Verdict", "verdict"]

log = logging.getLogger(__name__)

# Leases are renewed over this many keep-alive streams at once. etcd answers the
# renewals of one stream one after another, each after its applied index catches up,
# so under a write burst one stream for a thousand leases fell seconds behind.
STREAMS = 8


class Verdict(enum.Enum):
    RENEW = "renew"
    WAIT = "wait"  # renewed recently enough
    REVOKE = "revoke"  # the holder went silent
    LOST = "lost"  # not renewed within its TTL: it has expired, or is about to


@dataclass(slots=True)
class _Held:
    ttl: float
    for_host: bool  # renewed while the host is heard (True) or while the loop runs
    heard: float  # loop time of the holder's last word
    renewed: float  # when the newest renewal etcd acknowledged was sent
    lost: str | None = None  # why it is no longer kept (None: kept)
    waiter: asyncio.Future[str] | None = None  # wait_lost()'s, completed on the loop


def verdict(held: _Held, now: float, loop_seen: float, stall_limit: float) -> Verdict:
    """What the keeper does with one lease at ``now`` (pure: time is a parameter)."""
    if now - held.renewed >= held.ttl:
        return Verdict.LOST
    if held.for_host and loop_seen - held.heard > held.ttl:
        return Verdict.REVOKE
    if now - loop_seen >= stall_limit:
        return Verdict.WAIT  # the loop is wedged: vouch for nothing until it runs again
    # A quarter of the TTL between renewals leaves three renewals' worth of slack.
    return Verdict.RENEW if now - held.renewed >= held.ttl / 4 else Verdict.WAIT


class LeaseKeeper:
    """Keeps leases alive from its own thread; ``start(loop)``, then ``close()``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: TlsFiles | None = None,
        tick: float = 0.5,
        timeout: float = 5.0,
        stall_limit: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = Transport(tls).channel(
            _target(endpoints),
            options=[("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)],
        )
        self._stub = rpc.LeaseStub(self._channel)
        self._tick = tick
        self._timeout = timeout
        self._stall_limit = stall_limit
        self._clock = clock
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()  # guards _held's membership; fields are plain stores
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_seen = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(STREAMS, thread_name_prefix="etcd-lease")
        self._streams: list[Future[None] | None] = [None] * STREAMS
        # The slowest first answer of a renewal stream lately: how far etcd's apply
        # runs behind (etcd renews only once its applied index has caught up).
        self.renewal_lag = 0.0
        self.renewals = 0  # acknowledged renewals, for tests and metrics

    # ------------------------------------------------------------ the loop's side

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_seen = self._clock()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._timeout + self._tick)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._channel.close()

    def hold_host(self, lease: int, ttl: float) -> None:
        """Keep a host's lease while the host is heard from (see ``heard``)."""
        self._hold(lease, ttl, for_host=True)

    def hold_leader(self, lease: int, ttl: float) -> None:
        """Keep the leader's lease while the event loop keeps up."""
        self._hold(lease, ttl, for_host=False)

    def _hold(self, lease: int, ttl: float, *, for_host: bool) -> None:
        now = self._clock()  # granted just now: as good as renewed
        with self._lock:
            self._held[lease] = _Held(ttl, for_host, heard=now, renewed=now)

    def heard(self, lease: int) -> None:
        """The lease's host spoke just now (called from the loop, at every message)."""
        held = self._held.get(lease)
        if held is not None:
            held.heard = self._clock()

    def lost(self, lease: int) -> str | None:
        """Why the lease is no longer kept (None while it is, or was never held)."""
        held = self._held.get(lease)
        return None if held is None else held.lost

    async def wait_lost(self, lease: int) -> str:
        """Wait until the held lease is lost; returns why."""
        held = self._held[lease]
        if held.waiter is None:
            held.waiter = asyncio.get_running_loop().create_future()
        # The keeper sets ``lost`` before it reads ``waiter``, and this is the other way
        # round, so a loss at the same moment is seen by one side or the other.
        if held.lost is not None:
            return held.lost
        return await asyncio.shield(held.waiter)

    def release(self, lease: int) -> None:
        """Stop keeping the lease (its owner revokes it, or lets it expire)."""
        with self._lock:
            self._held.pop(lease, None)

    # ------------------------------------------------------------ the keeper's side

    def _probe(self, posted: float) -> None:
        self._loop_seen = max(self._loop_seen, posted)

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = self._clock()
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._probe, now)
            try:
                self._round(now)
            except Exception:  # the thread must outlive any one bad round
                log.exception("lease keeper round failed")

    def _round(self, now: float) -> None:
        with self._lock:
            held = list(self._held.items())
        due: list[list[int]] = [[] for _ in range(STREAMS)]
        for lease, entry in held:
            if entry.lost is not None:
                continue
            match verdict(entry, now, self._loop_seen, self._stall_limit):
                case Verdict.RENEW:
                    due[lease % STREAMS].append(lease)
                case Verdict.REVOKE:
                    self._lose(entry, f"was revoked: nothing heard for {entry.ttl:g}s")
                    self._pool.submit(self._revoke, lease)
                case Verdict.LOST:
                    self._lose(entry, f"expired: not renewed for {entry.ttl:g}s")
                case Verdict.WAIT:
                    pass
        for shard, leases in enumerate(due):
            running = self._streams[shard]
            if leases and (running is None or running.done()):
                self._streams[shard] = self._pool.submit(self._renew, leases)

    def _lose(self, held: _Held, why: str) -> None:
        if held.lost is not None:
            return
        held.lost = why
        waiter, loop = held.waiter, self._loop
        if waiter is not None and loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_complete, waiter, why)

    def _renew(self, leases: list[int]) -> None:
        """Renew ``leases`` over one keep-alive stream (etcd answers them in order)."""
        sent = self._clock()
        first: float | None = None
        try:
            requests: Iterable[object] = (rpc.LeaseKeepAliveRequest(ID=lease) for lease in leases)
            for response in self._stub.LeaseKeepAlive(iter(requests), timeout=self._timeout):
                if first is None:
                    first = self._clock() - sent
                held = self._held.get(int(response.ID))
                if held is None:
                    continue
                if response.TTL <= 0:
                    self._lose(held, "expired in etcd")
                else:
                    held.renewed = sent
                    self.renewals += 1
        except grpc.RpcError as error:
            # The unanswered leases stay due and go at the next tick.
            log.warning("lease keep-alive: %s", _describe(error))
        finally:
            lag = first if first is not None else self._clock() - sent
            self.renewal_lag = max(lag, self.renewal_lag * 0.5)

    def _revoke(self, lease: int) -> None:
        try:
            self._stub.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease), timeout=self._timeout)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                log.warning("lease revoke: %s (it expires by itself)", _describe(error))


def _complete(waiter: asyncio.Future[str], why: str) -> None:
    if not waiter.done():
        waiter.set_result(why)


def _describe(error: grpc.RpcError) -> str:
    code = error.code()
    return f"etcd: {code.name}: {error.details()}"
