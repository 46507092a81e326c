"""Exec sessions with their input streamed in (``fleet exec -i``, with ``-t`` a terminal),
relayed by the control plane over the agent's stream (``ExecRelayInput`` in, and
``ExecRelayOutput`` out, matched by id).

Each session has a thread of its own that reads the exec's output (a read blocks for as
long as the command is quiet: a shell can idle for hours, and the shared worker pool
must not be held by it) and one more for writes, resizes and inspects, in order. The
output goes out within the window of credit the control plane grants
(``fleet.execio``), and a full window stops the reads, so a slow client slows the
command down (as a terminal does) instead of filling the agent's memory. Input is
queued up to the window the control plane keeps to.

A session ends when the command's output ends (its exit code goes last), when the
control plane cancels it (its client went away: the command is hung up, as a closed
terminal would), or when the agent's stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, ThreadPoolExecutor
from typing import Any, TypeVar

from fleet.agent.dockerstream import STDERR, Demuxer, FramingError
from fleet.agent.runtime import ExecConnection, ObservedContainer, Runtime
from fleet.errors import FleetError
from fleet.execio import WINDOW, Credit, input_cost, split
from fleet.proto import fleet_pb2 as pb

__all__ = ["ExecSessions"]

log = logging.getLogger(__name__)

Send = Callable[[pb.ExecRelayOutput], Awaitable[None]]
Find = Callable[[str, int], Awaitable[ObservedContainer | None]]

_T = TypeVar("_T")
_READ_AHEAD = 4  # reads handed from the reading thread before it waits


def _close_opened(opening: asyncio.Future[ExecConnection]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class ExecSessions:
    """The open sessions of the agent's current stream, by id."""

    def __init__(self, runtime: Runtime, find: Find) -> None:
        self._runtime = runtime
        self._find = find
        self._sessions: dict[str, _Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def handle(self, message: pb.ExecRelayInput, send: Send) -> None:
        kind = message.WhichOneof("kind")
        if kind == "open":
            if message.id in self._sessions:
                return  # a repeated open: the session runs already
            session = _Session(message.id, message.open, self._runtime, send)
            self._sessions[message.id] = session
            session.task = asyncio.create_task(session.run(self._find))
            session.task.add_done_callback(lambda _: self._sessions.pop(message.id, None))
            return
        running = self._sessions.get(message.id)
        if running is None:
            return  # it ended meanwhile; what was on its way to it is moot
        if kind == "cancel":
            running.cancel()
        elif kind == "consumed":
            running.credit.consumed(message.consumed)
        elif kind is not None:
            running.give(message)

    async def close(self, grace: float = 2.0) -> None:
        """The stream ended: every session's client is gone with it. Their commands are
        hung up before this returns (``grace`` seconds at most): an agent stopping right
        after (an upgrade restarts it) left a command running when its exit came first."""
        tasks = [s.task for s in self._sessions.values() if s.task is not None]
        for session in list(self._sessions.values()):
            session.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)


