"""A small etcd v3 client over aetcd's generated stubs, on grpc.aio channels we build.

aetcd's own ``Client`` dials one ``host:port`` over an insecure channel and its watches
die with the connection; fleet needs several endpoints, TLS, and watches that resume
from a revision. So this module keeps aetcd's protobuf stubs (``aetcd.rpc``)
and owns the channels (one per member, ``_members``), the calls and the error mapping.
Nothing outside ``fleet.store`` imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
from aetcd import rpc

from fleet.errors import FleetError, InvalidArgument, Unavailable
from fleet.store._members import Members, retryable
from fleet.transport import TlsFiles, Transport

__all__ = [
    "DEFAULT_MAX_TXN_OPS",
    "MIN_TXN_OPS",
    "Compare",
    "Delete",
    "DeletePrefix",
    "DeleteRange",
    "Etcd",
    "KeyValue",
    "LeaseIs",
    "Put",
    "TxnResult",
    "WatchBatch",
    "WatchCompacted",
    "WatchEvent",
    "prefix_end",
]


# etcd refuses a transaction with more guards, or more operations, than its
# --max-txn-ops (128 by default); fleet's own writes need up to this many at least.
DEFAULT_MAX_TXN_OPS = 128
MIN_TXN_OPS = 16

# Keep-alive pings find a member gone silent (a machine off, a cut cable) in 15 s
# even while no call is waiting on it.
CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000)]
# Keys a paged read asks for at once (``get_all``): a few MB at fleet's record sizes, far
# under the 64 MiB a channel accepts (``fleet.transport.MAX_MESSAGE_BYTES``).
LIST_PAGE = 10_000
# A watch asks its member to end it once the member has lost the cluster's leader
# (etcd's WithRequireLeader, as kube-apiserver's watches do): a member cut off from
# the others would otherwise keep the stream open and send nothing, and the informer
# would never hear of a change again.
_REQUIRE_LEADER = (("hasleader", "true"),)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change: ``value`` is None for a delete."""

    key: bytes
    value: bytes | None
    mod_revision: int


class WatchBatch:
    """The changes of one watch answer, made one at a time as they are read, and the
    last revision it held: with keys left out (``skip``), a batch may hold none and
    still say how far the watch has come.

    Made as read, not all at once: in a 100,000-replica apply at 5,000 hosts one answer
    of etcd held up to 22,580 changes (6.3 MB of keys and values), and a list of them
    made from it held a second copy of each key and value, and an object a change,
    beside the answer until the informer had applied the last."""

    __slots__ = ("_events", "_skip", "fragment", "revision")

    def __init__(
        self, events: Sequence[Any] = (), skip: bytes | None = None, *, fragment: bool = False
    ) -> None:
        self._events = events  # the answer's (``rpc.Event``), in revision order
        self._skip = skip
        # A piece of a larger answer (``watch_prefix(fragments=True)``): more follow, and
        # the last revision here may go on in the next.
        self.fragment = fragment
        self.revision = events[-1].kv.mod_revision if events else 0

    def __iter__(self) -> Iterator[WatchEvent]:
        skip, delete = self._skip, rpc.Event.DELETE
        for event in self._events:
            kv = event.kv
            key = kv.key
            if skip is not None and key.startswith(skip):
                continue  # dropped before it costs an object (the agents' events)
            yield WatchEvent(key, None if event.type == delete else kv.value, kv.mod_revision)


@dataclass(frozen=True, slots=True)
class Compare:
    """A transaction guard on a key's mod revision (0 means "the key does not exist")."""

    key: bytes
    mod_revision: int

    def add_to(self, compares: Any) -> None:
        """Append this guard to a request's repeated ``compare`` (made in place: see
        ``Put.add_to``)."""
        guard = compares.add()
        guard.key, guard.mod_revision = self.key, self.mod_revision
        guard.target, guard.result = rpc.Compare.MOD, rpc.Compare.EQUAL


