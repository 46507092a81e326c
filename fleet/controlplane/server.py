"""``fleet server``: the control plane process, wired from its parts.

One grpc.aio server hosts the API (for the CLI) and the agent stream; an informer
keeps a watch-driven cache of etcd that both read; the replica controller places
replicas whenever that cache changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fleet.controlplane._handlers import service_handler
from fleet.controlplane.agents import AgentService
from fleet.controlplane.api import FleetService
from fleet.controlplane.metrics import Metrics
from fleet.controlplane.replicas import ReplicaController
from fleet.secrets import load_key_file
from fleet.store import DEFAULT_PREFIX, Etcd, EventLog, Informer, KeyLayout, Store
from fleet.store.compactor import DEFAULT_COMPACT_INTERVAL, Compactor
from fleet.store.election import Election, LostLeadership
from fleet.store.leases import LeaseKeeper
from fleet.transport import MAX_MESSAGE_BYTES, TlsFiles, Transport

__all__ = ["ControlPlane", "ServerConfig", "run_server"]

log = logging.getLogger(__name__)

# What a caller may send (applies, agent reports); answers may be up to MAX_MESSAGE_BYTES.
MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    etcd: Sequence[str]
    transport: Transport  # mutual TLS for agents and clients, or explicitly insecure
    etcd_tls: TlsFiles | None = None
    secrets_key: Path | None = None  # without one, secrets cannot be set
    listen: str = "127.0.0.1:7400"
    # A second port for clients with bearer tokens instead of certificates: TLS with the
    # server's certificate, no client certificate asked for (None: no such port).
    token_listen: str | None = None
    metrics_listen: str | None = None  # Prometheus /metrics over plain HTTP (None: off)
    prefix: str = DEFAULT_PREFIX
    heartbeat_seconds: float = 2.0
    host_lease_ttl: int = 15  # host_down_after: a silent host's liveness key expires then
    reschedule_after: float | None = None  # then its replicas move (None: host_lease_ttl)
    server_id: str = ""
    leader_ttl: int = 4  # a dead leader's lease expires this long after its last renewal
    compact_interval: float = DEFAULT_COMPACT_INTERVAL  # the leader compacts etcd (0: never)


class ControlPlane:
    """A running control plane; ``start()`` then ``stop()``, or ``async with``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server_id = config.server_id or f"{socket.gethostname()}-{os.getpid()}"
        self.etcd = Etcd(config.etcd, tls=config.etcd_tls)
        # Host and leader leases are renewed from a thread of their own (see leases.py).
        self.keeper = LeaseKeeper(config.etcd, tls=config.etcd_tls)
        box = load_key_file(config.secrets_key) if config.secrets_key else None
        self.store = Store(self.etcd, KeyLayout(config.prefix))
        self.informer = Informer(self.etcd, self.store.keys)
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
        )
        self.agents.observe_heartbeat = self.metrics.heartbeats.observe
        self.agents.reports.observe_write = self.metrics.report_writes.observe
        self.api = FleetService(
            self.store,
            self.informer,
            self.events,
            self.agents.relay,
            insecure=config.transport.insecure,
            secrets=box,
        )
        self.api.controller_pending = lambda: self.controller.pending if self.controller else None
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ]
        )
        self._server.add_generic_rpc_handlers(
            (
                service_handler("FleetService", self.api),
                service_handler("AgentService", self.agents),
            )
        )
        # The standard health service (for load balancers and probes) and reflection.
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [
                "fleet.v1.FleetService",
                "fleet.v1.AgentService",
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self.token_port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        self.port = self.config.transport.add_port(self._server, self.config.listen)
        if self.config.token_listen is not None:
            self.token_port = self.config.transport.add_token_port(
                self._server, self.config.token_listen
            )
        if not self.port:
            raise OSError(f"cannot listen on {self.config.listen}")
        self.keeper.start(asyncio.get_running_loop())
        self._tasks = [
            asyncio.create_task(self.informer.run(), name="informer"),
            asyncio.create_task(self._lead(), name="leadership"),
        ]
        await asyncio.wait_for(self.informer.wait_synced(), 30)
        await self._server.start()
        for service in ("", "fleet.v1.FleetService", "fleet.v1.AgentService"):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        if self.config.metrics_listen is not None:
            self.metrics_port = self.metrics.serve(self.config.metrics_listen)
        log.info("control plane %s listening on %s", self.server_id, self.config.listen)

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
                metrics=self.metrics,
            )
            self.metrics.leader.set(1)
            tasks = [
                asyncio.create_task(self.controller.run(), name="replica-controller"),
                asyncio.create_task(self.election.keep(), name="leader-lease"),
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
                for task in tasks:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, LostLeadership):
                        await task
                self.controller = None
                self.compactor = None

    async def stop(self, grace: float = 2.0) -> None:
        self.metrics.stop()
        # The controllers first (a resigned leader must not campaign again), then the
        # lease, so a standby takes over at once rather than after it expires.
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.election.resign()
        await self._server.stop(grace)
        await self.agents.close()
        self.keeper.close()
        await self.etcd.close()

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


# The cyclic GC's thresholds (Python's default: 700, 10, 10). At 100,000 replicas the
# server holds about 800,000 tracked objects and makes short-lived ones fast; with the
# defaults a full collection ran every 3 s and took 0.7 s (a quarter of the server),
# stalling the event loop long enough to miss lease renewals. What it makes is almost
# all freed by reference counting, so collections can be far rarer.
GC_THRESHOLDS = (50_000, 20, 100)


async def run_server(config: ServerConfig) -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    async with ControlPlane(config) as plane:
        await plane.wait()
