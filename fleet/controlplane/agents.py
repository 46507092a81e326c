"""The agent stream: registration, heartbeats and reports in; desired sets out.

Each connected agent holds one bidirectional stream. Registering writes the host's
liveness key, bound to this replica's own etcd lease, and its revision names the
session: every report of the session is guarded on it. The session's end (the stream
closes, or the ``LeaseKeeper`` finds the host silent for its TTL) deletes the host's
liveness, status and report keys; this replica's death lets its lease expire, and
them with it. No timestamps written for others, and no lease per host (etcd renews a
stream's leases one after another: 5,000 of them fell minutes behind under load).
The server pushes the host's whole desired set whenever the informer sees it change.

A certificate denied by ``fleet hosts remove`` (``denied/<serial>``) is refused at
registration, and every session on every replica that presented it ends as soon as
that replica's informer sees the denial.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from fleet._text import strip_control
from fleet._time import now_iso
from fleet.controlplane._handlers import check_well_formed, refuse
from fleet.controlplane.auth import caller
from fleet.controlplane.desired import (
    SpecCache,
    desired_containers,
    desired_inputs,
    fingerprint,
)
from fleet.controlplane.eventgate import EventGate, GateLimits
from fleet.controlplane.reportqueue import ReportQueue
from fleet.controlplane.reports import ReportWriter
from fleet.errors import (
    Conflict,
    FailedPrecondition,
    FleetError,
    InvalidArgument,
    PermissionDenied,
    details,
    grpc_code_for,
)
from fleet.hostlabels import MAX_LABELS, known_facts
from fleet.pki.subjects import serial_from_auth_context
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.secrets import SecretBox
from fleet.store import Informer, Store, check_host_id
from fleet.store.events import EventLog
from fleet.store.leases import LeaseKeeper
from fleet.store.records import (
    DeniedRecord,
    HostRecord,
    LiveRecord,
    ResourceAmounts,
)
from fleet.store.state import Versioned

__all__ = ["AgentService", "HostLimits", "denied_message", "host_record"]

log = logging.getLogger(__name__)

_MAX_TEXT = 1024
_REGISTER_TIMEOUT = 10.0
_MAX_EVENTS_PER_BATCH = 500
# Agents' events waiting to be stored; past this (etcd away for long) new ones are dropped.
_EVENT_BACKLOG = 100_000
_PUSH_COALESCE = 0.05  # seconds a session waits after a change before it looks
# Seconds: how often usage alone is rewritten, at least (two heartbeats if longer).
# The scheduler ignores usage older than STATS_STALE_AFTER (15 s).
_STATUS_REFRESH = 5.0
_PAST_SERIALS = 8  # earlier certificate serials a host record keeps (fleet hosts remove)


def denied_message(record: DeniedRecord) -> str:
    """Why a denied certificate is refused, and how its host can rejoin."""
    return (
        f"certificate serial {record.serial} of host {record.host_id} was removed from the "
        f"pool by {record.by} at {record.at}; to rejoin, issue the host a new certificate "
        f"(`fleet certs issue agent {record.host_id} --force`) and start its agent with it"
    )


def _check_map(what: str, values: dict[str, str]) -> dict[str, str]:
    if len(values) > MAX_LABELS:
        raise InvalidArgument(f"too many {what}: {len(values)} (at most {MAX_LABELS})")
    for key, value in values.items():
        if not key or len(key) > 253 or len(value) > _MAX_TEXT or "\0" in key + value:
            raise InvalidArgument(f"invalid {what} entry {key[:64]!r}")
    return dict(values)


def _check_address(value: str) -> str:
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(f"address must be an IP address, got {value[:64]!r}") from None


@dataclass(frozen=True)
class HostLimits:
    """The most any one host is taken to have (``fleet server --max-host-cpus`` and
    ``--max-host-memory``): an agent reports its capacity itself, so a compromised host
    could claim 1,000 cores to attract work; placement counts the claim capped to these.
    None: counted as claimed."""

    cpus: float | None = None
    memory: int | None = None

    def cap(self, claimed: ResourceAmounts) -> ResourceAmounts:
        """``claimed`` capped to these limits."""
        cpu = claimed.cpu if self.cpus is None else min(claimed.cpu, self.cpus)
        memory = claimed.memory if self.memory is None else min(claimed.memory, self.memory)
        return ResourceAmounts(cpu=cpu, memory=memory)


def host_record(
    register: pb.Register,
    old: HostRecord | None,
    limits: HostLimits = HostLimits(),
    serial: str = "",
) -> HostRecord:
    """The registration as stored: the capacity placement counts is the claim capped to
    ``limits`` (the claim is kept beside it); facts fleet does not know are dropped; the
    operator-set state (and a drain in progress) survives re-registration. Admin labels
    are not in it (they have a key of their own), so nothing a host sends can set or
    remove them. ``serial`` is the certificate it registered with (the ones before it
    are kept, a few, for a removal to deny them all)."""
    host_id = check_host_id(register.host_id)
    if not (math.isfinite(register.capacity.cpu) and 0 <= register.capacity.cpu <= 1e6):
        raise InvalidArgument("capacity cpu must be a number of cores, 0 or more")
    if register.capacity.memory_bytes < 0:
        raise InvalidArgument("capacity memory must not be negative")
    claimed = ResourceAmounts(cpu=register.capacity.cpu, memory=register.capacity.memory_bytes)
    facts = _check_map("facts", dict(register.facts))
    past = list(old.past_serials) if old else []
    if old and old.cert_serial and old.cert_serial != serial:
        past = [s for s in past if s != old.cert_serial] + [old.cert_serial]
    past = [s for s in past if s != serial][-_PAST_SERIALS:]
    return HostRecord(
        host_id=host_id,
        capacity=limits.cap(claimed),
        reported=claimed,
        labels=_check_map("labels", dict(register.labels)),
        facts=known_facts(facts),
        state=old.state if old else "ready",
        # A drain in progress goes on through a reconnect: without its record (deadline,
        # --force) a draining host would never be found drained.
        drain=old.drain if old else None,
        registered_at=now_iso(),
        address=_check_address(register.address),
        cert_serial=serial,
        past_serials=past,
    )


def _running(
    task: asyncio.Task[None] | None, start: Callable[[], Coroutine[Any, Any, None]], name: str
) -> asyncio.Task[None]:
    """``task`` while it runs; otherwise a new one from ``start`` (a background loop of
    the service, started on first use and again if it ever ended)."""
    if task is None or task.done():
        return asyncio.create_task(start(), name=name)
    return task


class _Session:
    """One connected agent: its outgoing queue and the requests awaiting its answers."""

    def __init__(
        self,
        host_id: str,
        revision: int,
        lease: int,
        outbox: asyncio.Queue[pb.ServerMessage],
        serial: str = "",
    ) -> None:
        self.host_id = host_id
        self.revision = revision  # of the host's liveness key: guards the session's writes
        self.lease = lease  # this replica's, which the session's keys are bound to
        self.outbox = outbox
        self.serial = serial  # of the certificate the agent presented ("" : plaintext)
        self.pending: dict[str, asyncio.Queue[pb.ContainerResponse]] = {}
        self.denied: str | None = None  # why the session must end: its certificate is denied
        self.ended = asyncio.Event()

    def deny(self, why: str) -> None:
        """End the session: its certificate was denied (``fleet hosts remove``)."""
        if self.denied is None:
            self.denied = why
            self.ended.set()

    def close(self) -> None:
        for queue in self.pending.values():
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(pb.ContainerResponse(done=True, error="the host disconnected"))


class AgentService(pb_grpc.AgentServiceServicer):
    def __init__(
        self,
        store: Store,
        informer: Informer,
        keeper: LeaseKeeper,
        *,
        server_id: str,
        heartbeat_seconds: float = 2.0,
        lease_ttl: int = 15,
        events: EventLog,
        insecure: bool = False,
        secrets: SecretBox | None = None,
        event_limits: GateLimits | None = None,
        host_limits: HostLimits = HostLimits(),
    ) -> None:
        self._events = events
        self._host_limits = host_limits
        self.insecure = insecure
        self._secrets = secrets
        self._store = store
        self._informer = informer
        self._keeper = keeper
        self._server_id = server_id
        self._heartbeat_seconds = heartbeat_seconds
        self._lease_ttl = lease_ttl
        self._sessions: dict[str, _Session] = {}
        self._wakers: dict[str, asyncio.Event] = {}  # host -> its session's push wake-up
        self._dispatcher: asyncio.Task[None] | None = None
        self._specs = SpecCache(secrets)
        self.reports = ReportQueue(store)
        self._lease: int | None = None  # this replica's (see _serving_lease)
        self._lease_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._report_writer: asyncio.Task[None] | None = None
        self._event_backlog: list[pb.Event] = []
        self._events_waiting = asyncio.Event()
        self._events_dropped = 0
        self._event_writer: asyncio.Task[None] | None = None
        self.event_gate = EventGate(event_limits)
        # Called with the seconds each heartbeat took to handle: read, checked, its host
        # noted as heard from and its report queued (``reports.observe_write`` times
        # the write).
        self.observe_heartbeat: Callable[[float], None] | None = None

    async def Connect(
        self,
        request_iterator: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ServerMessage]:
        try:
            first = await asyncio.wait_for(anext(request_iterator), _REGISTER_TIMEOUT)
            check_well_formed(first)
            if first.WhichOneof("kind") != "register":
                raise InvalidArgument("the first message on the agent stream must be Register")
            serial = self._check_identity(context, first.register.host_id)
            host_id, revision, lease = await self._register(first.register, serial)
        except FleetError as error:
            log.warning("agent registration from %s refused: %s", context.peer(), error)
            refuse(context, grpc_code_for(error), details(error))
            return
        except (TimeoutError, StopAsyncIteration):
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "no Register message received")
            return

        log.info("host %s connected", host_id)
        yield pb.ServerMessage(
            registered=pb.Registered(host_id=host_id, heartbeat_seconds=self._heartbeat_seconds)
        )
        outbox: asyncio.Queue[pb.ServerMessage] = asyncio.Queue()
        session = _Session(host_id, revision, lease, outbox, serial)
        self._sessions[host_id] = session
        # Denied between the check and now (the dispatcher looks only at changes).
        found = self._informer.state().denied.get(serial) if serial else None
        if found is not None:
            session.deny(denied_message(found.value))
        reader = asyncio.create_task(self._read(session, request_iterator))
        pusher = asyncio.create_task(self._push(host_id, outbox))
        ended = asyncio.create_task(session.ended.wait())
        getter: asyncio.Task[pb.ServerMessage] | None = None
        try:
            while not reader.done() and session.denied is None:
                getter = asyncio.create_task(outbox.get())
                done, _ = await asyncio.wait(
                    {getter, reader, ended}, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    yield getter.result()
                    outbox.task_done()  # sent: the pusher may build the next set
                getter.cancel()
            if session.denied is not None:
                raise PermissionDenied(session.denied)
            reader.result()  # surfaces a refusal raised while reading
        except FleetError as error:
            log.warning("host %s: %s", host_id, error)
            refuse(context, grpc_code_for(error), details(error))
        finally:
            for task in (pusher, reader, getter, ended):
                if task is not None:
                    task.cancel()
            if self._sessions.get(host_id) is session:
                del self._sessions[host_id]
            session.close()
            log.info("host %s disconnected", host_id)
            self.reports.forget(host_id, revision)
            self._keeper.unwatch(revision)
            await self._mark_gone(host_id, revision)

    async def _mark_gone(self, host_id: str, revision: int) -> None:
        try:
            # Shielded: the stream's teardown cancels the handler, and a delete cut short
            # would leave the host "up" until this replica's lease expires.
            await asyncio.shield(self._store.mark_gone(host_id, revision))
        except FleetError as error:
            log.warning("host %s: could not mark it down: %s", host_id, error)

    def _silent(self, host_id: str, revision: int) -> None:
        """The keeper heard nothing from the host for its TTL: mark it down now (its
        session ends at its next message, if one ever comes)."""
        log.warning("host %s: nothing heard for %gs; marking it down", host_id, self._lease_ttl)
        task = asyncio.create_task(self._mark_gone(host_id, revision))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _serving_lease(self) -> int:
        """This replica's lease, which its hosts' keys are bound to: granted at the first
        registration, and again once lost (its sessions then end, and reconnect)."""
        async with self._lease_lock:
            if self._lease is None or self._keeper.lost(self._lease) is not None:
                if self._lease is not None:
                    self._keeper.release(self._lease)
                self._lease = await self._store.grant_lease(self._lease_ttl)
                self._keeper.hold(self._lease, self._lease_ttl)
            return self._lease

    def _check_identity(self, context: grpc.aio.ServicerContext, host_id: str) -> str:
        """An agent speaks only as the host its certificate names (never as another),
        with a certificate that is not denied; returns that certificate's serial ("" on
        a plaintext server, where there is none)."""
        if self.insecure:
            return ""
        identity = caller(context, insecure=False, tokens=lambda _token: None)
        if identity.kind != "agent":
            raise PermissionDenied(
                f"{identity.kind} certificate {identity.name!r} cannot register a host: "
                "agents need an agent certificate (fleet certs issue agent HOST_ID)"
            )
        if identity.name != host_id:
            raise PermissionDenied(
                f"agent certificate for {identity.name!r} cannot register as {host_id!r}"
            )
        serial = serial_from_auth_context(context.auth_context())
        found = self._informer.state().denied.get(serial)
        if found is not None:
            raise PermissionDenied(denied_message(found.value))
        return serial

    async def _register(self, register: pb.Register, serial: str = "") -> tuple[str, int, int]:
        host_id = check_host_id(register.host_id)
        for _ in range(3):
            old = await self._store.get_host(host_id)
            record = host_record(register, old.value if old else None, self._host_limits, serial)
            try:
                await self._store.write_host(
                    record, expected_mod_revision=old.mod_revision if old else 0
                )
                break
            except Conflict:
                # Someone else wrote the host meanwhile: read again; or its certificate
                # was denied since this replica's informer looked (another replica).
                denied = await self._store.get_denied(serial) if serial else None
                if denied is not None:
                    raise PermissionDenied(denied_message(denied)) from None
                continue
        else:
            raise Conflict(f"host {host_id!r} changed three times while registering; retry")
        if record.capacity != record.reported:
            log.warning(
                "host %s claims %g cpus and %d bytes of memory; placement counts %g and %d "
                "(--max-host-cpus/--max-host-memory)",
                host_id,
                register.capacity.cpu,
                register.capacity.memory_bytes,
                record.capacity.cpu,
                record.capacity.memory,
            )
        live = LiveRecord(server=self._server_id, connected_at=now_iso())
        lease = await self._serving_lease()
        revision = await self._store.mark_alive(host_id, live, lease)
        self._keeper.watch(revision, self._lease_ttl, lambda: self._silent(host_id, revision))
        return host_id, revision, lease

    async def _read(
        self, session: _Session, request_iterator: AsyncIterator[pb.AgentMessage]
    ) -> None:
        host_id, revision, lease = session.host_id, session.revision, session.lease
        # Usage alone is rewritten every two heartbeats, at least every _STATUS_REFRESH.
        writer = ReportWriter(host_id, max(_STATUS_REFRESH, 2 * self._heartbeat_seconds))
        async for message in request_iterator:
            self._keeper.heard(revision)
            check_well_formed(message)
            kind = message.WhichOneof("kind")
            if kind == "events":
                self._queue_events(host_id, message.events.events)
                continue
            if kind == "response":
                queue = session.pending.get(message.response.id)
                if queue is not None:
                    try:
                        queue.put_nowait(message.response)
                    except asyncio.QueueFull:  # a reader that does not keep up loses pieces
                        log.warning("host %s: dropped a response piece", host_id)
                continue
            if kind != "heartbeat":
                raise InvalidArgument("only heartbeats and events may follow Register")
            handling = time.monotonic()
            if self._keeper.silent(revision):
                raise InvalidArgument(
                    f"host {host_id} was silent for {self._lease_ttl}s and marked down; reconnect"
                )
            why = self._keeper.lost(lease)
            if why is not None:
                raise InvalidArgument(f"this control plane's lease {why}; reconnect")
            writer.check(message.heartbeat)
            self.reports.submit(writer, revision, lease, message.heartbeat)
            self._report_writer = _running(self._report_writer, self.reports.run, "report-writer")
            if self.observe_heartbeat is not None:
                self.observe_heartbeat(time.monotonic() - handling)

    @property
    def streams(self) -> int:
        """How many agents hold a stream to this server."""
        return len(self._sessions)

    async def relay(
        self, host_id: str, request: pb.ContainerRequest
    ) -> AsyncIterator[pb.ContainerResponse]:
        """Ask ``host_id``'s agent for logs, exec or top; yield its answer's pieces."""
        session = self._sessions.get(host_id)
        if session is None:
            raise FailedPrecondition(f"host {host_id} is not connected to this control plane")
        request.id = uuid.uuid4().hex
        queue: asyncio.Queue[pb.ContainerResponse] = asyncio.Queue(maxsize=1024)
        session.pending[request.id] = queue
        finished = False
        try:
            await session.outbox.put(pb.ServerMessage(request=request))
            while not finished:
                response = await queue.get()
                finished = response.done
                if response.error:
                    raise FailedPrecondition(f"{host_id}: {response.error}")
                yield response
        finally:
            session.pending.pop(request.id, None)
            if not finished:  # the caller went away: stop the agent's side too
                cancel = pb.ContainerRequest(id=request.id, cancel=True)
                await session.outbox.put(pb.ServerMessage(request=cancel))

    def _queue_events(self, host_id: str, events: Sequence[pb.Event]) -> None:
        """Queue an agent's events as its own: host and source come from the session
        (its certificate), never from what the agent wrote. They are stored by
        ``_store_events``, for all hosts together: the session reads on meanwhile."""
        if len(events) > _MAX_EVENTS_PER_BATCH:
            raise InvalidArgument(f"at most {_MAX_EVENTS_PER_BATCH} events per batch")
        if len(self._event_backlog) + len(events) > _EVENT_BACKLOG:
            self._events_dropped += len(events)
            return
        copies = []
        for event in events:
            copy = pb.Event()
            copy.CopyFrom(event)
            copy.host = host_id
            copy.source = "agent"
            copy.count = 0  # counted here, by the gate, not by the agent
            # What an agent writes reaches operators' terminals: no escape sequences.
            copy.message = strip_control(copy.message[:_MAX_TEXT])
            copy.kind = strip_control(copy.kind[:64])
            copy.app = strip_control(copy.app[:63])
            copy.container_id = strip_control(copy.container_id[:80])
            copy.time = strip_control(copy.time[:40])
            copies.append(copy)
        # Repeats are counted and floods held to a rate, with a notice of what was not
        # stored (the gate's doc says how).
        self._event_backlog += self.event_gate.admit(host_id, copies, time.time())
        self._events_waiting.set()
        self._event_writer = _running(self._event_writer, self._store_events, "agent-events")

    async def _store_events(self) -> None:
        """Store what agents sent since the last write, in as few transactions as fit
        (at 100,000 containers starting, a write per agent's batch was thousands a
        second)."""
        while True:
            # Also woken every second: repeats whose window ended and drop notices are
            # owed even when no agent sends anything.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # (not wait_for: it may swallow a cancel)
                    await self._events_waiting.wait()
            self._events_waiting.clear()
            batch, self._event_backlog = self._event_backlog, []
            batch += self.event_gate.due(time.time())
            if not batch:
                continue
            if self._events_dropped:
                log.warning("%d agent event(s) dropped: etcd fell behind", self._events_dropped)
                self._events_dropped = 0
            try:
                await self._events.append("agents", batch)
            except FleetError as error:
                log.warning("%d agent event(s) not stored: %s", len(batch), error)

    async def _push(self, host_id: str, outbox: asyncio.Queue[pb.ServerMessage]) -> None:
        """Send the host its whole desired set whenever it changes. The dispatcher wakes
        this only when something the set is made of changed: with thousands of hosts,
        waking every session on every change (each report of any host) would cost
        O(hosts x changes)."""
        wake = asyncio.Event()
        wake.set()  # the first set goes out at once
        self._wakers[host_id] = wake
        self._dispatcher = _running(self._dispatcher, self._dispatch, "desired-dispatch")
        sent = ""
        inputs: object = None
        try:
            while True:
                await wake.wait()
                wake.clear()
                # One set at a time in the outbox: changes that come while a host is
                # slow to read go out together in the next set, built once it has
                # taken this one (5,000 sessions each queueing every set of a ramp
                # held memory for sets that no longer mattered).
                await outbox.join()
                inputs, message, sent = self._desired_message(host_id, inputs, sent)
                if message is not None:
                    await outbox.put(message)
        finally:
            if self._wakers.get(host_id) is wake:
                del self._wakers[host_id]

    def _desired_message(
        self, host_id: str, inputs: object, sent: str
    ) -> tuple[object, pb.ServerMessage | None, str]:
        """The host's desired set if it changed since ``sent`` (its fingerprint), with
        what it was made of. A plain function, so that the state it reads is not held
        by the session while it waits: a thousand sessions each holding the snapshot
        of its last push kept a thousand copies of the tables alive (2 GiB at 100,000
        replicas)."""
        state = self._informer.state()
        # A cheap look at what the set is made of skips building it again.
        now_inputs = desired_inputs(state, host_id)
        if now_inputs == inputs:
            return inputs, None, sent
        containers = desired_containers(state, host_id, self._secrets, self._specs)
        host = state.hosts.get(host_id)
        command = host.value.command if host is not None else None
        print_ = fingerprint(containers) + (command.id if command else "")
        if print_ == sent:
            return now_inputs, None, sent
        desired = pb.DesiredSet(version=state.revision, containers=containers)
        if command is not None:
            desired.command.id, desired.command.command = command.id, command.command
        return now_inputs, pb.ServerMessage(desired=desired), print_

    async def close(self) -> None:
        """Stop the dispatcher and the writers (the sessions end with the server), and
        let this replica's hosts go at once (their keys go with its lease)."""
        for task in (self._dispatcher, self._report_writer, self._event_writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._lease is not None:
            self._keeper.release(self._lease)
            try:
                await self._store.revoke_lease(self._lease)
            except FleetError as error:
                log.warning("could not revoke this replica's lease (it expires): %s", error)

    def _end_denied(self, denied: Mapping[str, Versioned[DeniedRecord]]) -> None:
        """End every session whose certificate is now denied (``fleet hosts remove``)."""
        if not denied:
            return
        for session in list(self._sessions.values()):
            found = denied.get(session.serial) if session.serial else None
            if found is not None:
                log.warning(
                    "host %s: its certificate was denied; ending its stream", session.host_id
                )
                session.deny(denied_message(found.value))

    async def _dispatch(self) -> None:
        """On every batch of changes, wake the sessions whose inputs changed: their
        replicas' records and their host record (the informer counts those per host),
        or what every set is made of (revisions, secrets, the upgrade walk). A round
        costs O(connected hosts) comparisons, whatever changed."""
        subscription = self._informer.subscribe()
        signatures: dict[str, object] = {}
        denied: object = None
        try:
            while True:
                await subscription.wait()
                await asyncio.sleep(_PUSH_COALESCE)  # fold a burst into one look
                state = self._informer.state()
                if state.denied is not denied:  # (shared between snapshots until changed)
                    denied = state.denied
                    self._end_denied(state.denied)
                changes = state.changes
                if changes is None:  # a state that does not say what changed
                    signatures.clear()
                for host_id, wake in list(self._wakers.items()):
                    signature = (
                        (changes.shared, changes.host_inputs.get(host_id, 0)) if changes else None
                    )
                    if signature is None or signatures.get(host_id) != signature:
                        signatures[host_id] = signature
                        wake.set()
                for gone in signatures.keys() - self._wakers.keys():
                    del signatures[gone]
                self._specs.forget_unused(state)
        finally:
            self._informer.unsubscribe(subscription)