@dataclass(frozen=True, slots=True)
class LeaseIs:
    """A transaction guard on the lease a key is bound to (0: none, or no key)."""

    key: bytes
    lease: int

    def add_to(self, compares: Any) -> None:
        guard = compares.add()
        guard.key, guard.lease = self.key, self.lease
        guard.target, guard.result = rpc.Compare.LEASE, rpc.Compare.EQUAL


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0

    def add_to(self, ops: Any) -> None:
        """Append this put to a request's repeated ``success``, made in place: a
        ``RequestOp`` built around a ``PutRequest`` and then added is copied twice (3.5
        times the cost; 2.4% of the control plane's cpu in a 100,000-replica apply)."""
        put = ops.add().request_put
        put.key, put.value = self.key, self.value
        if self.lease:
            put.lease = self.lease


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes

    def add_to(self, ops: Any) -> None:
        ops.add().request_delete_range.key = self.key


@dataclass(frozen=True, slots=True)
class DeletePrefix:
    prefix: bytes

    def add_to(self, ops: Any) -> None:
        delete = ops.add().request_delete_range
        delete.key, delete.range_end = self.prefix, prefix_end(self.prefix)


@dataclass(frozen=True, slots=True)
class DeleteRange:
    """Every key from ``start`` up to, not including, ``end``."""

    start: bytes
    end: bytes

    def add_to(self, ops: Any) -> None:
        delete = ops.add().request_delete_range
        delete.key, delete.range_end = self.start, self.end


Op = Put | Delete | DeletePrefix | DeleteRange


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int


class WatchCompacted(Exception):
    """The revision a watch asked for was compacted away: list again, then watch."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted; oldest available is {compact_revision}")
        self.compact_revision = compact_revision


def prefix_end(prefix: bytes) -> bytes:
    """The exclusive end of the key range that starts with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def _unavailable(error: grpc.aio.AioRpcError) -> Unavailable:
    hint = ""
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        hint = " (is etcd down, or has its cluster lost quorum? a majority of members must be up)"
    return Unavailable(f"etcd: {error.code().name}: {error.details()}{hint}")


def _txn_refused(error: grpc.aio.AioRpcError, size: int, limit: int) -> FleetError:
    """etcd's refusals of a transaction too large, in words (the rest: ``_unavailable``)."""
    text = error.details() or ""
    if "too many operations in txn request" in text:
        return InvalidArgument(
            f"etcd refused a transaction of {size} operations as too many, so nothing was "
            f"written: its --max-txn-ops is lower than the {limit} this control plane was "
            "told; start `fleet server` with --etcd-max-txn-ops set to etcd's --max-txn-ops"
        )
    if "request is too large" in text:
        return InvalidArgument(
            "etcd refused a write as too large (more than its --max-request-bytes, 1.5 MiB "
            "by default), so nothing was written: write less at once (fewer apps per apply)"
        )
    return _unavailable(error)


