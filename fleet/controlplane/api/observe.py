"""Watching what runs: events, and (relayed to the host's agent) logs, exec and top."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import grpc.aio

from fleet._time import iso_seconds_ago
from fleet.controlplane.api._service import ServiceBase
from fleet.controlplane.auth import Permission, answer, authorize, rpc
from fleet.errors import FleetError, InvalidArgument
from fleet.proto import fleet_pb2 as pb
from fleet.store import check_host_id
from fleet.store.records import ReplicaRecord

__all__ = ["ObserveApi"]


class ObserveApi(ServiceBase):
    async def Events(
        self, request: pb.EventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        """Recent events, filtered, read a page at a time (the whole history may be tens
        of megabytes); the last ``limit`` only, if set; with ``follow``, then every new
        one as it is stored."""
        try:
            authorize(self, context, Permission.APPS_READ, request)
            if not math.isfinite(request.since_seconds) or request.since_seconds < 0:
                raise InvalidArgument("since_seconds must be a finite number, 0 or more")
        except FleetError as error:
            answer(context, error)
            return
        since, since_ns = "", 0
        if request.since_seconds > 0:
            since = iso_seconds_ago(request.since_seconds)
            # A batch is keyed by when it was stored, after its events happened: a
            # minute's margin, then each event's own time decides.
            since_ns = time.time_ns() - int((request.since_seconds + 60) * 1e9)

        def wanted(event: pb.Event) -> bool:
            return (
                (not request.app or event.app == request.app)
                and (not request.host or event.host == request.host)
                and event.time >= since
            )

        revision = 0
        if request.limit:
            newest, revision = await self._events.newest(request.limit, wanted, since_ns)
            for event in newest:
                yield event
        else:
            async for page, revision in self._events.pages(since_ns):  # noqa: B007
                for event in page:
                    if wanted(event):
                        yield event
        if request.follow:
            async for event in self._events.follow(revision):
                if wanted(event):
                    yield event

    async def Logs(
        self, request: pb.LogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LogChunk]:
        """The replicas' logs, interleaved as they come (one stream per replica)."""
        try:
            authorize(self, context, Permission.LOGS, request)
            await self._informer.wait_synced()
            replicas = self._replicas(request.app, request.slot)
        except FleetError as error:
            answer(context, error)
            return
        merged: asyncio.Queue[pb.LogChunk | None] = asyncio.Queue(maxsize=1024)

        async def follow(replica: ReplicaRecord) -> None:
            ask = pb.ContainerRequest(
                app=replica.app,
                slot=replica.slot,
                logs=pb.LogsRequest(
                    follow=request.follow,
                    tail=request.tail,
                    timestamps=request.timestamps,
                    since_seconds=request.since_seconds,
                    previous=request.previous,
                ),
            )

            def chunk(data: bytes) -> pb.LogChunk:
                return pb.LogChunk(app=replica.app, slot=replica.slot, host=replica.host, data=data)

            try:
                async for piece in self._relay(replica.host, ask):
                    if piece.data:
                        await merged.put(chunk(piece.data))
            except FleetError as error:
                await merged.put(chunk(f"fleet: {error}\n".encode()))
            finally:
                await merged.put(None)

        readers = [asyncio.create_task(follow(r)) for r in replicas]
        try:
            remaining = len(readers)
            while remaining:
                chunk = await merged.get()
                if chunk is None:
                    remaining -= 1
                else:
                    yield chunk
        finally:
            for reader in readers:
                reader.cancel()

    @rpc(Permission.EXEC)
    async def Exec(
        self, request: pb.ExecRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecResponse:
        if not request.command:
            raise InvalidArgument("exec needs a command")
        await self._informer.wait_synced()
        replica = self._replicas(request.app, request.slot)[0]
        ask = pb.ContainerRequest(
            app=replica.app, slot=replica.slot, exec=pb.ExecRequest(command=request.command)
        )
        answer = pb.ExecResponse(host=replica.host, slot=replica.slot)
        async for piece in self._relay(replica.host, ask):
            answer.output += piece.data
            if not piece.done:
                answer.exit_code = piece.exit_code
        return answer

    @rpc(Permission.PROCESSES)  # command lines may hold secrets: not for viewers
    async def Top(self, request: pb.TopRequest, context: grpc.aio.ServicerContext) -> pb.TopList:
        await self._informer.wait_synced()
        if request.app:
            replicas = self._replicas(request.app, host=request.host)
        else:
            replicas = self._informer.state().replicas_on(check_host_id(request.host))
        entries = []
        for replica in replicas:
            ask = pb.ContainerRequest(app=replica.app, slot=replica.slot, top=pb.TopRequest())
            async for piece in self._relay(replica.host, ask):
                if piece.HasField("top"):
                    piece.top.host = replica.host
                    entries.append(piece.top)
        return pb.TopList(entries=entries)
