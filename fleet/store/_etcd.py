"""A small etcd v3 client over aetcd's generated stubs, on a grpc.aio channel we build.

aetcd's own ``Client`` dials one ``host:port`` over an insecure channel and its watches
die with the connection; fleet needs several endpoints, TLS later, and watches that
resume from a revision. So this module keeps aetcd's protobuf stubs (``aetcd.rpc``)
and owns the channel, the calls and the error mapping. Nothing outside ``fleet.store``
imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from aetcd import rpc

from fleet.errors import Unavailable
from fleet.transport import TlsFiles, Transport

__all__ = [
    "Compare",
    "Delete",
    "DeletePrefix",
    "Etcd",
    "KeyValue",
    "Put",
    "TxnResult",
    "WatchCompacted",
    "WatchEvent",
    "prefix_end",
]


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


@dataclass(frozen=True, slots=True)
class Compare:
    """A transaction guard on a key's mod revision (0 means "the key does not exist")."""

    key: bytes
    mod_revision: int

    def to_proto(self) -> Any:
        return rpc.Compare(
            key=self.key,
            target=rpc.Compare.MOD,
            result=rpc.Compare.EQUAL,
            mod_revision=self.mod_revision,
        )


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0

    def to_proto(self) -> Any:
        return rpc.RequestOp(
            request_put=rpc.PutRequest(key=self.key, value=self.value, lease=self.lease)
        )


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes

    def to_proto(self) -> Any:
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self.key))


@dataclass(frozen=True, slots=True)
class DeletePrefix:
    prefix: bytes

    def to_proto(self) -> Any:
        return rpc.RequestOp(
            request_delete_range=rpc.DeleteRangeRequest(
                key=self.prefix, range_end=prefix_end(self.prefix)
            )
        )


Op = Put | Delete | DeletePrefix


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


def _target(endpoints: Sequence[str]) -> str:
    """One gRPC target for all endpoints; several IP endpoints fail over (pick_first)."""
    cleaned = [e.removeprefix("http://").removeprefix("https://").rstrip("/") for e in endpoints]
    if len(cleaned) == 1:
        return cleaned[0]
    for endpoint in cleaned:
        host = endpoint.rsplit(":", 1)[0].strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"several etcd endpoints must be IP:PORT (got {endpoint!r}); "
                "use one DNS name that resolves to every member instead"
            ) from None
    return "ipv4:" + ",".join(cleaned)


def _unavailable(error: grpc.aio.AioRpcError) -> Unavailable:
    hint = ""
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        hint = " (is etcd down, or has its cluster lost quorum? a majority of members must be up)"
    return Unavailable(f"etcd: {error.code().name}: {error.details()}{hint}")


KEEPALIVE_STREAMS = 8