class Etcd:
    """An etcd connection: reads, transactions, lease grants and resumable prefix watches."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        tls: TlsFiles | None = None,
        timeout: float = 5.0,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
    ) -> None:
        if max_txn_ops < MIN_TXN_OPS:
            raise ValueError(f"etcd's --max-txn-ops must be at least {MIN_TXN_OPS} for fleet")
        self.timeout = timeout
        # etcd's --max-txn-ops: larger transactions are refused here, before they are sent.
        self.max_txn_ops = max_txn_ops
        # etcd's own TLS (--etcd-cacert/--etcd-cert/--etcd-key), with fleet's file loader
        # and message limits (a list of every replica can be large); a channel a member.
        transport = Transport(tls)
        self._members = Members(
            endpoints, lambda target: transport.aio_channel(target, options=CHANNEL_OPTIONS)
        )
        self.endpoints = self._members.endpoints
        self._kv = [rpc.KVStub(channel) for channel in self._members.channels]
        self._watch = [rpc.WatchStub(channel) for channel in self._members.channels]
        # Keep-alives are not here: ``LeaseKeeper`` renews from a thread of its own.
        self._lease = [rpc.LeaseStub(channel) for channel in self._members.channels]

    async def _call(self, call: Callable[[int], Awaitable[T]], *, idempotent: bool = True) -> T:
        """``call(member)`` on the member in use; when that member fails, the next one
        is used from then on, and the call goes again there while ``retryable`` says
        it may (each member once)."""
        for attempt in range(len(self._members)):
            member = self._members.current
            try:
                return await call(member)
            except grpc.aio.AioRpcError as error:
                code, details = error.code(), error.details()
                self._members.failed(member, code, details)
                last = attempt == len(self._members) - 1
                if last or not retryable(code, details, idempotent=idempotent):
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def close(self) -> None:
        for channel in self._members.channels:
            await channel.close()

    async def __aenter__(self) -> Etcd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ reads

    async def get(self, key: bytes) -> KeyValue | None:
        try:
            request = rpc.RangeRequest(key=key)
            response = await self._call(lambda m: self._kv[m].Range(request, timeout=self.timeout))
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        if not response.kvs:
            return None
        kv = response.kvs[0]
        return KeyValue(kv.key, kv.value, kv.mod_revision, kv.lease)

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` at one revision, and that revision."""
        return await self.get_all(prefix, prefix_end(prefix))

    async def get_all(
        self, start: bytes, end: bytes, *, revision: int = 0, page: int = LIST_PAGE
    ) -> tuple[list[KeyValue], int]:
        """Every key from ``start`` up to ``end`` at one revision (0: now), and that
        revision, read ``page`` keys at a time: one answer for all of them can pass
        the message limit (100,000 replicas with their agents' reports made 72 MB, past
        the 64 MiB a control plane accepts, and a restarted one could not list its
        state). Pages after the first are read at the first one's revision; if that is
        compacted meanwhile, the read starts again at the newest."""
        for _ in range(3):
            found: list[KeyValue] = []
            at = revision
            try:
                async for kvs, page_at in self.pages(start, end, revision=revision, page=page):
                    found += kvs
                    at = page_at
                return found, at
            except WatchCompacted:
                if revision:  # the caller asked for that revision: it is gone
                    raise
        raise Unavailable("etcd compacted every revision a paged read began at; try again")

    async def pages(
        self, start: bytes, end: bytes, *, revision: int = 0, page: int = LIST_PAGE
    ) -> AsyncGenerator[tuple[list[KeyValue], int], None]:
        """The keys from ``start`` up to ``end`` at one revision (0: now), a page of at
        most ``page`` at a time (at least one, empty when there are none), each with
        that revision. The next page is read while the caller works on this one (a
        restarted control plane decodes each page of its state as the next comes).
        WatchCompacted when the revision is compacted before the last page."""
        at = revision
        reading: asyncio.Task[tuple[list[KeyValue], int, bool]] | None = asyncio.ensure_future(
            self.get_range(start, end, revision=at, limit=page)
        )
        try:
            while reading is not None:
                kvs, read_at, more = await reading
                at = at or read_at
                reading = None
                if more and kvs:
                    reading = asyncio.ensure_future(
                        self.get_range(kvs[-1].key + b"\0", end, revision=at, limit=page)
                    )
                    await asyncio.sleep(0)  # its request is sent before this page is used
                yield kvs, at
        finally:
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, FleetError):
                    await reading

    async def get_range(
        self,
        start: bytes,
        end: bytes,
        *,
        revision: int = 0,
        limit: int = 0,
        keys_only: bool = False,
    ) -> tuple[list[KeyValue], int, bool]:
        """Keys from ``start`` up to ``end`` (not included), in key order, at
        ``revision`` (0: now), at most ``limit`` of them (0: all); with the revision read
        and whether more keys were left out."""
        request = rpc.RangeRequest(
            key=start, range_end=end, revision=revision, limit=limit, keys_only=keys_only
        )
        try:
            response = await self._call(lambda m: self._kv[m].Range(request, timeout=self.timeout))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.OUT_OF_RANGE:  # compacted since
                raise WatchCompacted(revision) from error
            raise _unavailable(error) from error
        kvs = [KeyValue(kv.key, kv.value, kv.mod_revision, kv.lease) for kv in response.kvs]
        return kvs, response.header.revision, bool(response.more)

    async def revision(self) -> int:
        """The store's current revision (a count-only read of one key)."""
        request = rpc.RangeRequest(key=b"\0", count_only=True)
        try:
            response = await self._call(lambda m: self._kv[m].Range(request, timeout=self.timeout))
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        return int(response.header.revision)

    # ------------------------------------------------------------------ writes

    async def txn(self, compare: Sequence[Compare | LeaseIs], success: Sequence[Op]) -> TxnResult:
        """Apply ``success`` atomically if every guard in ``compare`` holds.

        etcd counts the guards and the operations apart and refuses a transaction when
        either is more than its --max-txn-ops; so is it here, before it is sent.
        """
        size = max(len(compare), len(success))
        if size > self.max_txn_ops:
            raise InvalidArgument(
                f"a transaction of {size} operations is more than etcd takes at once "
                f"({self.max_txn_ops}, its --max-txn-ops as `fleet server "
                "--etcd-max-txn-ops` says), so nothing was written"
            )
        request = rpc.TxnRequest()
        for guard in compare:
            guard.add_to(request.compare)
        for op in success:
            op.add_to(request.success)
        try:
            response = await self._call(
                lambda m: self._kv[m].Txn(request, timeout=self.timeout), idempotent=False
            )
        except grpc.aio.AioRpcError as error:
            raise _txn_refused(error, size, self.max_txn_ops) from error
        return TxnResult(response.succeeded, response.header.revision)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """An unguarded put: only for keys one writer owns (liveness, reports)."""
        request = rpc.PutRequest(key=key, value=value, lease=lease)
        try:
            # Idempotent: the same value again (these keys have one writer).
            response = await self._call(lambda m: self._kv[m].Put(request, timeout=self.timeout))
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        return int(response.header.revision)

    # ------------------------------------------------------------------ leases

    async def grant(self, ttl: int) -> int:
        request = rpc.LeaseGrantRequest(TTL=ttl)
        try:
            # A grant sent twice leaves one lease unused, to expire: no harm.
            response = await self._call(
                lambda m: self._lease[m].LeaseGrant(request, timeout=self.timeout)
            )
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        return int(response.ID)

    async def revoke(self, lease_id: int) -> None:
        request = rpc.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._call(lambda m: self._lease[m].LeaseRevoke(request, timeout=self.timeout))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise _unavailable(error) from error

    # ------------------------------------------------------------------ history

    async def compact(self, revision: int) -> bool:
        """Drop the history before ``revision`` (logically; etcd frees space later).

        Returns False when it was already compacted that far, which is not an error.
        """
        request = rpc.CompactionRequest(revision=revision, physical=False)
        try:
            await self._call(lambda m: self._kv[m].Compact(request, timeout=self.timeout))
        except grpc.aio.AioRpcError as error:
            # etcd: "mvcc: required revision has been compacted" (OUT_OF_RANGE).
            if error.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (
                error.details() or ""
            ):
                return False
            raise _unavailable(error) from error
        return True

    # ------------------------------------------------------------------ watches

    async def watch_prefix(
        self,
        prefix: bytes,
        start_revision: int,
        *,
        skip: bytes | None = None,
        fragments: bool = False,
    ) -> AsyncGenerator[WatchBatch, None]:
        """Yield batches of changes under ``prefix`` from ``start_revision`` on.

        ``fragments``: etcd sends an answer larger than its ``--max-request-bytes`` in
        pieces (``WatchBatch.fragment``), and a revision may straddle two of them. A
        watch that falls behind otherwise gets all it missed in one answer (22,580
        changes, 6.3 MB, in a 5,000-host ramp), held whole in gRPC's buffers, as bytes
        and as parsed messages at once before the first change is applied.

        Raises ``WatchCompacted`` when that revision is gone and ``Unavailable`` when the
        stream breaks (etcd restarted, member lost); callers resume from the last
        revision they saw, as Kubernetes informers do.
        """
        create = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                start_revision=start_revision,
                progress_notify=True,
                fragment=fragments,
            )
        )

        async def requests() -> AsyncIterator[Any]:
            yield create
            # Keep the request side open for as long as the watch lives.
            await asyncio.Event().wait()

        member = self._members.current
        call = self._watch[member].Watch(requests(), metadata=_REQUIRE_LEADER)
        try:
            async for response in call:
                if response.compact_revision:
                    raise WatchCompacted(response.compact_revision)
                if response.canceled:
                    raise Unavailable(f"etcd cancelled the watch: {response.cancel_reason}")
                # Keys under ``skip`` are dropped as the batch is read: the informer's
                # watch sees every event the agents record.
                if response.events:  # (an answer without events: a progress notice)
                    yield WatchBatch(response.events, skip, fragment=response.fragment)
        except grpc.aio.AioRpcError as error:
            # The caller resumes from its revision, on the next member if this one failed.
            self._members.failed(member, error.code(), error.details())
            raise _unavailable(error) from error
        finally:
            call.cancel()
        raise Unavailable("etcd closed the watch stream")
