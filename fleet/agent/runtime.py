"""The agent's seam to a container runtime: what it needs of one (``Runtime``), what a
runtime reports of a container (``ObservedContainer``), and the ``fleet.*`` labels every
fleet container carries (``container_labels``).

Two runtimes implement it: ``fleet.agent.dockerruntime.DockerRuntime`` (dockerd, the
only module of the agent that talks to it) and ``fleet.testing.hollow.HollowRuntime``
(simulated hosts for the scale tests). Where they differ, the difference is said here:
whether calls block (``Runtime.blocking``), and how events arrive (``FollowedEvents``:
a stream the agent reads in a thread; ``PushedEvents``: the runtime calls back).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from google.protobuf import json_format

from fleet._names import container_name
from fleet.agent.stats import HostUsage
from fleet.proto import fleet_pb2 as pb

__all__ = [
    "LABEL_APP",
    "LABEL_POOL",
    "ExecConnection",
    "FollowedEvents",
    "LogStream",
    "ObservedContainer",
    "OnEvent",
    "PushedEvents",
    "Runtime",
    "call",
    "container_labels",
    "container_name",
    "free_name",
]

_T = TypeVar("_T")

LABEL_APP = "fleet.app"
LABEL_SLOT = "fleet.slot"
LABEL_REVISION = "fleet.revision"
LABEL_SPEC_HASH = "fleet.spec-hash"
LABEL_RESTART = "fleet.restart"
LABEL_GRACE = "fleet.stop-grace"
LABEL_SHUTDOWN_DELAY = "fleet.shutdown-delay"
LABEL_HEALTH = "fleet.health"  # the health check, so a restarted agent still knows it
LABEL_POOL = "fleet.pool"  # the pool's id: another pool's containers are never adopted


def free_name(name: str, pool_id: str, holder_pool: str | None) -> str:
    """The name a new container of ``pool_id`` takes when ``name`` is held by a
    container of pool ``holder_pool`` (None: by none): ``name`` itself, unless another
    pool's (or a pool-less) container holds it, which is left alone: then ``name``
    followed by the pool's id (``web.0.1a2b3c4d.9f8e7d6c``)."""
    if holder_pool is None or not pool_id or holder_pool == pool_id:
        return name
    return f"{name}.{pool_id[:8]}"


@dataclass(frozen=True)
class ObservedContainer:
    """A fleet container as the runtime reports it."""

    container_id: str
    name: str
    app: str
    slot: int
    revision: int
    spec_hash: str
    restart: str
    stop_grace: float
    state: str  # created | running | paused | restarting | exited | dead
    exit_code: int
    oom_killed: bool
    started_at: str
    finished_at: float | None  # epoch seconds of the last exit, None if it never exited
    ports: tuple[tuple[int, int, str], ...]  # (host port, container port, protocol)
    started_epoch: float | None = None  # epoch seconds of the last start
    shutdown_delay: float = 0.0  # serves on this long once it is no longer desired
    pid: int = 0  # of its main process while it runs (its network namespace is there)
    health_check: pb.HealthCheck | None = None
    # Docker's own health status (exec checks run as its HEALTHCHECK): starting,
    # healthy or unhealthy; when it turned healthy; the last check's output.
    docker_health: str = ""
    docker_healthy_since: float | None = None
    docker_health_output: str = ""
    # The host paths Docker bind-mounts into it at every start, as Docker recorded them.
    bind_sources: tuple[str, ...] = ()
    pool: str = ""  # its fleet.pool label: "" for one made before pools had an id

    @property
    def key(self) -> tuple[str, int, str]:
        """The replica and template it runs: a slot may briefly run two templates."""
        return (self.app, self.slot, self.spec_hash)

    def to_status(self) -> pb.ContainerStatus:
        return pb.ContainerStatus(
            app=self.app,
            slot=self.slot,
            revision=self.revision,
            spec_hash=self.spec_hash,
            container_id=self.container_id,
            name=self.name,
            state=self.state,
            exit_code=self.exit_code,
            started_at=self.started_at,
            ports=[
                pb.PortMapping(host_port=h, container_port=c, protocol=p) for h, c, p in self.ports
            ],
        )


def container_labels(spec: pb.ContainerSpec) -> dict[str, str]:
    """The labels of the container made for ``spec``: its own, then fleet's (which the
    runtime reads back to know the container, even after an agent restart)."""
    labels = {
        **dict(spec.labels),
        LABEL_APP: spec.app,
        LABEL_SLOT: str(spec.slot),
        LABEL_REVISION: str(spec.revision),
        LABEL_SPEC_HASH: spec.spec_hash,
        LABEL_RESTART: spec.restart,
        LABEL_GRACE: f"{spec.stop_grace_seconds:g}",
    }
    if spec.pool_id:
        labels[LABEL_POOL] = spec.pool_id
    if spec.shutdown_delay_seconds:
        labels[LABEL_SHUTDOWN_DELAY] = f"{spec.shutdown_delay_seconds:g}"
    if spec.HasField("health"):
        labels[LABEL_HEALTH] = json.dumps(
            json_format.MessageToDict(spec.health, preserving_proto_field_name=True),
            sort_keys=True,
            separators=(",", ":"),
        )
    return labels


OnEvent = Callable[[dict[str, Any]], None]  # one of Docker's event dicts


