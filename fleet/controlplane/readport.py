"""The read port (``fleet server --read-listen``): `get`, `ps`, `endpoints`, `rollout
status` answered from a thread and an event loop of their own.

Why a port of its own: grpc.aio runs a server and every call of it in one event loop,
and a unary call takes several turns of that loop before its handler starts (the call
is accepted, then its request is read). The control plane's loop is the one that plans,
writes the agents' reports and pushes their desired sets: during a 100,000-replica
apply its turns took up to half a second each, and a `fleet get apps` that needed a few
milliseconds of work answered in 2 to 4 seconds at p99, almost all of it spent waiting
to be read. On a loop that does nothing else a call waits only for the interpreter's
lock, which a busy thread hands over every 5 ms (``sys.getswitchinterval``).

What it reads: the informer's snapshots, which never change once taken
(``fleet.store.live``), handed over by the control plane's loop as its state changes
(``publish``; at most every ``PUBLISH_EVERY`` seconds). So an answer here may be that
much, plus a turn of the busy loop, older than the main port's; a client that must read
its own write reads it from the main port, as the CLI's write commands do. The read
methods' handlers are the API's own (``FleetService``), on an instance of their own
with memos of their own, so no memo is shared between two threads.

The memos (each app's counts, each host's sums, the endpoints) are brought up to a new
state by redoing what changed since they last saw one: a call every few seconds during
a large apply found most of 100,000 slots changed, and took 160 ms where the main port's
took 5. So while someone reads (a read in the last ``WARM_WHILE`` seconds), the port's
loop brings them up to each published state, at most every ``WARM_EVERY`` seconds, as
the calls of `get apps`, `get hosts` and `endpoints` would. Certificates as on the main
port (no tokens: token callers use the token port).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import grpc
import grpc.aio

from fleet.controlplane._handlers import service_handler
from fleet.controlplane.api import FleetService
from fleet.errors import FailedPrecondition
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, Informer
from fleet.transport import Transport

__all__ = ["PUBLISH_EVERY", "READ_METHODS", "PublishedState", "ReadPort"]

log = logging.getLogger(__name__)

# The calls the read port answers; any other answers UNIMPLEMENTED, saying where to go.
READ_METHODS = (
    "GetApps",
    "GetHosts",
    "GetContainers",
    "Endpoints",
    "RolloutStatus",
    "RolloutHistory",
    "GetUpgrade",
    "GetPolicy",
    "GetServerInfo",
)
PUBLISH_EVERY = 0.05  # seconds: the most often a new state is handed to the read port
WARM_EVERY = 0.5  # seconds: the most often the memos are brought up to a new state
WARM_WHILE = 60.0  # seconds after a read that they are
_HOSTS_A_TURN = 50  # hosts whose sums are brought up between two turns of the loop
_START_TIMEOUT = 10.0


class PublishedState:
    """The latest snapshot the control plane's loop handed over. A snapshot is never
    changed once taken, so the read port's thread reads it as it is; the handover is
    one assignment."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self.on_publish: Callable[[], None] | None = None  # called in the publisher's thread

    def publish(self, state: ClusterState) -> None:
        self._state = state
        if self.on_publish is not None:
            self.on_publish()

    def state(self) -> ClusterState:
        return self._state

    async def wait_synced(self) -> None:
        """Synced from the start: the port starts with the informer's first state."""


def read_service(
    api: FleetService, published: PublishedState, on_call: Callable[[], None]
) -> FleetService:
    """An API servicer for the read port: ``api``'s parts and settings over
    ``published``'s state, with memos of its own (kept between calls, by one thread);
    ``on_call`` is called after each call."""
    # The read methods ask the informer only for ``state()`` and ``wait_synced()``,
    # which ``PublishedState`` has (the port's test calls every one of them).
    reader = api.sibling(cast(Informer, published))
    observe = api.observe_call  # prometheus_client's metrics take any thread

    def observed(method: str, seconds: float) -> None:
        on_call()
        if observe is not None:
            observe(method, seconds)

    reader.observe_call = observed
    return reader


class _ReadOnly(grpc.GenericRpcHandler):  # type: ignore[misc]
    """``READ_METHODS`` of ``servicer``; any other method of the API answers
    UNIMPLEMENTED with where to send it."""

    def __init__(self, servicer: FleetService) -> None:
        self._reads = service_handler("FleetService", servicer)
        self._prefix = f"/{pb.DESCRIPTOR.services_by_name['FleetService'].full_name}/"

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = str(handler_call_details.method)
        if method.startswith(self._prefix) and method[len(self._prefix) :] in READ_METHODS:
            return self._reads.service(handler_call_details)
        return grpc.unary_unary_rpc_method_handler(_elsewhere)


