"""The agent's session with the control plane: one stream at a time, to any server in
``--server`` (with backoff between tries, jittered so that agents cut off together do
not all come back at the same instant).

On each stream the agent registers (capacity, labels, facts), then sends heartbeats
(``fleet.agent.report``) and its queued events, and takes what the control plane sends:
desired sets (stored for the reconcile loop, which is woken), host commands
(``fleet.agent.hostcommands``), log/exec/top requests (``fleet.agent.requests``) and
exec sessions with their input streamed (``fleet.agent.execsessions``).
Events that were queued for a stream that then broke go back to the front of the
queue, for the next one. Registering again, the agent names the desired set it holds
(its fingerprint): a control plane whose set for the host is that one sends none, so a
restart of the control plane does not send every host the set it already has.

A renewed certificate (its files rewritten while the agent runs) is taken up without a
restart: the stream ends and the next one is opened with the new files
(``fleet.agent.certwatch``). A control plane that refuses who the agent is (its
certificate names another host) stops the agent: no retry can change that.

A stopping agent leaves cleanly (``leave``): an ``agent-stopped`` event, then the end
of its side of the stream; the control plane ends the stream and marks the host
disconnected at once, without waiting for its silence to be noticed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio

from fleet.agent.certwatch import CertificateWatch
from fleet.agent.config import AgentConfig
from fleet.agent.events import EventQueue, own
from fleet.agent.execsessions import ExecSessions
from fleet.agent.health import Prober
from fleet.agent.hostcommands import CommandRunner, HostCommands
from fleet.agent.logonce import FailureLog
from fleet.agent.previouslogs import PreviousLogs
from fleet.agent.report import heartbeat
from fleet.agent.requests import RequestHandler
from fleet.agent.runtime import Runtime, call
from fleet.agent.state import HostState
from fleet.errors import FleetError
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.refusals import agent_refused, explain_refusal, stream_trouble
from fleet.zincati import zincati_id_of

__all__ = ["Outbox", "Session", "os_facts", "reconnect_backoff"]

log = logging.getLogger(__name__)

# Each try on a connection of its own. gRPC shares a connection between the channels
# of one process to the same address (its global subchannel pool), and its state: a
# new channel on one that failed fails at once ("failed to connect to all addresses")
# until gRPC's own reconnect backoff (1 s, growing by 1.6) lets it try again, whatever
# the session's backoff says; and hosts simulated in one process (fleet.testing.hollow)
# shared one TCP connection, where real hosts each have their own.
_OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)

_REPORT_BATCH = 0.2  # seconds: changes this close together go in one report
_END = pb.AgentMessage()  # in an outbox: the stream ends here (compared by identity)
_HEARTBEAT = pb.AgentMessage()  # in an outbox: the newest heartbeat goes here (likewise)
# Seconds a heartbeat may wait in the outbox, or a message take to be sent, before the
# agent says its stream is slow (the control plane marks a host down after 15 s without
# a word from it, by default).
_SLOW_AFTER = 5.0
_SLOW_SAID_EVERY = 60.0  # seconds between two warnings of one kind
_SLOW = {
    "waited": (
        "a heartbeat waited %.1fs to be sent: the stream to the control plane sends slower "
        "than this host reports; a host not heard from for its TTL is marked down"
    ),
    # gRPC hands a message on once its flow control lets it: the control plane had not
    # read what came before (it is busy), or the network is slow.
    "sending": (
        "a message to the control plane took %.1fs to be sent: it reads this host's "
        "stream slowly (the control plane busy, the network slow, or this agent short of "
        "cpu); a host not heard from for its TTL is marked down"
    ),
}
_FIRST_DELAY = 0.2  # seconds: the backoff after a stream that was open


def reconnect_backoff(delay: float, cap: float, draw: float) -> tuple[float, float]:
    """How long to wait before the next try, and the backoff of the try after it.

    The wait is a uniform share of ``delay`` (``draw`` in [0, 1); "full jitter", as in
    AWS's "Exponential Backoff And Jitter"): when a control plane fails, its thousands of
    agents lose their streams at the same instant, and without jitter they would all
    come back (and register) at the same instants too, again and again. The backoff
    itself doubles up to ``cap`` whatever was drawn, so repeated failures still slow the
    tries down."""
    return delay * min(max(draw, 0.0), 1.0), min(delay * 2, cap)


def os_facts(path: Path) -> dict[str, str]:
    """os_name, os_version and os_id from an os-release file (none if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isidentifier():
            fields[key.strip()] = value.strip().strip("\"'")
    facts = {
        "os_name": fields.get("NAME", ""),
        "os_version": fields.get("VERSION_ID", "") or fields.get("VERSION", ""),
        "os_id": fields.get("ID", ""),
    }
    return {k: v[:200] for k, v in facts.items() if v}


def _address_towards(server: str) -> str:
    """This host's address on the route to ``server`` (no packet is sent)."""
    host = server.rpartition(":")[0].strip("[]") or "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return ""


class Outbox:
    """The messages of one stream, in the order they go out, but for heartbeats: one
    waiting to be sent is replaced by the next (``put_heartbeat``). Events taken from
    the queue for it that it never sent go back to the front of the queue when it closes
    (a stream that broke delivers nothing more)."""

    def __init__(self, events: EventQueue, clock: Callable[[], float] = time.monotonic) -> None:
        self._events = events
        self._queue: asyncio.Queue[pb.AgentMessage] = asyncio.Queue()
        self._clock = clock
        self._heartbeat: pb.AgentMessage | None = None  # the newest one not yet sent
        self._heartbeat_since = 0.0  # when the unsent heartbeats began to wait
        self._slow_said = dict.fromkeys(_SLOW, -math.inf)

    async def put(self, message: pb.AgentMessage) -> None:
        await self._queue.put(message)

    async def put_heartbeat(self, message: pb.AgentMessage) -> None:
        """Queue ``message``, a heartbeat. It takes the place of one still waiting to
        be sent, in that one's turn: each says all the host has, so only the newest
        matters, and a stream that sends slower than heartbeats come (a busy host, a
        slow link or control plane) sends the newest when it can, not a backlog of stale
        ones that grows until the control plane hears nothing new for its TTL."""
        waiting = self._heartbeat is not None
        self._heartbeat = message
        if not waiting:
            self._heartbeat_since = self._clock()
            await self._queue.put(_HEARTBEAT)

    async def send_events(self) -> None:
        """Move queued events into the outbox, a batch at a time, until cancelled."""
        while True:
            await self._events.ready.wait()
            batch = self._events.take()
            if batch:
                await self._queue.put(pb.AgentMessage(events=pb.EventBatch(events=batch)))

    async def messages(self) -> AsyncIterator[pb.AgentMessage]:
        """What the stream sends (its request iterator), until ``finish``."""
        while True:
            message = await self._queue.get()
            if message is _END:
                return  # the agent's side of the stream is closed: the server sees its end
            if message is _HEARTBEAT:
                newest, self._heartbeat = self._heartbeat, None
                if newest is None:
                    continue
                self._say_if_slow("waited", self._clock() - self._heartbeat_since)
                message = newest
            handed = self._clock()
            yield message  # gRPC asks for the next one once this one is sent
            self._say_if_slow("sending", self._clock() - handed)

    def _say_if_slow(self, kind: str, seconds: float) -> None:
        now = self._clock()
        if seconds >= _SLOW_AFTER and now - self._slow_said[kind] >= _SLOW_SAID_EVERY:
            self._slow_said[kind] = now
            log.warning(_SLOW[kind], seconds)

    async def finish(self, last: pb.AgentMessage) -> None:
        """Send ``last``, then close the agent's side of the stream."""
        await self._queue.put(last)
        await self._queue.put(_END)

    def close(self) -> None:
        """The stream is over: its unsent events go back to the queue, first in line,
        and ``messages`` ends. gRPC reads it from a task of its own, which it cancels
        only with a call cancelled while still open: the sender of a stream the server
        ended would wait on the outbox until the collector destroyed it, logging
        "Task was destroyed but it is pending!" in every agent after each restart of
        the control plane."""
        unsent: list[pb.Event] = []
        while not self._queue.empty():
            message = self._queue.get_nowait()
            if message is not _END and message.WhichOneof("kind") == "events":
                unsent.extend(message.events.events)
        if unsent:
            self._events.give_back(unsent)
        self._heartbeat = None
        self._queue.put_nowait(_END)


class EdgeTables:
    """An edge host's routing tables as they are pushed: each is handed to ``on_edge``
    (the edge proxy's update) unless it is older than the last one, as desired sets:
    a lagging server's is ignored, except the first of a new stream (another server
    counts its versions from its own state)."""

    def __init__(self, on_edge: Callable[[pb.EdgeConfig], None] | None) -> None:
        self._on_edge = on_edge
        self.version = 0
        self._first = True

    def new_stream(self) -> None:
        self._first = True

    def take(self, config: pb.EdgeConfig) -> bool:
        """Hand ``config`` on if it is not older; whether it was."""
        if not self._first and config.version < self.version:
            return False
        self._first = False
        self.version = config.version
        if self._on_edge is not None:
            self._on_edge(config)
        return True


class Session:
    """Keeps the agent connected to a control plane, until cancelled."""

    def __init__(
        self,
        config: AgentConfig,
        runtime: Runtime,
        state: HostState,
        prober: Prober,
        failures: FailureLog,
        connected: asyncio.Event,
        runner: CommandRunner,
        on_edge: Callable[[pb.EdgeConfig], None] | None = None,
    ) -> None:
        self.config = config
        self.edge = EdgeTables(on_edge)
        self.runtime = runtime
        self.state = state
        self.connected = connected
        self._prober = prober
        self._failures = failures
        self._requests = RequestHandler(
            runtime, lambda: state.observed, PreviousLogs(config.previous_logs_dir)
        )
        self._execs = ExecSessions(runtime, self._requests.find)
        self.commands = HostCommands(config, state.events, runner)
        tls = config.transport.tls
        self._certs = CertificateWatch(tls) if tls is not None else None
        # Set once the first try to register is over, whichever way it went.
        self.tried = asyncio.Event()
        self._leaving = False
        self._outbox: Outbox | None = None  # the registered stream's, while it is open
        self._closed = asyncio.Event()  # set while no stream is open
        self._closed.set()

    async def leave(self, grace: float) -> None:
        """Close the stream cleanly, for good: an ``agent-stopped`` event, then the end
        of the agent's side, which the control plane answers by ending the stream and
        marking the host disconnected at once. Returns once it has, or after ``grace``
        (the caller then cancels ``run``)."""
        self._leaving = True
        outbox = self._outbox
        if outbox is None:
            return
        event = own("agent-stopped", "the agent is stopping; its containers keep running")
        await outbox.finish(pb.AgentMessage(events=pb.EventBatch(events=[event])))
        try:
            async with asyncio.timeout(grace):
                await self._closed.wait()
        except TimeoutError:
            log.warning("the control plane did not close the stream within %gs", grace)

    async def run(self) -> None:
        """Connect, and connect again whenever a stream ends (until ``leave``)."""
        delay = _FIRST_DELAY
        attempt = 0
        while not self._leaving:
            server = self.config.servers[attempt % len(self.config.servers)]
            attempt += 1
            try:
                renewed = await self._session(server)
                delay = _FIRST_DELAY
                if renewed:
                    continue  # reconnect at once, with the new certificate
            except grpc.aio.AioRpcError as error:
                details = error.details() or ""
                refused = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
                if error.code() in refused:
                    # The control plane refuses who this agent is (its certificate names
                    # another host): no retry can change that, so the agent stops.
                    tls = self.config.transport.tls
                    raise agent_refused(self.config.host_id, server, details, tls) from None
                transport, now = self.config.transport, datetime.now(UTC)
                was_open = self.connected.is_set()  # cleared below
                trouble = explain_refusal(details, transport, server, now) or stream_trouble(
                    server, details, was_open=was_open
                )
                again = "reconnecting" if was_open else "retrying"
                log.warning("%s; %s within %.1fs", trouble, again, delay)
            except (FleetError, OSError) as error:
                log.warning("control plane %s: %s; retrying within %.1fs", server, error, delay)
            except Exception as error:  # a bug must cost a reconnect, never the agent
                self._failures.failed(f"session with {server} failed: {error!r}", error)
            finally:
                self.connected.clear()
                self.tried.set()
            if self._leaving:
                return
            wait, delay = reconnect_backoff(delay, self.config.reconnect_max, random.random())
            await asyncio.sleep(wait)

    async def _register_message(self) -> pb.AgentMessage:
        cpus, memory, facts = await call(self.runtime, self.runtime.host_facts)
        facts.update(await asyncio.to_thread(os_facts, self.config.os_release))
        zincati = await asyncio.to_thread(zincati_id_of, self.config.machine_id)
        if zincati is not None:
            facts["zincati_id"] = zincati
        cpus = min(cpus, self.config.cpus) if self.config.cpus is not None else cpus
        memory = min(memory, self.config.memory) if self.config.memory is not None else memory
        return pb.AgentMessage(
            register=pb.Register(
                host_id=self.config.host_id,
                capacity=pb.Resources(cpu=cpus, memory_bytes=memory),
                labels=self.config.labels,
                facts=facts,
                address=self.config.address
                or await asyncio.to_thread(_address_towards, self.config.servers[0]),
                ingress=self.config.ingress,
                held_fingerprint=self.state.desired_fingerprint,
            )
        )

    async def _watch_certificate(self, call: grpc.aio.Call, renewed: asyncio.Event) -> None:
        """End the stream (``call``) once the certificate files changed into a usable
        set: the next connection presents the new certificate."""
        assert self._certs is not None
        while True:
            await asyncio.sleep(self.config.cert_check_seconds)
            serial = await asyncio.to_thread(self._certs.renewed)
            if serial is not None:
                log.info(
                    "the certificate %s changed (serial %s): reconnecting with it",
                    self._certs.files.cert,
                    serial,
                )
                renewed.set()
                call.cancel()
                return

    async def _session(self, server: str) -> bool:
        """One stream with ``server``, until it ends; True when it ended because the
        certificate was renewed (reconnect at once)."""
        outbox = Outbox(self.state.events)
        await outbox.put(await self._register_message())
        if self._certs is not None:
            self._certs.mark()  # before the channel reads the files
        async with self.config.transport.aio_channel(server, _OWN_CONNECTION) as channel:
            stub = pb_grpc.AgentServiceStub(channel)
            call = stub.Connect(outbox.messages())
            heartbeats: asyncio.Task[None] | None = None
            senders: asyncio.Task[None] | None = None
            renewed = asyncio.Event()
            watcher = (
                asyncio.create_task(self._watch_certificate(call, renewed))
                if self._certs is not None
                else None
            )

            async def respond(response: pb.ContainerResponse) -> None:
                await outbox.put(pb.AgentMessage(response=response))

            async def relay_exec(output: pb.ExecRelayOutput) -> None:
                await outbox.put(pb.AgentMessage(exec_output=output))

            first_set = True
            self.edge.new_stream()
            try:
                async for message in call:
                    kind = message.WhichOneof("kind")
                    if kind == "registered":
                        log.info("registered with %s as %s", server, message.registered.host_id)
                        self._take_pool(message.registered.pool_id)
                        self.connected.set()
                        self.tried.set()
                        self._outbox = outbox
                        self._closed.clear()
                        heartbeats = asyncio.create_task(
                            self._send_heartbeats(outbox, message.registered.heartbeat_seconds)
                        )
                        senders = asyncio.create_task(outbox.send_events())
                    elif kind == "request":
                        self._requests.submit(message.request, respond)
                    elif kind == "exec_input":
                        self._execs.handle(message.exec_input, relay_exec)
                    elif kind == "desired" and (
                        # Versions rise with etcd's revision; an older set from a lagging
                        # server is ignored, except the first one of a new stream.
                        first_set or message.desired.version >= self.state.desired_version
                    ):
                        self.state.desired = list(message.desired.containers)
                        self.state.desired_version = message.desired.version
                        self.state.desired_fingerprint = message.desired.fingerprint
                        log.debug(
                            "desired set %d taken: %d containers",
                            message.desired.version,
                            len(message.desired.containers),
                        )
                        self.state.registry_mirror = message.desired.registry_mirror
                        first_set = False
                        self.state.wake.set()
                        if message.desired.HasField("command"):
                            await self.commands.run(message.desired.command)
                    elif kind == "edge":
                        self.edge.take(message.edge)
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                current = asyncio.current_task()
                if renewed.is_set() and not (current is not None and current.cancelling()):
                    return True  # the stream we ended ourselves, to renew
                raise
            finally:
                for task in (heartbeats, senders, watcher):
                    if task is not None:
                        task.cancel()
                self._requests.cancel_all()
                call.cancel()
                outbox.close()
                self._outbox = None
                try:
                    # Before the stream counts as closed: ``leave`` returns then, and
                    # the agent's exit came before the exec'd commands were hung up.
                    await self._execs.close()
                finally:
                    self._closed.set()
            return renewed.is_set()

    def _take_pool(self, pool_id: str) -> None:
        """The pool the control plane says this host is in: its containers are told
        from other pools' by it (``fleet.agent.ownership``)."""
        before = self.state.pool_id
        if pool_id == before:
            return
        if before:
            message = (
                f"this host was in pool {before[:12]} and is now in pool {pool_id[:12] or '(none)'}"
                ": containers of the pool before are left alone, not adopted"
            )
            log.warning("%s", message)
            self.state.events.put(own("pool-changed", message))
        self.state.pool_id = pool_id
        self.state.wake.set()

    async def _send_heartbeats(self, outbox: Outbox, every: float) -> None:
        report_now = self.state.report_now
        # A heartbeat before the first listing would say the host runs nothing: a
        # restarted agent's replicas would leave the edges until the next one. So the
        # first waits for it, but no longer than an interval: the host must be heard.
        await self.state.wait_listed(max(every, 0.1))
        while True:
            report_now.clear()
            await outbox.put_heartbeat(
                heartbeat(self.state, self._prober, self.config.backoff, time.time())
            )
            try:
                async with asyncio.timeout(max(every, 0.1)):  # (wait_for may swallow a cancel)
                    await report_now.wait()
            except TimeoutError:
                continue
            # A change goes out at once, but the changes that follow it within
            # _REPORT_BATCH go with it (Nomad's client batches allocation updates every
            # 200 ms too): a host starting a hundred containers sends a few reports, not
            # a hundred, each of which the control plane compares container by container.
            await asyncio.sleep(_REPORT_BATCH)
