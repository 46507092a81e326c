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

Why gRPC's sync server, not a second grpc.aio one: grpc.aio has one completion queue a
process, and every event loop that serves a grpc.aio server watches its wake-up socket;
whichever loop reads it first takes every completion and hands the other loops theirs,
one ``call_soon_threadsafe`` each (``PollerCompletionQueue._handle_events`` in grpcio).
An idle port's loop read it first nearly every time: during a 100,000-replica apply its
thread spent 8% of the control plane's cpu waking for the main port's completions and
handing them over, each wake taking the interpreter's lock from the busy loop. The sync
server has a completion queue of its own; its threads take a read's request and hand
the call to the port's loop (``_on_loop``), which runs no grpc.aio at all.

What it reads: the informer's snapshots, which never change once taken
(``fleet.store.live``), handed over by the control plane's loop as its state changes
(``publish``; at most every ``PUBLISH_EVERY`` seconds). So an answer here may be that
much, plus a turn of the busy loop, older than the main port's; a client that must read
its own write reads it from the main port, as the CLI's write commands do. The read
methods' handlers are the API's own (``FleetService``), on an instance of their own
with memos of their own, all run by the port's loop, so no memo is shared between two
threads.

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

from fleet.controlplane._handlers import refuse, service_handler
from fleet.controlplane.api import FleetService
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
_CALLS_AT_ONCE = 8  # gRPC threads taking calls; their work is the port's loop's, one at a time


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
    """``READ_METHODS`` of ``servicer``, each call run by ``through``; any other method
    of the API answers UNIMPLEMENTED with where to send it."""

    def __init__(
        self,
        servicer: FleetService,
        through: Callable[[Callable[..., Any]], Callable[..., Any]],
    ) -> None:
        self._reads = service_handler("FleetService", servicer, only=READ_METHODS, through=through)
        self._elsewhere = grpc.unary_unary_rpc_method_handler(_elsewhere)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._reads.service(handler_call_details) or self._elsewhere


def _elsewhere(request: bytes, context: grpc.ServicerContext) -> None:
    context.abort(
        grpc.StatusCode.UNIMPLEMENTED,
        "this is the control plane's read port: it answers get, ps, endpoints and rollout "
        "status; send everything else to its main port (--server)",
    )


class ReadPort:
    """``start(listen)`` serves the read methods: gRPC's sync server takes the calls,
    the port's thread and loop run them; ``publish`` (from the control plane's loop)
    hands it each new state; ``stop``."""

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
        self._transport = transport
        self._options = list(options)  # the main port's (message sizes, keepalives)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._published = asyncio.Event()  # set and waited on in the port's loop only
        self._warming: concurrent.futures.Future[None] | None = None  # holds its task
        self._server: grpc.Server | None = None
        self._calls: concurrent.futures.ThreadPoolExecutor | None = None  # the server's threads
        self.port = 0

    def publish(self, state: ClusterState) -> None:
        self.published.publish(state)

    def start(self, listen: str) -> int:
        """Bind ``listen`` and serve; the port bound. FailedPrecondition when it cannot."""
        # Python's switch interval (5 ms) is left alone. At 1 ms the port got the
        # interpreter's lock sooner at each turn (reads' p50 5-26 ms instead of 14-54;
        # their p99 did not move); measured when the port was a grpc.aio server whose
        # loop took the main port's completions, at 5,000 hosts it cost the control
        # plane 19 s of cpu and the apply 22 s.
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=loop.run_forever, name="fleet-read-port", daemon=True
        )
        self._thread.start()
        self._warming = asyncio.run_coroutine_threadsafe(self._keep_warm(), loop)
        self.published.on_publish = self._on_publish
        self._calls = concurrent.futures.ThreadPoolExecutor(_CALLS_AT_ONCE, "fleet-read-call")
        server = grpc.server(
            self._calls,
            handlers=(_ReadOnly(self._servicer, self._on_loop),),
            options=self._options,
        )
        try:
            self.port = self._transport.add_port(server, listen)
            server.start()
        except BaseException:
            self.stop()
            raise
        self._server = server
        return self.port

    def _on_loop(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` (an API coroutine) as a sync handler: run on the port's loop, the
        gRPC thread waiting for its answer."""

        def call(request: object, context: grpc.ServicerContext) -> object:
            assert self._loop is not None
            running = asyncio.run_coroutine_threadsafe(method(request, context), self._loop)
            try:
                response = running.result(context.time_remaining())
            except concurrent.futures.TimeoutError:  # the caller's deadline passed
                running.cancel()
                response = None
                refuse(context, grpc.StatusCode.DEADLINE_EXCEEDED, "the read took too long")
            if response is None:
                # Refused (``_handlers.refuse``): the status is set; a sync handler that
                # returns nothing must say so by aborting (its trailers are kept).
                context.abort(context.code(), context.details())
            return response

        return call

    def _read(self) -> None:
        self._last_read = time.monotonic()

    def _on_publish(self) -> None:
        if (loop := self._loop) is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                loop.call_soon_threadsafe(self._published.set)

    async def _keep_warm(self) -> None:
        """While someone reads, bring the memos up to each published state (at most
        every WARM_EVERY seconds), as `get apps`, `get hosts` and `endpoints` would:
        an app or ``_HOSTS_A_TURN`` hosts at a time, the calls served in between (warming
        whole answers at once held the port's loop up to half a second)."""
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
        if self._server is not None:
            self._server.stop(grace).wait(grace + 5)
            self._server = None
        self._stop_loop(grace)
        if self._calls is not None:
            self._calls.shutdown(wait=False, cancel_futures=True)
            self._calls = None

    def _stop_loop(self, grace: float) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self.published.on_publish = None
        with contextlib.suppress(concurrent.futures.TimeoutError):
            asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop).result(grace + 5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(grace + 5)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = self._warming = None


async def _cancel_tasks() -> None:
    """Cancel the calling loop's other tasks (the warming, any call) and wait for them."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


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