async def _elsewhere(request: bytes, context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        "this is the control plane's read port: it answers get, ps, endpoints and rollout "
        "status; send everything else to its main port (--server)",
    )


class ReadPort:
    """``start(listen)`` serves the read methods in a thread of their own; ``publish``
    (from the control plane's loop) hands it each new state; ``stop``."""

    def __init__(
        self,
        api: FleetService,
        transport: Transport,
        state: ClusterState,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.published = PublishedState(state)
        self._servicer = read_service(api, self.published, self._read)
        self._last_read = -math.inf  # monotonic
        self._published: asyncio.Event | None = None  # the port's loop's
        self._transport = transport
        self._options = list(options)  # the main port's (message sizes, keepalives)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._grace = 1.0
        self.port = 0

    def publish(self, state: ClusterState) -> None:
        self.published.publish(state)

    def start(self, listen: str) -> int:
        """Bind ``listen`` and serve; the port bound. FailedPrecondition when it cannot."""
        # Python's switch interval (5 ms) is left alone. At 1 ms the port's loop got the
        # interpreter's lock sooner at each turn (reads' p50 5-26 ms instead of 14-54;
        # their p99 did not move), but this loop also takes gRPC's completions for the
        # whole process (its one completion queue wakes whichever bound loop reads
        # first) and hands the main loop's over: at 5,000 hosts that hand-over at 1 ms
        # cost the control plane 19 s of cpu and the apply 22 s (83.5 s to all running
        # against 61.9 s, the port unread).
        started: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(listen, started), name="fleet-read-port", daemon=True
        )
        self._thread.start()
        try:
            self.port = started.result(_START_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise FailedPrecondition(
                f"the read port on {listen} did not start within {_START_TIMEOUT:g}s"
            ) from None
        return self.port

    def _run(self, listen: str, started: concurrent.futures.Future[int]) -> None:
        try:
            asyncio.run(self._serve(listen, started))
        except BaseException as error:  # a failure to start is the starter's to raise
            if not started.done():
                started.set_exception(error)
            else:
                log.exception("the read port stopped")

    async def _serve(self, listen: str, started: concurrent.futures.Future[int]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._published = asyncio.Event()
        self.published.on_publish = self._on_publish
        server = grpc.aio.server(options=self._options)
        server.add_generic_rpc_handlers((_ReadOnly(self._servicer),))
        port = self._transport.add_port(server, listen)
        await server.start()
        started.set_result(port)
        warming = asyncio.create_task(self._keep_warm())
        try:
            await self._stopping.wait()
        finally:
            warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warming
            await server.stop(self._grace)

    def _read(self) -> None:
        self._last_read = time.monotonic()

    def _on_publish(self) -> None:
        loop, published = self._loop, self._published
        if loop is not None and published is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                loop.call_soon_threadsafe(published.set)

    async def _keep_warm(self) -> None:
        """While someone reads, bring the memos up to each published state (at most
        every WARM_EVERY seconds), as `get apps`, `get hosts` and `endpoints` would:
        an app or ``_HOSTS_A_TURN`` hosts at a time, the calls served in between (warming
        whole answers at once held the port's loop up to half a second)."""
        assert self._published is not None
        service = self._servicer
        while True:
            await self._published.wait()
            self._published.clear()
            if time.monotonic() - self._last_read > WARM_WHILE:
                continue
            state, now = self.published.state(), time.time()
            try:
                for name, stored in list(state.apps.items()):
                    service.counts.counts(state, stored.value, now)  # GetApps
                    service.endpoint_cache.endpoints(state, name, now)  # Endpoints
                    await asyncio.sleep(0)
                for n, host_id in enumerate(list(state.hosts)):
                    service.host_sums.of(state, host_id)  # GetHosts
                    if n % _HOSTS_A_TURN == _HOSTS_A_TURN - 1:
                        await asyncio.sleep(0)
            except Exception:  # a bug; the calls themselves still answer
                log.exception("read port: keeping its memos up failed")
            await asyncio.sleep(WARM_EVERY)

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (calls in progress get ``grace`` seconds) and end the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        self._grace = grace
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                loop.call_soon_threadsafe(stopping.set)
        thread.join(grace + 5)
        self._thread = None


async def keep_published(port: ReadPort, informer: Informer, every: float = PUBLISH_EVERY) -> None:
    """Hand the read port each new state of ``informer`` (a task of the control
    plane's loop), at most every ``every`` seconds."""
    subscription = informer.subscribe()
    try:
        while True:
            await subscription.wait()
            port.publish(informer.state())
            await asyncio.sleep(every)
    finally:
        informer.unsubscribe(subscription)