class _Session:
    def __init__(self, session_id: str, start: pb.ExecStart, runtime: Runtime, send: Send):
        self.id = session_id
        self.start = start
        self._runtime = runtime
        self._send = send
        self.task: asyncio.Task[None] | None = None
        self.credit = Credit()  # output the control plane has not passed on yet
        self._input: asyncio.Queue[pb.ExecRelayInput] = asyncio.Queue()
        self._queued = 0  # input cost queued and not yet written
        self._written = 0  # input cost written, in all
        self._acked = 0  # the last total told to the control plane
        self._overrun = False
        # Writes, resizes and inspects, one at a time and in order.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"exec-{session_id[:8]}")

    def give(self, message: pb.ExecRelayInput) -> None:
        """Queue input; more than the window means a broken peer: the session ends."""
        cost = input_cost(message)
        if self._queued + cost > WINDOW:
            self._overrun = True
            self.cancel()
            return
        self._queued += cost
        self._input.put_nowait(message)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _in_pool(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _say(self, **fields: Any) -> None:
        await self._send(pb.ExecRelayOutput(id=self.id, **fields))

    async def run(self, find: Find) -> None:
        start = self.start
        where = f"{start.app}.{start.slot}"
        container = await find(start.app, start.slot)
        if container is None:
            await self._say(error=f"no container of {where} on this host")
            self._pool.shutdown(wait=False)
            return
        env = [f"TERM={start.term}"] if start.tty and start.term else []
        opening = asyncio.ensure_future(
            self._in_pool(
                self._runtime.exec_open,
                container.container_id,
                list(start.command),
                tty=start.tty,
                env=env,
            )
        )
        try:
            conn = await asyncio.shield(opening)
        except FleetError as error:
            await self._say(error=str(error))
            self._pool.shutdown(wait=False)
            return
        except asyncio.CancelledError:  # cancelled while it opened: closed once open
            opening.add_done_callback(_close_opened)
            self._pool.shutdown(wait=False)
            raise
        log.info("exec %s in %s: %s", self.id[:8], where, " ".join(start.command)[:200])
        ended = False
        reader: asyncio.Task[None] | None = None
        writer: asyncio.Task[None] | None = None
        try:
            await self._say(started=True)
            if start.tty and start.size.rows and start.size.cols:
                await self._in_pool(conn.resize, start.size.rows, start.size.cols, first=True)
            writer = asyncio.create_task(self._pump_input(conn))
            reader = asyncio.create_task(self._pump_output(conn))
            await reader
            code = await self._in_pool(conn.exit_code)
            ended = True
            await self._say(exit=pb.ExecExit(code=-1 if code is None else code))
        except FramingError as error:
            await self._say(error=f"unreadable output from dockerd: {error}")
        finally:
            for task in (reader, writer):
                if task is not None:
                    task.cancel()
            self.credit.close()
            # Closed first: a write blocked on a command that reads no input ends with it.
            conn.close()
            self._pool.shutdown(wait=False)
            if not ended:  # cancelled: the client is gone; hang the command up
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.to_thread(conn.hang_up))
                why = "overran its input window" if self._overrun else "was cancelled"
                log.info("exec %s in %s %s", self.id[:8], where, why)

    async def _pump_input(self, conn: ExecConnection) -> None:
        while True:
            message = await self._input.get()
            kind = message.WhichOneof("kind")
            try:
                if kind == "stdin":
                    await self._in_pool(conn.write, message.stdin)
                elif kind == "resize":
                    await self._in_pool(conn.resize, message.resize.rows, message.resize.cols)
                elif kind == "close_stdin":
                    await self._in_pool(conn.close_input)
            except OSError as error:  # the command is gone: its output's end says the rest
                log.debug("exec %s: input refused: %s", self.id[:8], error)
                return
            except Exception as error:  # dockerd refused a resize, say: the session goes on
                log.warning("exec %s: %s failed: %s", self.id[:8], kind, error)
            cost = input_cost(message)
            self._queued -= cost
            self._written += cost
            # Told when the queue is drained, or every quarter window while it is not.
            if self._input.empty() or self._written - self._acked >= WINDOW // 4:
                self._acked = self._written
                await self._say(consumed=self._written)

    async def _pump_output(self, conn: ExecConnection) -> None:
        loop = asyncio.get_running_loop()
        reads: asyncio.Queue[bytes] = asyncio.Queue(_READ_AHEAD)
        stop = threading.Event()

        def read() -> None:  # in the session's reading thread
            data = b"-"
            while data and not stop.is_set():
                data = conn.read()
                try:
                    asyncio.run_coroutine_threadsafe(reads.put(data), loop).result()
                except (RuntimeError, CancelledError):  # the loop or the pump is gone
                    return

        threading.Thread(target=read, name=f"exec-read-{self.id[:8]}", daemon=True).start()
        demux = None if conn.tty else Demuxer()
        try:
            while data := await reads.get():
                pieces = [(1, data)] if demux is None else demux.feed(data)
                for stream, piece in pieces:
                    for chunk in split(piece):
                        await self.credit.take(len(chunk))
                        if stream == STDERR:
                            await self._say(stderr=chunk)
                        else:
                            await self._say(stdout=chunk)
        finally:
            stop.set()
            # A reading thread waiting to hand a read over is let go.
            while not reads.empty():
                reads.get_nowait()
