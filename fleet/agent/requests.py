"""Logs, exec, top and signals (pause, unpause, kill) for one container, asked by the
control plane over the agent's stream and answered on it in pieces (so hosts open no
port of their own)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fleet.agent.logonce import WarnOnce
from fleet.agent.previouslogs import PreviousLogs, select
from fleet.agent.runtime import LogStream, ObservedContainer, Runtime, call
from fleet.errors import FailedPrecondition, FleetError
from fleet.proto import fleet_pb2 as pb

__all__ = ["RequestHandler"]

log = logging.getLogger(__name__)

MAX_EXEC_OUTPUT = 1 << 20
_CHUNK = 64 * 1024  # of a kept log, a response
Send = Callable[[pb.ContainerResponse], Awaitable[None]]


class RequestHandler:
    """Runs requests concurrently; a followed log runs until cancelled or the stream ends."""

    def __init__(
        self,
        runtime: Runtime,
        containers: Callable[[], list[ObservedContainer]],
        previous_logs: PreviousLogs | None = None,
    ):
        self._runtime = runtime
        self._containers = containers
        self._previous_logs = previous_logs or PreviousLogs(None)
        self._streams: dict[str, LogStream] = {}  # request id -> open log stream
        self._closed: set[str] = set()  # log streams closed on purpose, not broken
        self._broke = WarnOnce(log, "log stream")
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def find(self, app: str, slot: int, previous: bool = False) -> ObservedContainer | None:
        """The replica's container (a running one first); asks dockerd when the last
        reconcile round has not seen it yet. ``previous``: its most recently exited
        container that is not running (as ``kubectl logs --previous``)."""
        for containers in (self._containers(), None):
            if containers is None:
                containers = await call(self._runtime, self._runtime.list_containers)
            matches = [c for c in containers if c.app == app and c.slot == slot]
            if previous:
                matches = [c for c in matches if c.state not in ("running", "restarting")]
                matches.sort(key=lambda c: -(c.finished_at or 0.0))
            else:
                matches.sort(key=lambda c: c.state != "running")
            if matches:
                return matches[0]
        return None

    def submit(self, request: pb.ContainerRequest, send: Send) -> None:
        if request.WhichOneof("action") == "cancel":
            self.cancel(request.id)
            return
        task = asyncio.create_task(self._run(request, send))
        self._tasks[request.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(request.id, None))

    def _close(self, request_id: str) -> None:
        """End a log's blocking read in its thread, on purpose."""
        stream = self._streams.pop(request_id, None)
        if stream is not None:
            self._closed.add(request_id)
            stream.close()

    def cancel(self, request_id: str) -> None:
        self._close(request_id)
        task = self._tasks.get(request_id)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for request_id in list(self._tasks):
            self.cancel(request_id)

    async def _run(self, request: pb.ContainerRequest, send: Send) -> None:
        previous = request.WhichOneof("action") == "logs" and request.logs.previous
        container = await self.find(request.app, request.slot, previous)
        if previous:
            kept = await asyncio.to_thread(self._previous_logs.read, request.app, request.slot)
            # The replica's removed container's log, when it ended after any exited
            # one still on the host (replaced by a rollout, a rollback, a drain).
            if kept is not None and (container is None or kept[1] > (container.finished_at or 0)):
                await self._send_kept(request, kept[0], send)
                return
        if container is None:
            which = "exited container" if previous else "container"
            await send(
                pb.ContainerResponse(
                    id=request.id,
                    done=True,
                    error=f"no {which} of {request.app}.{request.slot} on this host",
                )
            )
            return
        try:
            action = request.WhichOneof("action")
            if action == "logs":
                await self._logs(request, container, send)
            elif action == "exec":
                code, output = await call(
                    self._runtime,
                    self._runtime.exec,
                    container.container_id,
                    list(request.exec.command),
                    MAX_EXEC_OUTPUT,
                )
                await send(pb.ContainerResponse(id=request.id, data=output, exit_code=code))
            elif action == "top":
                titles, rows = await call(self._runtime, self._runtime.top, container.container_id)
                top = pb.TopResponse(
                    app=request.app,
                    slot=request.slot,
                    titles=titles,
                    processes=[pb.ProcessRow(fields=r) for r in rows],
                )
                await send(pb.ContainerResponse(id=request.id, top=top))
            elif action == "signal":
                signal = request.signal
                await call(
                    self._runtime,
                    self._runtime.signal,
                    container.container_id,
                    signal.action,
                    signal.signal,
                )
                log.info("%s %s.%d %s", signal.action, request.app, request.slot, signal.signal)
                # Said back: an agent older than the request would answer only "done".
                await send(pb.ContainerResponse(id=request.id, data=signal.action.encode()))
            await send(pb.ContainerResponse(id=request.id, done=True))
        except FleetError as error:
            await send(pb.ContainerResponse(id=request.id, done=True, error=str(error)))

    async def _send_kept(self, request: pb.ContainerRequest, data: bytes, send: Send) -> None:
        asked = request.logs
        since = time.time() - asked.since_seconds if asked.since_seconds else 0.0
        chosen = select(data, tail=asked.tail, since=since, timestamps=asked.timestamps)
        for start in range(0, len(chosen), _CHUNK):
            await send(pb.ContainerResponse(id=request.id, data=chosen[start : start + _CHUNK]))
        await send(pb.ContainerResponse(id=request.id, done=True))

    async def _logs(self, request: pb.ContainerRequest, c: ObservedContainer, send: Send) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
        refused: list[FleetError] = []  # Docker's answer to the request itself

        def on_chunk(chunk: bytes) -> None:  # in the reading thread
            asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop).result()

        def read() -> None:
            try:
                stream = self._runtime.logs(
                    c.container_id,
                    follow=request.logs.follow,
                    tail=request.logs.tail,
                    timestamps=request.logs.timestamps,
                    # Seconds before now, counted on this host's clock (Docker's).
                    since=time.time() - request.logs.since_seconds
                    if request.logs.since_seconds
                    else 0.0,
                )
                # Kept where ``cancel`` (or the end of the request) can close it from
                # another thread to end a followed log.
                self._streams[request.id] = stream
                try:
                    for chunk in stream:
                        on_chunk(chunk)
                finally:
                    self._streams.pop(request.id, None)
                    stream.close()
            except FailedPrecondition as error:  # a log Docker cannot read: say why
                refused.append(error)
            except Exception as error:
                if request.id in self._closed:  # by a cancel, or the end of the request
                    log.debug("log stream %s ended: %s", request.id, error)
                else:  # dockerd went away, say
                    self._broke.failed(error, f" {request.id} ended")
            else:
                self._broke.worked()
            finally:
                asyncio.run_coroutine_threadsafe(chunks.put(None), loop)

        reader = loop.run_in_executor(None, read)
        try:
            while (chunk := await chunks.get()) is not None:
                await send(pb.ContainerResponse(id=request.id, data=chunk))
        finally:
            self._close(request.id)
            try:
                await asyncio.wait([reader], timeout=5)
            finally:
                self._closed.discard(request.id)
        if refused:
            raise refused[0]