class LogStream(Protocol):
    """A container's log in chunks as they are read (blocking); ``close`` from another
    thread ends a read that waits for more."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class ExecConnection(Protocol):
    """A started exec with its input attached (blocking calls: ``read`` in one thread,
    the others from another). Without a terminal, ``read`` returns Docker's multiplexed
    stream (``fleet.agent.dockerstream``); with one, the terminal's raw output."""

    tty: bool

    def read(self) -> bytes:
        """The next output (b"": it ended, or ``close`` was called)."""
        ...

    def write(self, data: bytes) -> None: ...

    def close_input(self) -> None:
        """End of input: the command reads EOF."""
        ...

    def resize(self, rows: int, cols: int, *, first: bool = False) -> None: ...

    def exit_code(self) -> int | None:
        """The command's exit code once it ended; None if the runtime cannot say."""
        ...

    def hang_up(self) -> None:
        """SIGHUP the command if it still runs (its client went away)."""
        ...

    def close(self) -> None: ...


class Runtime(Protocol):
    """What the agent needs of a container runtime. It lists, stops and removes only
    containers labelled as fleet's: anything else on the host is left alone. Failures
    are ``FleetError``s (``PullFailed`` for a pull, ``NotFound``, ``Unavailable``...)."""

    @property
    def blocking(self) -> bool:
        """True when calls block (docker-py): the agent makes them in worker threads.
        False when they return at once: made on the event loop (see ``call``)."""
        ...

    def host_facts(self) -> tuple[float, int, dict[str, str]]:
        """(cpus, memory bytes, facts such as os, arch, kernel and boot_id)."""
        ...

    def list_containers(self) -> list[ObservedContainer]:
        """Every fleet container on the host, running or not."""
        ...

    def ensure_image(
        self, image: str, auth: pb.RegistryAuth | None = None, mirror: str = ""
    ) -> bool:
        """Pull ``image`` unless the host has it (with ``auth``, Docker's auth_config;
        a Docker Hub image through ``mirror`` first: fleet.registries); True when it
        was pulled."""
        ...

    def create(self, spec: pb.ContainerSpec) -> str:
        """Create (not start) the container for ``spec``, named ``container_name`` (or
        ``free_name`` of it, when another pool's container holds it) and labelled
        ``container_labels``; returns its id."""
        ...

    def bind_sources(self, container_id: str) -> tuple[str, ...]:
        """The host paths the container's start will bind-mount, as the runtime
        recorded them: what the agent checks again right before the start."""
        ...

    def start(self, container_id: str) -> None: ...

    def stop(self, container_id: str, grace: float) -> None:
        """Stop (SIGTERM, then SIGKILL after ``grace``) and keep the container."""
        ...

    def stop_and_remove(self, container_id: str, grace: float) -> None:
        """Stop as ``stop`` does, then remove; a container already gone is no error."""
        ...

    def remove_by_name(self, name: str, pool_id: str) -> None:
        """Remove a leftover container of pool ``pool_id`` that holds ``name`` and does
        not run (a create that failed half-way). A running one, or another pool's, is
        never touched: a create must not kill what serves (the round looks again)."""
        ...

    def images_in_use(self) -> set[str]:
        """The images of every container on the host, fleet's or not."""
        ...

    def remove_image(self, image: str) -> bool:
        """Remove ``image`` unless a container uses it; True if it is gone."""
        ...

    def sample_usage(self) -> HostUsage:
        """Live usage of the host's running containers, fleet's or not."""
        ...

    def logs(
        self,
        container_id: str,
        *,
        follow: bool,
        tail: int,
        timestamps: bool,
        since: float = 0.0,
    ) -> LogStream:
        """The container's log (``tail`` < 0: all of it), read in a thread; ``follow``
        keeps it open for what comes, until the container stops or it is closed."""
        ...

    def exec(self, container_id: str, command: list[str], limit: int) -> tuple[int, bytes]:
        """Run ``command`` in the container; (exit code, first ``limit`` bytes of output)."""
        ...

    def exec_open(
        self, container_id: str, command: list[str], *, tty: bool, env: list[str]
    ) -> ExecConnection:
        """Start ``command`` in the container with its input attached (and a terminal
        with ``tty``); ``env``: extra ``NAME=value`` for it."""
        ...

    def top(self, container_id: str) -> tuple[list[str], list[list[str]]]:
        """(titles, one row per process) of the container's processes."""
        ...

    def signal(self, container_id: str, action: str, signal: str) -> None:
        """``pause``, ``unpause``, or ``kill`` with ``signal`` (a name or number)."""
        ...


@runtime_checkable
class FollowedEvents(Protocol):
    """A runtime whose events are a blocking stream (dockerd's): the agent follows it
    from a thread of its own, and follows again when it breaks."""

    def events(self, on_event: OnEvent, stop: threading.Event) -> None:
        """Follow fleet containers' events until ``stop`` is set or the stream breaks."""
        ...

    def stop_events(self) -> None:
        """Unblock ``events`` from another thread."""
        ...


@runtime_checkable
class PushedEvents(Protocol):
    """A runtime that calls ``on_event`` itself, on the agent's event loop (a simulated
    one: a thousand hosts in one process cannot have a thread each)."""

    def push_events(self, on_event: OnEvent | None) -> None:
        """Call ``on_event`` with every event from now on (None: stop)."""
        ...


async def call(runtime: Runtime, method: Callable[..., _T], *args: Any) -> _T:
    """``method(*args)`` of ``runtime``: in a worker thread when it blocks, on the loop
    when it does not (a thread hop per call was half of what a thousand hollow hosts
    cost their process)."""
    if runtime.blocking:
        return await asyncio.to_thread(method, *args)
    return method(*args)
