"""Lease keep-alives from a thread of their own, and hosts' silence, as the event loop
sees it.

The control plane's event loop is busy in bursts: a controller round over 100,000
replicas, a thousand agents reporting at once. Renewals sent from that loop waited
behind the work, so leases expired under a busy server. ``LeaseKeeper`` renews from
its own thread over its own synchronous gRPC channel, so a renewal waits only for etcd.

It renews only what the loop vouches for, in the loop's own time: ``loop_seen`` is
when the newest probe the loop has run was posted, so everything that reached the
loop before then has been handled.

- A **lease** (the leader's, a control plane's own) is renewed while the loop keeps
  up; once the loop has not run a probe for ``stall_limit``, nothing is renewed and a
  wedged process lets its hosts and its leadership go to a healthy replica.
- A **host** holds no etcd lease of its own (at 5,000 hosts, etcd answered the
  renewals of one stream one after another, each after its applied index caught up,
  and fell minutes behind under a write burst). The keeper watches when the loop last
  heard from it; a host silent for its TTL of ``loop_seen`` is reported silent, so
  it is down about one TTL after its last word however far behind the loop runs.

If the whole process dies, its leases expire one TTL after their last renewal, and
with them every key of the hosts it served.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import math
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from aetcd import rpc

from fleet.store._etcd import CHANNEL_OPTIONS
from fleet.store._members import Members
from fleet.transport import TlsFiles, Transport

__all__ = ["LeaseKeeper", "Verdict", "is_silent", "verdict"]

log = logging.getLogger(__name__)


# The keeper logs the loop's stack when it has run no probe for this long (seconds).
STALL_LOGGED = 1.0
_STALL_LOG_EVERY = 10.0
_STALL_FRAMES = 14


class Verdict(enum.Enum):
    RENEW = "renew"
    WAIT = "wait"  # renewed recently enough, or the loop is wedged
    LOST = "lost"  # not renewed within its TTL: it has expired, or is about to


@dataclass(slots=True)
class _Held:
    ttl: float
    renewed: float  # when the newest renewal etcd acknowledged was sent
    lost: str | None = None  # why it is no longer kept (None: kept)
    waiter: asyncio.Future[str] | None = None  # wait_lost()'s, completed on the loop


@dataclass(slots=True)
class _Watched:
    ttl: float
    heard: float  # loop time of the host's last word
    on_silent: Callable[[], None]  # called on the loop once the host is silent
    silent: bool = False


def verdict(held: _Held, now: float, loop_seen: float, stall_limit: float) -> Verdict:
    """What the keeper does with one lease at ``now`` (pure: time is a parameter)."""
    if now - held.renewed >= held.ttl:
        return Verdict.LOST
    if now - loop_seen >= stall_limit:
        return Verdict.WAIT  # the loop is wedged: vouch for nothing until it runs again
    # A quarter of the TTL between renewals leaves three renewals' worth of slack.
    return Verdict.RENEW if now - held.renewed >= held.ttl / 4 else Verdict.WAIT


def is_silent(heard: float, ttl: float, loop_seen: float) -> bool:
    """Whether a host last heard at ``heard`` has been silent for ``ttl`` of the loop's
    time (pure). A loop running behind has not read what the host sent since."""
    return loop_seen - heard > ttl


_RELEASED_LOST_KEPT = 64  # leases lost and released whose loss is still told


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
        # A channel per member, as ``Etcd`` has (see ``_members``): renewals that fail on
        # one go to the next member at the next tick.
        transport = Transport(tls)
        self._members = Members(
            endpoints, lambda target: transport.channel(target, options=CHANNEL_OPTIONS)
        )
        self._stubs = [rpc.LeaseStub(channel) for channel in self._members.channels]
        self._tick = tick
        self._timeout = timeout
        self._stall_limit = stall_limit
        self._clock = clock
        self._held: dict[int, _Held] = {}
        # Leases released once lost, with why: the sessions still bound to one must hear
        # it is gone (``lost``), however late they ask. A replica that re-granted its lost
        # lease released it at the first reconnect, and a host whose heartbeat came after
        # that was never told: its reports failed for minutes (the soak found it).
        self._released_lost: dict[int, str] = {}
        self._watched: dict[int, _Watched] = {}  # by session (the host's alive revision)
        self._lock = threading.Lock()  # guards both dicts' membership; fields are plain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_seen = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Renewals go from a worker, so that one waiting on etcd (up to ``timeout``)
        # does not hold up the rounds; the few leases held (this replica's, the
        # leader's) share one keep-alive stream a round.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="etcd-lease")
        self._renewing: Future[None] | None = None
        self.renewals = 0  # acknowledged renewals, for tests
        # Called on the loop with each probe's wait: from the keeper posting it to the
        # loop running it (its few hops included), the wait of anything that arrives.
        self.observe_lag: Callable[[float], None] | None = None
        self._loop_thread: int | None = None
        self._stall_logged_at = -math.inf  # when a stall's stack was last logged

    # ------------------------------------------------------------ the loop's side

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_seen = self._clock()
        self._loop_thread = threading.get_ident()  # called on the loop
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._timeout + self._tick)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for channel in self._members.channels:
            channel.close()

    def hold(self, lease: int, ttl: float) -> None:
        """Keep ``lease`` alive while the event loop keeps up."""
        now = self._clock()  # granted just now: as good as renewed
        with self._lock:
            self._held[lease] = _Held(ttl, renewed=now)

    def watch(self, session: int, ttl: float, on_silent: Callable[[], None]) -> None:
        """Watch a host's session for silence; ``on_silent`` runs on the loop once it
        has been silent for ``ttl`` (see ``heard``)."""
        with self._lock:
            self._watched[session] = _Watched(ttl, heard=self._clock(), on_silent=on_silent)

    def heard(self, session: int) -> None:
        """The session's host spoke just now (called from the loop, at every message)."""
        watched = self._watched.get(session)
        if watched is not None:
            watched.heard = self._clock()

    def silent(self, session: int) -> bool:
        watched = self._watched.get(session)
        return watched is not None and watched.silent

    def unwatch(self, session: int) -> None:
        with self._lock:
            self._watched.pop(session, None)

    def lost(self, lease: int) -> str | None:
        """Why the lease is no longer kept (None while it is, or was never held, or was
        released without being lost)."""
        held = self._held.get(lease)
        return self._released_lost.get(lease) if held is None else held.lost

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

    def renew_now(self, lease: int) -> float:
        """Renew ``lease`` once, at once (blocking: call it from a worker thread); its
        TTL after the renewal, 0 if it has expired. For a lease taken over from a
        predecessor, which may have a second left when it is taken."""
        member = self._members.current
        request = rpc.LeaseKeepAliveRequest(ID=lease)
        try:
            for response in self._stubs[member].LeaseKeepAlive(
                iter([request]), timeout=self._timeout
            ):
                return float(response.TTL)
        except grpc.RpcError as error:
            self._members.failed(member, error.code(), error.details())
            log.warning("lease keep-alive: %s", _describe(error))
        return 0.0

    def release(self, lease: int) -> None:
        """Stop keeping the lease (its owner revokes it, or lets it expire)."""
        with self._lock:
            held = self._held.pop(lease, None)
            if held is not None and held.lost is not None:
                self._released_lost[lease] = held.lost
                while len(self._released_lost) > _RELEASED_LOST_KEPT:
                    del self._released_lost[next(iter(self._released_lost))]

    # ------------------------------------------------------------ the keeper's side

    def _probe(self, posted: float, hops: int = 3) -> None:
        """Runs on the loop. It counts only a few loop iterations later: after a stall
        the loop runs every queued probe before it polls its sockets, and what the
        hosts sent meanwhile is read in the iterations after that poll."""
        if hops > 1 and self._loop is not None:
            self._loop.call_soon(self._probe, posted, hops - 1)
            return
        self._loop_seen = max(self._loop_seen, posted)
        if self.observe_lag is not None:
            self.observe_lag(self._clock() - posted)

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            now = self._clock()
            self._call_on_loop(functools.partial(self._probe, now))
            try:
                self._round(now)
                self._log_stall(now)
            except Exception:  # the thread must outlive any one bad round
                log.exception("lease keeper round failed")

    def _log_stall(self, now: float) -> None:
        """Log where the loop is when it has run none of the probes for ``STALL_LOGGED``
        seconds (every request and heartbeat waits that long), at most once every
        ``_STALL_LOG_EVERY``: what holds it, for whoever looks at the log."""
        held = now - self._loop_seen
        if held < STALL_LOGGED or now - self._stall_logged_at < _STALL_LOG_EVERY:
            return
        frame = sys._current_frames().get(self._loop_thread or -1)
        if frame is None:
            return
        self._stall_logged_at = now
        stack = "".join(traceback.format_stack(frame, limit=_STALL_FRAMES))
        log.warning(
            "the event loop has run none of the last %.1f s of probes; it is at "
            "(innermost last):\n%s",
            held,
            stack.rstrip(),
        )

    def _round(self, now: float) -> None:
        with self._lock:
            held = list(self._held.items())
            watched = list(self._watched.values())
        loop_seen = self._loop_seen
        for host in watched:
            if not host.silent and is_silent(host.heard, host.ttl, loop_seen):
                host.silent = True
                self._call_on_loop(host.on_silent)
        due: list[int] = []
        for lease, entry in held:
            if entry.lost is not None:
                continue
            match verdict(entry, now, loop_seen, self._stall_limit):
                case Verdict.RENEW:
                    due.append(lease)
                case Verdict.LOST:
                    self._lose(entry, f"expired: not renewed for {entry.ttl:g}s")
                case Verdict.WAIT:
                    pass
        if due and (self._renewing is None or self._renewing.done()):
            self._renewing = self._pool.submit(self._renew, due)

    def _call_on_loop(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback)

    def _lose(self, held: _Held, why: str) -> None:
        if held.lost is not None:
            return
        held.lost = why
        waiter = held.waiter
        if waiter is not None:
            self._call_on_loop(lambda: _complete(waiter, why))

    def _renew(self, leases: list[int]) -> None:
        """Renew ``leases`` over one keep-alive stream (etcd answers them in order)."""
        sent = self._clock()
        member = self._members.current
        try:
            requests = (rpc.LeaseKeepAliveRequest(ID=lease) for lease in leases)
            stub = self._stubs[member]
            for response in stub.LeaseKeepAlive(requests, timeout=self._timeout):
                held = self._held.get(int(response.ID))
                if held is None:
                    continue
                if response.TTL <= 0:
                    self._lose(held, "expired in etcd")
                else:
                    held.renewed = sent
                    self.renewals += 1
        except grpc.RpcError as error:
            # The unanswered leases stay due and go at the next tick (to the next
            # member, if this one is in trouble).
            log.warning("lease keep-alive: %s", _describe(error))
            self._members.failed(member, error.code(), error.details())


def _complete(waiter: asyncio.Future[str], why: str) -> None:
    if not waiter.done():
        waiter.set_result(why)


def _describe(error: grpc.RpcError) -> str:
    code = error.code()
    return f"etcd: {code.name}: {error.details()}"
