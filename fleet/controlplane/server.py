"""``fleet server``: the control plane process, wired from its parts.

One grpc.aio server hosts the API (for the CLI) and the agent stream; a second one, on
the token port, only the API, behind a gate that checks the bearer token before any
request is read. An informer keeps a watch-driven cache of etcd that both read; the
replica controller places replicas whenever that cache changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fleet.controlplane import seats
from fleet.controlplane._handlers import service_handler
from fleet.controlplane.agents import AgentService
from fleet.controlplane.api import FleetService, ServerAbout
from fleet.controlplane.auth import TokenGate
from fleet.controlplane.controller import ReplicaController
from fleet.controlplane.fleetlockport import FleetLockConfig, FleetLockPort
from fleet.controlplane.gcpolicy import YoungCollections
from fleet.controlplane.joining import Signer
from fleet.controlplane.joinservice import JOIN_METHOD, JoinService
from fleet.controlplane.metrics import Metrics
from fleet.controlplane.metricsport import MetricsPort, metrics_tls_context
from fleet.controlplane.planner import DEFAULT_HOLD_MOVES_WHEN_DOWN
from fleet.controlplane.portoptions import (
    MAIN_PORT_SERVER_OPTIONS,
    SERVER_OPTIONS,
    TOKEN_PORT_OPTIONS,
)
from fleet.controlplane.readport import ReadPort, keep_published
from fleet.controlplane.registration import HostLimits
from fleet.controlplane.seats import AGENTS_BACK_WITHIN
from fleet.controlplane.secretskey import open_key, settle_key
from fleet.controlplane.servicediscovery import sd_targets
from fleet.controlplane.startgate import StartGate
from fleet.errors import FailedPrecondition, Unavailable
from fleet.store import (
    DEFAULT_MAX_TXN_OPS,
    DEFAULT_PREFIX,
    Etcd,
    EventLog,
    Informer,
    KeyLayout,
    Store,
)
from fleet.store.compactor import DEFAULT_COMPACT_INTERVAL, Compactor
from fleet.store.election import Election, LostLeadership
from fleet.store.leases import LeaseKeeper
from fleet.transport import TlsFiles, Transport, listen_problem

if TYPE_CHECKING:
    from fleet.dashboard import Dashboard

__all__ = [
    "AGENTS_BACK_WITHIN",
    "ControlPlane",
    "ServerConfig",
    "run_server",
]

log = logging.getLogger(__name__)

_SYNC_TIMEOUT = 30.0  # seconds a starting server waits for its first read of etcd

CONNECT_METHOD = "/fleet.v1.AgentService/Connect"  # an agent's stream


@dataclass(frozen=True)
class ServerConfig:
    etcd: Sequence[str]
    transport: Transport  # mutual TLS for agents and clients, or explicitly insecure
    etcd_tls: TlsFiles | None = None
    # Without one, secrets cannot be set; missing, it is made only if the pool has none
    # (the first replica), and it must be the pool's (see secretskey.py).
    secrets_key: Path | None = None
    listen: str = "127.0.0.1:7400"
    # A second port for clients with bearer tokens instead of certificates: TLS with the
    # server's certificate, no client certificate asked for (None: no such port).
    token_listen: str | None = None
    # A port answering only reads (get, ps, endpoints, rollout status), from a thread
    # of its own: they answer at once while the main port's loop is busy (readport.py).
    read_listen: str | None = None
    # Prometheus /metrics (None: off): HTTPS with the server's certificate, for a client
    # certificate or a bearer token; plain HTTP to anyone only with metrics_insecure.
    metrics_listen: str | None = None
    metrics_insecure: bool = False
    # FleetLock for Zincati (None: off): HTTPS with the server's certificate when it
    # has TLS, for an agent certificate or a group's token (fleetlockport).
    fleetlock: FleetLockConfig | None = None
    # The web dashboard (None: off): HTTPS with the server's certificate, sign-in with a
    # bearer token or a client certificate (fleet.dashboard); sessions last this long.
    dashboard_listen: str | None = None
    dashboard_session_seconds: float = 8 * 3600.0
    reflection: bool = False  # gRPC server reflection on the main port (--reflection)
    prefix: str = DEFAULT_PREFIX
    heartbeat_seconds: float = 2.0
    host_lease_ttl: int = 15  # host_down_after: a silent host's liveness key expires then
    reschedule_after: float | None = None  # then its replicas move (None: host_lease_ttl)
    # Unless this share of the hosts (or more) is down at once (None: never held).
    hold_moves_when_down: float | None = DEFAULT_HOLD_MOVES_WHEN_DOWN
    server_id: str = ""
    leader_ttl: int = 4  # a dead leader's lease expires this long after its last renewal
    compact_interval: float = DEFAULT_COMPACT_INTERVAL  # the leader compacts etcd (0: never)
    etcd_max_txn_ops: int = DEFAULT_MAX_TXN_OPS  # etcd's --max-txn-ops (checked at start)
    # The most capacity a host's claim counts for (--max-host-cpus/--max-host-memory).
    host_limits: HostLimits = field(default_factory=HostLimits)
    # The key of the TLS CA: with it this replica signs the certificates of hosts that
    # join with a token and of agents that renew theirs (None: it signs none).
    ca_key: Path | None = None
    agent_cert_ttl: float = 30 * 86400.0  # seconds: the life of the certificates it signs


def _signer(config: ServerConfig) -> Signer | None:
    if config.ca_key is None:
        return None
    if config.transport.tls is None:
        raise FailedPrecondition("--ca-key needs TLS: give the server its --tls-ca and key")
    lifetime = timedelta(seconds=config.agent_cert_ttl)
    return Signer.load(config.transport.tls.ca, config.ca_key, lifetime)


class ControlPlane:
    """A running control plane; ``start()`` then ``stop()``, or ``async with``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        # A bad key file is refused now; whether it is the pool's is known at start.
        self._key = open_key(config.secrets_key)
        self.server_id = config.server_id or f"{socket.gethostname()}-{os.getpid()}"
        self.etcd = Etcd(config.etcd, tls=config.etcd_tls, max_txn_ops=config.etcd_max_txn_ops)
        # Host and leader leases are renewed from a thread of their own (see leases.py).
        self.keeper = LeaseKeeper(config.etcd, tls=config.etcd_tls)
        box = self._key.box if self._key is not None else None
        self.store = Store(self.etcd, KeyLayout(config.prefix))
        self.informer = Informer(self.etcd, self.store.keys, written=self.store.written)
        self.events = EventLog(self.etcd, self.store.keys)
        self.metrics = Metrics(self.informer.state, lambda: self.agents.streams)
        self.election = Election(
            self.etcd, self.store.keys, self.server_id, self.keeper, ttl=max(2, config.leader_ttl)
        )
        self.controller: ReplicaController | None = None  # while this replica leads
        self.compactor: Compactor | None = None  # while this replica leads (and compacts)
        self.agents = AgentService(
            self.store,
            self.informer,
            self.keeper,
            server_id=self.server_id,
            heartbeat_seconds=config.heartbeat_seconds,
            lease_ttl=config.host_lease_ttl,
            events=self.events,
            insecure=config.transport.insecure,
            secrets=box,
            host_limits=config.host_limits,
        )
        self.agents.observe_heartbeat = self.metrics.heartbeats.observe
        self.agents.reports.observe_write = self.metrics.report_writes.observe
        self.agents.reports.observe_batch = self.metrics.report_batches.observe
        self.keeper.observe_lag = self.metrics.loop_lag.observe
        self.api = FleetService(
            self.store,
            self.informer,
            self.events,
            self.agents.relay,
            insecure=config.transport.insecure,
            secrets=box,
        )
        self.signer = _signer(config)
        self.api.signer = self.agents.signer = self.signer
        self.api.open_exec = self.agents.open_exec
        self.api.observe_call = self.metrics.observe_call
        self.api.token_listen = config.token_listen or ""
        self.api.hold_moves_when_down = config.hold_moves_when_down
        self.api.pending.leading = lambda: self.controller.pending if self.controller else None
        self.api.about = ServerAbout(self.server_id, lambda: self.controller is not None)
        self.metrics.lend_counts(self.api.counts)
        # The port listens once bound; agents' streams wait at this door until the
        # server is ready, every other call is refused meanwhile (``startgate``).
        self._gate = StartGate(frozenset({CONNECT_METHOD}))
        self._server = grpc.aio.server(interceptors=[self._gate], options=MAIN_PORT_SERVER_OPTIONS)
        self._server.add_generic_rpc_handlers(
            (
                service_handler("FleetService", self.api),
                service_handler("AgentService", self.agents),
            )
        )
        # The standard health service, for load balancers and probes: any certificate of
        # fleet's CA may ask (the main port's TLS has checked it), as may agents.
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if config.reflection:  # off unless asked: a production API need not describe itself
            reflection.enable_server_reflection(
                [
                    "fleet.v1.FleetService",
                    "fleet.v1.AgentService",
                    health.SERVICE_NAME,
                    reflection.SERVICE_NAME,
                ],
                self._server,
            )
        # Token callers get the API alone (agents cannot use tokens).
        self._token_server: grpc.aio.Server | None = None
        if config.token_listen is not None:
            self._token_server = grpc.aio.server(
                interceptors=[TokenGate(self.api.token_identity, open_methods={JOIN_METHOD})],
                options=TOKEN_PORT_OPTIONS,
            )
            joins = JoinService(self.store, self.informer, lambda: self.signer)
            self._token_server.add_generic_rpc_handlers(
                (
                    service_handler("FleetService", self.api),
                    service_handler("JoinService", joins),
                )
            )
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_port: MetricsPort | None = None
        self._fleetlock: FleetLockPort | None = None
        self._dashboard: Dashboard | None = None
        self._read_port: ReadPort | None = None
        self.read_port = 0
        self.dashboard_port = 0
        self.fleetlock_port = 0
        self.port = 0
        self.token_port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        """Bind every port (FailedPrecondition naming one that is taken), then serve;
        whatever fails stops what had started (the keeper's thread would keep the
        process alive)."""
        try:
            await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        if self.config.metrics_listen is not None:
            self._metrics_port = self._metrics_port_for(self.config)
        # Ports first: a taken one fails the start before anything else has begun.
        self.port = self.config.transport.add_port(self._server, self.config.listen)
        if self._token_server is not None and self.config.token_listen is not None:
            self.token_port = self.config.transport.add_token_port(
                self._token_server, self.config.token_listen
            )
        if self.config.metrics_listen is not None:
            _check_listen(self.config.metrics_listen)
        if self.config.read_listen is not None:
            _check_listen(self.config.read_listen)
        if self.config.dashboard_listen is not None:
            _check_listen(self.config.dashboard_listen)
            dashboard_tls = self._dashboard_tls()  # refused now, before anything started
        self.keeper.start(asyncio.get_running_loop())
        self.metrics.watch_gc()
        for service in ("", "fleet.v1.FleetService", "fleet.v1.AgentService"):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        # Listening now, behind the gate: an agent cut off by a restart connects at once
        # and waits for the listing below, instead of backing off through it.
        await self._server.start()
        self._tasks = [asyncio.create_task(self.informer.run(), name="informer")]
        try:
            await asyncio.wait_for(self.informer.wait_synced(), _SYNC_TIMEOUT)
        except TimeoutError:
            raise Unavailable(
                f"could not read the state from etcd ({', '.join(self.config.etcd)}) within "
                f"{_SYNC_TIMEOUT:g}s; the warnings above say why"
            ) from None
        # Before anything is served: a replica with another key would seal secrets the
        # others cannot open, and hand hosts none of theirs.
        sealed = {name: s.value.key_id for name, s in self.informer.state().secrets.items()}
        await settle_key(self.store, self._key, sealed, self.server_id)
        # Before any agent registers: each is told the pool's id, to label containers.
        pool = await self.store.pool_identity(self.server_id)
        self.agents.pool_id = pool.pool_id
        log.info("pool %s (made by %s at %s)", pool.pool_id, pool.created_by, pool.created_at)
        # An apply is one transaction, and the controllers write in chunks: neither
        # serve nor lead on a wrong idea of how large a transaction etcd takes.
        await self.store.check_txn_limit()
        # Before any agent registers: the lease of this seat's last replica, with its
        # hosts' keys, if it is gone (a restart) and the lease is not.
        await self.agents.take_seat(
            seats.seat_of(self.config.server_id, socket.gethostname(), self.port)
        )
        self._tasks.append(asyncio.create_task(self._lead(), name="leadership"))
        if self.config.read_listen is not None:
            await self._serve_reads(self.config.read_listen)
        self._gate.open()
        if self._token_server is not None:
            await self._token_server.start()
        for service in ("", "fleet.v1.FleetService", "fleet.v1.AgentService"):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self._metrics_port is not None and self.config.metrics_listen is not None:
            try:
                self.metrics_port = self._metrics_port.serve(self.config.metrics_listen)
            except OSError as error:  # taken since it was checked
                raise FailedPrecondition(
                    f"cannot listen on {self.config.metrics_listen}: {error.strerror}"
                ) from None
        if self.config.fleetlock is not None:
            self._fleetlock = FleetLockPort(
                self.config.fleetlock,
                self._fleetlock_tls(),
                self.api.state,
                self.store,
                self.api.caught_up,
            )
            try:
                self.fleetlock_port = await self._fleetlock.serve()
            except OSError as error:
                raise FailedPrecondition(
                    f"cannot listen on {self.config.fleetlock.listen}: {error.strerror}"
                ) from None
        if self.config.dashboard_listen is not None:
            await self._serve_dashboard(self.config.dashboard_listen, dashboard_tls)
        log.info("control plane %s listening on %s", self.server_id, self.config.listen)

    async def _serve_reads(self, listen: str) -> None:
        self._read_port = ReadPort(
            self.api, self.config.transport, self.informer.state(), SERVER_OPTIONS
        )
        # Started in its thread, which binds: the wait is this loop's, before it serves.
        self.read_port = await asyncio.to_thread(self._read_port.start, listen)
        self._tasks.append(
            asyncio.create_task(
                keep_published(self._read_port, self.informer), name="read-port-state"
            )
        )
        log.info("reads (get, ps, endpoints, rollout status) also on %s", listen)

    def _dashboard_tls(self) -> ssl.SSLContext:
        """The dashboard's TLS: the server's certificate; a browser's client certificate
        of fleet's CA is optional (a token signs in as well). Never plain HTTP."""
        tls = self.config.transport.tls
        if tls is None:
            raise FailedPrecondition(
                "--dashboard-listen serves HTTPS with the server's certificate, and this "
                "server has none (--insecure)"
            )
        try:
            return metrics_tls_context(tls)
        except (OSError, ssl.SSLError) as error:
            raise FailedPrecondition(f"cannot serve the dashboard over TLS: {error}") from None

    async def _serve_dashboard(self, listen: str, tls: ssl.SSLContext) -> None:
        from fleet.dashboard import Dashboard, DashboardConfig  # aiohttp: the server extra

        config = DashboardConfig(listen, session_seconds=self.config.dashboard_session_seconds)
        box = self._key.box if self._key is not None else None
        if box is None:
            log.warning(
                "dashboard sessions are signed with a key of this process alone (no "
                "--secrets-key-file): a restart signs everyone out, and a session is good "
                "on this replica only"
            )
        self._dashboard = Dashboard(config, self.api, self.informer, self.events, tls, box)
        try:
            self.dashboard_port = await self._dashboard.start()
        except OSError as error:
            self._dashboard = None
            raise FailedPrecondition(f"cannot listen on {listen}: {error.strerror}") from None
        log.info("dashboard on https://%s", _url_address(listen, self.dashboard_port))

    def _fleetlock_tls(self) -> ssl.SSLContext | None:
        """FleetLock's TLS: the server's certificate, an agent certificate optional (a
        group token may stand in, and Zincati has no client certificate); none on a
        plaintext server, where only tokens (or --fleetlock-insecure) guard it."""
        tls = self.config.transport.tls
        if tls is None:
            return None
        try:
            return metrics_tls_context(tls)
        except (OSError, ssl.SSLError) as error:
            raise FailedPrecondition(f"cannot serve FleetLock over TLS: {error}") from None

    def _discovery(self, app: str) -> list[dict[str, Any]]:
        """/v1/sd/http's target groups (called in the metrics port's threads: the
        informer's state is a snapshot, read as the metrics are)."""
        return sd_targets(self.informer.state(), time.time(), app)

    def _metrics_port_for(self, config: ServerConfig) -> MetricsPort:
        """The /metrics port: HTTPS with this server's certificate unless plain HTTP
        was asked for, which a server without TLS needs said explicitly."""
        tls = config.transport.tls
        if config.metrics_insecure:
            return MetricsPort(
                self.metrics.registry, None, self.api.token_identity, self._discovery
            )
        if tls is None:
            raise FailedPrecondition(
                "--metrics-listen serves HTTPS with the server's certificate, and this server "
                "has none (--insecure); to serve /metrics over plain HTTP to anyone, add "
                "--metrics-insecure"
            )
        try:
            context = metrics_tls_context(tls)
        except (OSError, ValueError) as error:
            raise FailedPrecondition(f"cannot serve /metrics over TLS: {error}") from None
        return MetricsPort(self.metrics.registry, context, self.api.token_identity, self._discovery)

    async def _lead(self) -> None:
        """Campaign; while leading, run the controllers with fenced writes; when the
        leadership is lost, stop them and campaign again. Every replica serves the API
        and agents all along."""
        reschedule_after = (
            self.config.reschedule_after
            if self.config.reschedule_after is not None
            else self.config.host_lease_ttl
        )
        while True:
            fence = await self.election.campaign()
            self.controller = ReplicaController(
                self.store.fenced(fence),
                self.informer,
                self.events,
                reschedule_after=reschedule_after,
                hold_moves_when_down=self.config.hold_moves_when_down,
                # Hosts it finds away get at least an agent's reconnect backoff to come
                # back before it counts them down.
                start_grace=max(self.config.host_lease_ttl, AGENTS_BACK_WITHIN),
                metrics=self.metrics,
                views=self.api.views,
            )
            self.metrics.leader.set(1)
            tasks = [
                asyncio.create_task(self.controller.run(), name="replica-controller"),
                asyncio.create_task(self.election.keep(), name="leader-lease"),
                # Within their cap even when no agent sends any (a store an older
                # version, or a flood before the cap, left heavy).
                asyncio.create_task(self.events.keep_trimmed(), name="events-trim"),
            ]
            if self.config.compact_interval > 0:
                self.compactor = Compactor(self.etcd, self.config.compact_interval)
                tasks.append(asyncio.create_task(self.compactor.run(), name="etcd-compactor"))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # a controller crash or a lost lease, raised here
            except LostLeadership as error:
                log.warning("%s is no longer the leader: %s", self.server_id, error)
            finally:
                self.metrics.leader.set(0)
                self.metrics.moves_held.set(0)
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, LostLeadership):
                        await task
                self.controller = None
                self.compactor = None

    async def stop(self, grace: float = 2.0) -> None:
        if self._dashboard is not None:
            await self._dashboard.stop()
            self._dashboard = None
        if self._metrics_port is not None:
            self._metrics_port.stop()
        if self._fleetlock is not None:
            await self._fleetlock.stop()
        # The controllers first (a resigned leader must not campaign again), then the
        # lease, so a standby takes over at once rather than after it expires.
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.election.resign()
        self.agents.stopping()
        if self._token_server is not None:
            await self._token_server.stop(grace)
        await self._server.stop(grace)
        if self._read_port is not None:
            await asyncio.to_thread(self._read_port.stop, grace)
            self._read_port = None
        await self.agents.close()
        self.keeper.close()
        self.metrics.unwatch_gc()
        await self.etcd.close()
        log.info("control plane %s stopped", self.server_id)

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait(self) -> None:
        """Run until a background task fails (its error is raised) or we are cancelled."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()


def _url_address(listen: str, port: int) -> str:
    """``listen`` with the port it got, as a URL's authority (any address: loopback)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_listen(address: str) -> None:
    problem = listen_problem(address)
    if problem is not None:
        raise FailedPrecondition(f"cannot listen on {address}: {problem}")


async def run_server(
    config: ServerConfig,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until a background task fails (its error is raised) or ``stop`` is set;
    then stop cleanly (``ControlPlane.stop``: a leader resigns at once). ``ready`` is
    called, with a line saying where, once the control plane serves."""
    collections = YoungCollections()
    collections.install()
    try:
        await _serve(config, ready, stop, collections)
    finally:
        collections.uninstall()


async def _serve(
    config: ServerConfig,
    ready: Callable[[str], None] | None,
    stop: asyncio.Event | None,
    collections: YoungCollections,
) -> None:
    async with ControlPlane(config) as plane:
        if ready is not None:
            ready(f"serving on {config.listen}")
        waiting = asyncio.create_task(plane.wait(), name="control-plane")
        collecting = asyncio.create_task(collections.run(), name="gc")
        stopping = asyncio.create_task((stop or asyncio.Event()).wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                waiting.result()
        finally:
            stopping.cancel()
            collecting.cancel()
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