class _KeepAliveStream:
    """One bidirectional LeaseKeepAlive stream shared by every keep-alive of a connection.

    Requests go in through a queue; etcd answers each with the lease's ID and TTL, in
    order, so an answer completes the oldest waiter for that ID. When the stream breaks
    every waiter fails with ``Unavailable`` and the stream is ``broken`` for good.
    """

    def __init__(self, stub: Any) -> None:
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._waiters: dict[int, deque[asyncio.Future[int]]] = {}
        self.broken = False
        self.answered_at = time.monotonic()  # when etcd last answered (or the stream opened)
        self._call = stub.LeaseKeepAlive(self._outgoing())
        self._reader = asyncio.create_task(self._read(), name="etcd-lease-keepalive")

    async def _outgoing(self) -> AsyncIterator[Any]:
        while (request := await self._requests.get()) is not None:
            yield request

    def send(self, lease_id: int) -> asyncio.Future[int]:
        """Ask for ``lease_id`` to be refreshed; the future gets the TTL etcd answers."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(lease_id, deque()).append(future)
        self._requests.put_nowait(rpc.LeaseKeepAliveRequest(ID=lease_id))
        return future

    async def _read(self) -> None:
        error = Unavailable("the etcd lease keep-alive stream ended")
        try:
            async for response in self._call:
                self.answered_at = time.monotonic()
                waiters = self._waiters.get(response.ID)
                if not waiters:
                    continue
                future = waiters.popleft()
                if not waiters:
                    del self._waiters[response.ID]
                if not future.done():  # a waiter that timed out or was cancelled is skipped
                    future.set_result(max(0, int(response.TTL)))
        except grpc.aio.AioRpcError as rpc_error:
            error = _unavailable(rpc_error)
        finally:
            self.broken = True
            self._requests.put_nowait(None)  # ends the request iterator gRPC is reading
            self._call.cancel()
            for waiters in self._waiters.values():
                for future in waiters:
                    if not future.done():
                        future.set_exception(error)
            self._waiters.clear()

    async def close(self, grace: float) -> None:
        """End the request side and let etcd end the stream; cut it after ``grace``."""
        self.broken = True
        self._requests.put_nowait(None)
        _, pending = await asyncio.wait([self._reader], timeout=grace)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Etcd:
    """An etcd connection: reads, transactions, leases and resumable prefix watches."""

    def __init__(
        self, endpoints: Sequence[str], *, tls: TlsFiles | None = None, timeout: float = 5.0
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        # etcd's own TLS (--etcd-cacert/--etcd-cert/--etcd-key), with fleet's file loader
        # and message limits (a list of every replica can be large).
        self._channel = Transport(tls).aio_channel(
            _target(self.endpoints),
            options=[
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
            ],
        )
        self._kv = rpc.KVStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        # A few LeaseKeepAlive streams shared by every keep-alive (by lease id), each
        # opened on first use and again after it breaks. A stream per call cost the
        # control plane its CPU; one stream for all is served one renewal at a time by
        # etcd, which under a heavy write load fell seconds behind 200 renewals/s.
        self._keepalives: list[_KeepAliveStream | None] = [None] * KEEPALIVE_STREAMS
        self.keepalive_streams_opened = 0

    async def close(self) -> None:
        streams = [s for s in self._keepalives if s is not None]
        self._keepalives = [None] * KEEPALIVE_STREAMS
        await asyncio.gather(*(stream.close(self.timeout) for stream in streams))
        await self._channel.close()

    async def __aenter__(self) -> Etcd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ reads

    async def get(self, key: bytes) -> KeyValue | None:
        try:
            response = await self._kv.Range(rpc.RangeRequest(key=key), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        if not response.kvs:
            return None
        kv = response.kvs[0]
        return KeyValue(kv.key, kv.value, kv.mod_revision, kv.lease)

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` at one revision, and that revision."""
        try:
            response = await self._kv.Range(
                rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix)),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        kvs = [KeyValue(kv.key, kv.value, kv.mod_revision, kv.lease) for kv in response.kvs]
        return kvs, response.header.revision

    async def revision(self) -> int:
        """The store's current revision (a count-only read of one key)."""
        try:
            response = await self._kv.Range(
                rpc.RangeRequest(key=b"\0", count_only=True), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        return int(response.header.revision)

    # ------------------------------------------------------------------ writes

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op]) -> TxnResult:
        """Apply ``success`` atomically if every guard in ``compare`` holds."""
        request = rpc.TxnRequest(
            compare=[c.to_proto() for c in compare],
            success=[op.to_proto() for op in success],
        )
        try:
            response = await self._kv.Txn(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        return TxnResult(response.succeeded, response.header.revision)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """An unguarded put: only for keys one writer owns (liveness, reports)."""
        try:
            response = await self._kv.Put(
                rpc.PutRequest(key=key, value=value, lease=lease), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        return int(response.header.revision)

    # ------------------------------------------------------------------ leases

    async def grant(self, ttl: int) -> int:
        try:
            response = await self._lease.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        return int(response.ID)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease once; returns its remaining TTL, 0 when it has expired."""
        shard = lease_id % KEEPALIVE_STREAMS
        stream = self._keepalives[shard]
        if stream is None or stream.broken:
            stream = self._keepalives[shard] = _KeepAliveStream(self._lease)
            self.keepalive_streams_opened += 1
        sent = time.monotonic()
        try:
            return await asyncio.wait_for(stream.send(lease_id), self.timeout)
        except TimeoutError:
            if stream.answered_at < sent and self._keepalives[shard] is stream:
                # Not one answer to anybody since ours was sent: the stream is stuck, so
                # the next keep-alive opens a new one (and this one's waiters fail).
                await stream.close(0)
            raise Unavailable(
                f"etcd: no answer to a lease keep-alive in {self.timeout:g}s"
            ) from None

    async def revoke(self, lease_id: int) -> None:
        try:
            await self._lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=self.timeout)
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
            await self._kv.Compact(request, timeout=self.timeout)
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
        self, prefix: bytes, start_revision: int, *, skip: bytes | None = None
    ) -> AsyncIterator[list[WatchEvent]]:
        """Yield batches of changes under ``prefix`` from ``start_revision`` on.

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
            )
        )

        async def requests() -> AsyncIterator[Any]:
            yield create
            # Keep the request side open for as long as the watch lives.
            await asyncio.Event().wait()

        call = self._watch.Watch(requests())
        try:
            async for response in call:
                if response.compact_revision:
                    raise WatchCompacted(response.compact_revision)
                if response.canceled:
                    raise Unavailable(f"etcd cancelled the watch: {response.cancel_reason}")
                # Keys under ``skip`` are dropped before they cost an object each: the
                # informer's watch sees every event the agents record.
                batch = []
                for event in response.events:
                    kv = event.kv
                    if skip is not None and kv.key.startswith(skip):
                        continue
                    value = None if event.type == rpc.Event.DELETE else kv.value
                    batch.append(WatchEvent(kv.key, value, kv.mod_revision))
                if batch:
                    yield batch
        except grpc.aio.AioRpcError as error:
            raise _unavailable(error) from error
        finally:
            call.cancel()
        raise Unavailable("etcd closed the watch stream")
