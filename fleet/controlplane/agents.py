"""The agent stream: each connected agent holds one bidirectional stream, and this
service is its end. Registration comes first; then heartbeats (their reports go to the
``ReportQueue``), events (to ``AgentEvents``) and answers to relayed requests come
in, while desired sets (``DesiredPush``), the routing table to edge hosts
(``EdgePush``) and relayed requests (logs, exec, top) go out; exec sessions with
streamed input go both ways (``ExecRelay``).

Registering writes the host's record (``registration``) and its liveness key, bound
to this replica's own etcd lease; the key's revision names the session, and every
report of the session is guarded on it. The session's end (the stream closes, or the
``LeaseKeeper`` finds the host silent for its TTL) deletes the host's liveness, status
and report keys; this replica's death lets its lease expire, and them with it, unless
the replica restarted in its seat takes the lease over first (``seats``): then the
keys stay, and a host's new session keeps its reports and writes only what changed.
No timestamps written for others, and no lease per host (etcd renews a stream's
leases one after another: 5,000 of them fell minutes behind under load).

A certificate denied by ``fleet hosts remove`` (``denied/<serial>``) is refused at
registration, and every session on every replica that presented it ends as soon as
that replica's informer sees the denial.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import grpc
import grpc.aio

from fleet._time import now_iso
from fleet.controlplane import seats
from fleet.controlplane._handlers import check_well_formed, refuse
from fleet.controlplane._tasks import running
from fleet.controlplane.agentevents import AgentEvents
from fleet.controlplane.auth import caller
from fleet.controlplane.desiredpush import DesiredPush
from fleet.controlplane.edgepush import EdgePush
from fleet.controlplane.eventgate import GateLimits
from fleet.controlplane.execrelay import ExecRelay
from fleet.controlplane.joining import Signer
from fleet.controlplane.outbox import SessionOutbox
from fleet.controlplane.registering import RegistrationSlots
from fleet.controlplane.registration import (
    DaemonIndex,
    HostLimits,
    daemon_taken,
    denied_message,
    host_record,
    unchanged_registration,
)
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
from fleet.pki.subjects import expiry_from_auth_context, serial_from_auth_context, serial_of
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.secrets import SecretBox
from fleet.store import Alive, ClusterState, Informer, Store, Versioned, check_host_id
from fleet.store.events import EventLog
from fleet.store.leases import LeaseKeeper
from fleet.store.records import ContainerReport, HostRecord, LiveRecord

__all__ = ["AgentService"]

log = logging.getLogger(__name__)

_REGISTER_TIMEOUT = 10.0
# Seconds: how often usage alone is rewritten, at least (two heartbeats if longer).
# The scheduler ignores usage older than STATS_STALE_AFTER (15 s).
_STATUS_REFRESH = 5.0
# Seconds a registration waits for the informer to show its host's kept reports, before
# it reads them from etcd.
_KEPT_WAIT = 5.0
# Registrations writing to etcd at once (``RegistrationSlots``), and how long one waits
# for its turn before it is refused.
_REGISTRATIONS_AT_ONCE = 64
_REGISTRATION_TURN_WAIT = 10.0
_NO_LIMITS = HostLimits()


class _Session:
    """One connected agent: its outgoing messages and the requests awaiting its answers."""

    __slots__ = (
        "denied",
        "execs",
        "host_id",
        "kept",
        "lease",
        "outbox",
        "pending",
        "revision",
        "serial",
    )

    def __init__(
        self,
        host_id: str,
        revision: int,
        lease: int,
        serial: str = "",
        kept: Sequence[ContainerReport] = (),
    ) -> None:
        self.host_id = host_id
        self.revision = revision  # of the host's liveness key: guards the session's writes
        self.lease = lease  # this replica's, which the session's keys are bound to
        self.outbox = SessionOutbox()  # ended with the session (the stream's handler stops)
        self.serial = serial  # of the certificate the agent presented ("" : plaintext)
        self.kept = kept  # the reports stored of the previous session, kept for this one
        self.pending: dict[str, asyncio.Queue[pb.ContainerResponse]] = {}
        self.execs: dict[str, ExecRelay] = {}  # exec sessions with streamed input, by id
        self.denied: str | None = None  # why the session must end: its certificate is denied

    def deny(self, why: str) -> None:
        """End the session: its certificate was denied (``fleet hosts remove``)."""
        if self.denied is None:
            self.denied = why
            self.outbox.end()

    def close(self) -> None:
        self.outbox.end()
        for queue in self.pending.values():
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(pb.ContainerResponse(done=True, error="the host disconnected"))
        for relay in list(self.execs.values()):
            relay.fail(f"host {self.host_id}'s agent disconnected", agent_gone=True)


def _log_connected(host_id: str) -> None:
    # From a function of its own: logging looks up the frame that called it, and Python
    # then keeps that frame as an object for as long as it runs: for ``Connect``, the
    # stream's whole life (360 bytes a connected host).
    log.info("host %s connected", host_id)


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
        host_limits: HostLimits = _NO_LIMITS,
    ) -> None:
        self._host_limits = host_limits
        # The pool's id (etcd's ``pool`` key), set by the server before it serves: each
        # agent learns it at registration and labels its containers with it.
        self.pool_id = ""
        self.insecure = insecure
        self.signer: Signer | None = None  # signs renewed certificates (--ca-key)
        self._store = store
        self._informer = informer
        self._keeper = keeper
        self._server_id = server_id
        self._heartbeat_seconds = heartbeat_seconds
        self._lease_ttl = lease_ttl
        self._sessions: dict[str, _Session] = {}
        self._denied: object = None  # the denials last looked at (see _end_denied)
        self._push = DesiredPush(informer, secrets, on_change=self._end_denied)
        self.edges = EdgePush(informer)
        self.events = AgentEvents(events, event_limits)
        self.reports = ReportQueue(store)
        self._daemons = DaemonIndex()  # (registration's check that no two share a daemon)
        self._registering = RegistrationSlots(_REGISTRATIONS_AT_ONCE, _REGISTRATION_TURN_WAIT)
        self._lease = seats.ServingLease(store, keeper, server_id=server_id, ttl=lease_ttl)
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()
        self._report_writer: asyncio.Task[None] | None = None
        # Called with the seconds each heartbeat took to handle: read, checked, its host
        # noted as heard from and its report queued (``reports.observe_write`` times
        # the write).
        self.observe_heartbeat: Callable[[float], None] | None = None

    # (The generated servicer's Connect returns an iterator: this one writes instead.)
    async def Connect(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[pb.AgentMessage],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """An agent's stream. Read with ``context.read`` and written with
        ``context.write``, not through ``request_iterator`` and by yielding: gRPC's
        iterator and its loop over a handler's answers each hold the last message until
        the next: every host's last heartbeat (41 KB parsed at 100 containers) and
        desired set. At 1,000 hosts the server holds about 90 MB less without them."""
        try:
            first = await asyncio.wait_for(context.read(), _REGISTER_TIMEOUT)
            if first is grpc.aio.EOF:
                raise TimeoutError  # (the stream ended before its Register)
            check_well_formed(first)
            if first.WhichOneof("kind") != "register":
                raise InvalidArgument("the first message on the agent stream must be Register")
            serial, expires = self._check_identity(context, first.register.host_id)
            host_id, alive, lease = await self._register(first.register, serial, expires)
        except FleetError as error:
            log.warning("agent registration from %s refused: %s", context.peer(), error)
            refuse(context, grpc_code_for(error), details(error))
            return
        except TimeoutError:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "no Register message received")
            return

        _log_connected(host_id)
        await context.write(
            pb.ServerMessage(
                registered=pb.Registered(
                    host_id=host_id, heartbeat_seconds=self._heartbeat_seconds, pool_id=self.pool_id
                )
            )
        )
        revision = alive.session
        session = _Session(host_id, revision, lease, serial, alive.reports)
        outbox = session.outbox
        self._sessions[host_id] = session
        # Denied between the check and now (the dispatcher looks only at changes).
        found = self._informer.state().denied.get(serial) if serial else None
        if found is not None:
            session.deny(denied_message(found.value))
        reader = asyncio.create_task(self._read(session, context))
        reader.add_done_callback(lambda _reader: outbox.end())  # its end is the session's
        held = first.register.held_fingerprint  # the set the agent has: not sent again
        push = self._push.start(host_id, outbox, held)
        edge = (
            asyncio.create_task(self.edges.run(host_id, outbox)) if first.register.ingress else None
        )
        del first  # (else held for the stream's life: a Register is 2.5 KB parsed)
        how = "the stream was cut"  # unless the agent ends its side (a clean stop)
        try:
            while (message := await outbox.get()) is not None:
                await context.write(message)
                # Sent: let it go (a host's desired set, held until the next, was 5,000
                # sets at 5,000 hosts), and the pusher may build the next set.
                del message
                outbox.task_done()
            if session.denied is not None:
                raise PermissionDenied(session.denied)
            reader.result()  # surfaces a refusal raised while reading
            how = "its agent closed the stream"
        except FleetError as error:
            log.warning("host %s: %s", host_id, error)
            refuse(context, grpc_code_for(error), details(error))
        finally:
            self._push.stop(push)
            for task in (edge, reader):
                if task is not None:
                    task.cancel()
            if self._sessions.get(host_id) is session:
                del self._sessions[host_id]
            session.close()
            log.info("host %s disconnected: %s", host_id, how)
            self.reports.forget(host_id, revision)
            self._keeper.unwatch(revision)
            if not self._stopping:  # (see stopping)
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

    async def take_seat(self, seat: str) -> None:
        """Serve from ``seat``: see ``seats.ServingLease.take``."""
        await self._lease.take(seat)

    async def RenewCertificate(
        self, request: pb.CertificateRequest, context: grpc.aio.ServicerContext
    ) -> pb.CertificateResponse:
        """A new certificate for the calling agent's own host (never another's), for the
        key of its CSR: the agent asks before 2/3 of its certificate's life is over."""
        try:
            check_well_formed(request)
            identity = caller(context, insecure=self.insecure, tokens=lambda _token: None)
            if identity.kind != "agent":
                raise PermissionDenied(
                    f"{identity.kind} certificate {identity.name!r} cannot renew an agent "
                    "certificate: only the agent of a host can, for itself"
                )
            state = self._informer.state()
            found = state.denied.get(serial_from_auth_context(context.auth_context()))
            if found is not None:
                raise PermissionDenied(denied_message(found.value))
            if identity.name not in state.hosts:
                raise PermissionDenied(
                    f"host {identity.name!r} is not in the pool (removed?): it cannot renew"
                )
            if self.signer is None:
                raise FailedPrecondition(
                    "this control plane cannot sign certificates (it has no --ca-key); "
                    "renew by hand with `fleet certs issue agent HOST --force`"
                )
            cert = self.signer.sign(request.csr_pem, identity.name, datetime.now(UTC))
        except FleetError as error:
            log.warning("certificate renewal from %s refused: %s", context.peer(), error)
            refuse(context, grpc_code_for(error), details(error))
            return pb.CertificateResponse()
        log.info("host %s renewed its certificate (serial %s)", identity.name, serial_of(cert))
        return pb.CertificateResponse(certificate_pem=cert, ca_pem=self.signer.ca_pem)

    def _check_identity(self, context: grpc.aio.ServicerContext, host_id: str) -> tuple[str, str]:
        """An agent speaks only as the host its certificate names (never as another),
        with a certificate that is not denied; returns that certificate's serial and
        expiry (RFC 3339; both "" on a plaintext server, where there is none)."""
        if self.insecure:
            return "", ""
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
        return serial, expiry_from_auth_context(context.auth_context())

    async def _register(
        self, register: pb.Register, serial: str = "", cert_expires: str = ""
    ) -> tuple[str, Alive, int]:
        host_id = check_host_id(register.host_id)
        taken = daemon_taken(self._informer.state(), host_id, dict(register.facts), self._daemons)
        if taken is not None:
            raise FailedPrecondition(taken)
        live = LiveRecord(server=self._server_id, connected_at=now_iso())
        async with self._registering.turn():
            # The host's records as shown at its turn, not a snapshot held while waiting:
            # in a storm thousands of registrations wait here and dozens take their turn
            # together, and each held the snapshot it began with (up to 150 at once as
            # 5,000 hosts connected, each with copies of the host tables of its own).
            state = self._informer.state()
            known, alive_known = state.hosts.get(host_id), state.alive.get(host_id)
            del state
            shown = await self._register_as_shown(
                register, known, alive_known, live, serial, cert_expires
            )
            if shown is not None:
                record, alive, lease = shown
            else:
                record = await self._write_registration(register, serial, cert_expires)
                lease = await self._lease.current()
                alive = await self._store.mark_alive(host_id, live, lease, read_reports=False)
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
        if alive.kept:
            alive = dataclasses.replace(alive, reports=await self._kept_reports(host_id, alive))
        if alive.previous:
            self._keeper.unwatch(alive.previous)  # over: its writes can no longer land
        self._lease.back(host_id)
        session = alive.session
        self._keeper.watch(session, self._lease_ttl, lambda: self._silent(host_id, session))
        return host_id, alive, lease

    async def _register_as_shown(
        self,
        register: pb.Register,
        known: Versioned[HostRecord] | None,
        alive_known: Versioned[LiveRecord] | None,
        live: LiveRecord,
        serial: str,
        cert_expires: str,
    ) -> tuple[HostRecord, Alive, int] | None:
        """A registration that changes nothing of the host's record the informer shows
        (``known``, with its liveness ``alive_known``), its liveness written in one
        transaction guarded on them (``Store.mark_alive_as_shown``); None when the
        registration changes the record, or etcd holds other than what was shown. A
        restart's storm is every host registering again unchanged: at 5,000 hosts,
        10,000 reads of etcd fewer, each a round trip on the loop the storm is bound by."""
        host_id = register.host_id
        if known is None:
            return None
        record = host_record(register, known.value, self._host_limits, serial, cert_expires)
        if not unchanged_registration(known.value, record):
            return None
        lease = await self._lease.current()
        alive = await self._store.mark_alive_as_shown(
            host_id,
            live,
            lease,
            host_revision=known.mod_revision,
            alive_revision=alive_known.mod_revision if alive_known is not None else 0,
        )
        return None if alive is None else (known.value, alive, lease)

    async def _write_registration(
        self, register: pb.Register, serial: str, cert_expires: str
    ) -> HostRecord:
        """The host's record as ``register`` makes it, written unless it changes nothing
        (read from etcd, compared and swapped)."""
        host_id = register.host_id
        for _ in range(3):
            old = await self._store.get_host(host_id)
            record = host_record(
                register, old.value if old else None, self._host_limits, serial, cert_expires
            )
            if old is not None and unchanged_registration(old.value, record):
                # A reconnect (a restart of this server, a network cut) that changes
                # nothing is not written: at 5,000 hosts, 5,000 writes of the host
                # records, each a change every consumer of hosts looked at, in the
                # storm of the reconnects. ``registered_at`` stays the first one's.
                record = old.value
                break
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
        return record

    async def _kept_reports(self, host_id: str, alive: Alive) -> list[ContainerReport]:
        """The reports ``host_id``'s previous session left under this replica's lease:
        the informer's, once it has seen the new session's liveness write, when they are
        exactly etcd's (nothing writes them in between: the previous session's writes
        are guarded on the key that write replaced). Not read from etcd again: in a
        storm of reconnects, 5,000 reads of 20 reports each, all decoded again. From
        etcd when the informer is late, or shows no status for the host."""
        try:
            async with asyncio.timeout(_KEPT_WAIT):
                await self._informer.wait_for_revision(alive.session)
        except TimeoutError:
            return await self._store.reports_on(host_id)
        status = self._informer.state().status.get(host_id)
        if status is None:  # reports are written after the status: not expected
            return await self._store.reports_on(host_id)
        return list(status.value.containers)

    async def _read(self, session: _Session, context: grpc.aio.ServicerContext) -> None:
        # Usage alone is rewritten every two heartbeats, at least every _STATUS_REFRESH.
        writer = ReportWriter(session.host_id, max(_STATUS_REFRESH, 2 * self._heartbeat_seconds))
        writer.start_from(session.kept)
        session.kept = ()
        # The message is let go between messages: a heartbeat (20 container statuses at
        # 5,000 hosts, more on fewer) held until the next one came was 5,000 of them.
        while (message := await context.read()) is not grpc.aio.EOF:
            self._take(session, writer, message)
            del message

    def _take(self, session: _Session, writer: ReportWriter, message: pb.AgentMessage) -> None:
        """One message of the agent after its Register (``_read``)."""
        host_id, revision, lease = session.host_id, session.revision, session.lease
        self._keeper.heard(revision)
        check_well_formed(message)
        kind = message.WhichOneof("kind")
        if kind == "events":
            self.events.queue(host_id, message.events.events)
            return
        if kind == "exec_output":
            relay = session.execs.get(message.exec_output.id)
            if relay is not None:
                relay.deliver(message.exec_output)
            return
        if kind == "response":
            queue = session.pending.get(message.response.id)
            if queue is not None:
                try:
                    queue.put_nowait(message.response)
                except asyncio.QueueFull:  # a reader that does not keep up loses pieces
                    log.warning("host %s: dropped a response piece", host_id)
            return
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
        checked = writer.check(message.heartbeat)
        self.reports.submit(writer, revision, lease, message.heartbeat, checked=checked)
        self._report_writer = running(self._report_writer, self.reports.run, "report-writer")
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

    def open_exec(self, host_id: str) -> ExecRelay:
        """A new exec session with ``host_id``'s agent (``ExecRelay.open`` starts it)."""
        session = self._sessions.get(host_id)
        if session is None:
            raise FailedPrecondition(f"host {host_id} is not connected to this control plane")
        session_id = uuid.uuid4().hex
        relay = ExecRelay(
            session_id, host_id, session.outbox, lambda: session.execs.pop(session_id, None)
        )
        session.execs[session_id] = relay
        return relay

    def stopping(self) -> None:
        """The server is stopping: the sessions it cuts leave their hosts' keys as they
        are, for the replica restarted in this seat to take over with the lease (or for
        another replica to take over as each agent reconnects there)."""
        self._stopping = True
        self._lease.stopping()

    async def close(self) -> None:
        """Stop the dispatcher and the writers (the sessions end with the server). The
        lease is not revoked: the replica restarted in this seat takes it over, and the
        hosts' keys with it; if none does, it expires one TTL from now, as a killed
        replica's does (the agents reconnect to another replica meanwhile, which takes
        their hosts over at once)."""
        await self._push.close()
        await self.edges.close()
        if self._report_writer is not None:
            self._report_writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._report_writer
        await self.events.close()
        self._lease.close()

    def _end_denied(self, state: ClusterState) -> None:
        """End every session whose certificate is now denied (``fleet hosts remove``);
        called on every informer change, it looks only when the denials changed (the
        table is shared between snapshots until then)."""
        if state.denied is self._denied:
            return
        self._denied = denied = state.denied
        if not denied:
            return
        for session in list(self._sessions.values()):
            found = denied.get(session.serial) if session.serial else None
            if found is not None:
                log.warning(
                    "host %s: its certificate was denied; ending its stream", session.host_id
                )
                session.deny(denied_message(found.value))
