"""Hollow hosts, as Kubernetes' kubemark: many simulated Docker hosts in one process.

A test and benchmark tool, never part of a real deployment. Each hollow host runs the
real ``fleet.agent.Agent`` (its stream, registration, heartbeats, reconcile loop,
restart policies and events) over ``HollowRuntime``, an in-memory ``Runtime``
(``fleet.agent.runtime``) in which a started container is running ``start_delay``
seconds later. Its calls return at once (it is not ``blocking``) and it pushes its
events on the loop (``PushedEvents``). Health checks are not simulated: a hollow
container is healthy once it runs; nor are processes: its logs are empty, and exec and
top are refused.

    python -m fleet.testing.hollow --server 127.0.0.1:7400 --hosts 500 --insecure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

from fleet._stacks import await_chain, where_it_waits
from fleet._time import iso_at
from fleet.agent.agent import Agent
from fleet.agent.config import AgentConfig
from fleet.agent.runtime import (
    LABEL_APP,
    LABEL_GRACE,
    LABEL_POOL,
    LABEL_RESTART,
    LABEL_REVISION,
    LABEL_SLOT,
    LABEL_SPEC_HASH,
    ExecConnection,
    LogStream,
    ObservedContainer,
    OnEvent,
    container_labels,
    container_name,
)
from fleet.agent.stats import HostUsage
from fleet.errors import NotFound, Unavailable
from fleet.proto import fleet_pb2 as pb
from fleet.transport import Transport

__all__ = [
    "HollowRuntime",
    "hollow_agents",
    "most_stalled_within",
    "run_hollow",
    "stalls_in",
    "watch_own_loop",
]

log = logging.getLogger(__name__)

_MEMORY_IN_USE = 8 << 20  # what a hollow container "uses"


@dataclass
class _Container:
    id: str
    name: str
    image: str
    labels: dict[str, str]
    ports: tuple[tuple[int, int, str], ...]
    state: str = "created"
    running_at: float | None = None  # when a start takes effect
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int = 0
    # What the last listing made of it, reused while nothing changed (the agent lists
    # every container at every reconcile: building them again and again was most of
    # what 250 hollow hosts of a process spent, more than the control plane they test).
    observed: ObservedContainer | None = None


class _EmptyLog:
    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        return None


@dataclass
class HollowRuntime:
    """dockerd, simulated: containers are records; a start takes ``start_delay``."""

    host_id: str = "hollow"
    start_delay: float = 0.2
    cpus: float = 16.0
    memory: int = 64 << 30
    images: set[str] = field(default_factory=set)

    blocking = False  # every call returns at once: the agent makes it on the loop

    def __post_init__(self) -> None:
        self._containers: dict[str, _Container] = {}
        self._named: dict[str, set[str]] = {}  # name -> ids (a create looks its name up)
        self._ports = itertools.count(32768)
        self._lock = threading.Lock()  # agents call in from worker threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_event: OnEvent | None = None
        self._boot_id = str(uuid.uuid4())

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def push_events(self, on_event: OnEvent | None) -> None:
        self._on_event = on_event

    def _emit(self, action: str, container: _Container) -> None:
        event = {
            "Type": "container",
            "Action": action,
            "Actor": {"ID": container.id, "Attributes": dict(container.labels)},
            "timeNano": time.time_ns(),
        }
        if self._on_event is not None:
            self._on_event(event)

    # ------------------------------------------------------------------ the runtime

    def host_facts(self) -> tuple[float, int, dict[str, str]]:
        facts = {"os": "hollow", "arch": "x86_64", "kernel": "hollow", "docker_version": "hollow"}
        # Which daemon it is, as a real agent says (``daemon_identity``): each hollow host
        # is a daemon of its own. Without it the control plane's check that no two agents
        # share a daemon, made at every registration, cost nothing in the benchmarks.
        daemon = hashlib.sha256(self._boot_id.encode()).hexdigest()[:16]
        return self.cpus, self.memory, {**facts, "boot_id": self._boot_id, "docker_daemon": daemon}

    def list_containers(self) -> list[ObservedContainer]:
        now = time.time()
        with self._lock:
            found = []
            for c in self._containers.values():
                state = c.state
                if state == "running" and c.running_at is not None and c.running_at > now:
                    state = "created"  # still starting
                observed = c.observed
                if observed is None or observed.state != state:
                    observed = c.observed = self._observe(c, state)
                found.append(observed)
            return found

    @staticmethod
    def _observe(c: _Container, state: str) -> ObservedContainer:
        return ObservedContainer(
            container_id=c.id,
            name=c.name,
            app=c.labels[LABEL_APP],
            slot=int(c.labels[LABEL_SLOT]),
            revision=int(c.labels[LABEL_REVISION]),
            spec_hash=c.labels[LABEL_SPEC_HASH],
            restart=c.labels[LABEL_RESTART],
            stop_grace=float(c.labels[LABEL_GRACE]),
            state=state,
            exit_code=c.exit_code,
            oom_killed=False,
            started_at=_stamp(c.running_at) if state == "running" else "",
            finished_at=c.finished_at,
            ports=c.ports,
            started_epoch=c.running_at if state == "running" else None,
            pool=c.labels.get(LABEL_POOL, ""),
        )

    def ensure_image(
        self, image: str, auth: pb.RegistryAuth | None = None, mirror: str = ""
    ) -> bool:
        with self._lock:
            pulled = image not in self.images
            self.images.add(image)
            return pulled

    def create(self, spec: pb.ContainerSpec) -> str:
        labels = container_labels(spec)
        with self._lock:
            ports = tuple(
                sorted(
                    (p.host_port or next(self._ports), p.container_port, p.protocol)
                    for p in spec.ports
                )
            )
            container = _Container(
                id=os.urandom(32).hex(),
                name=container_name(spec.app, spec.slot, spec.spec_hash),
                image=spec.image,
                labels=labels,
                ports=ports,
            )
            self._containers[container.id] = container
            self._named.setdefault(container.name, set()).add(container.id)
        return container.id

    def bind_sources(self, container_id: str) -> tuple[str, ...]:
        return ()  # a hollow container mounts nothing

    def _get(self, container_id: str) -> _Container:
        found = self._containers.get(container_id)
        if found is None:
            raise NotFound(f"no such hollow container {container_id[:12]}")
        return found

    def start(self, container_id: str) -> None:
        with self._lock:
            container = self._get(container_id)
            if container.state == "running":
                return
            container.state = "running"
            container.running_at = time.time() + self.start_delay
            container.finished_at = None
            container.observed = None
        if self._loop is not None:
            # The agent hears of it when it runs, as it would from Docker's events.
            self._on_loop(self._loop.call_later, self.start_delay, self._emit, "start", container)

    def stop(self, container_id: str, grace: float) -> None:
        with self._lock:
            container = self._get(container_id)
            container.state = "exited"
            container.finished_at = time.time()
            container.observed = None
        self._emit_soon("die", container)

    def stop_and_remove(self, container_id: str, grace: float) -> None:
        with self._lock:
            container = self._containers.pop(container_id, None)
            if container is not None:
                named = self._named[container.name]
                named.discard(container_id)
                if not named:
                    del self._named[container.name]
        if container is not None:
            self._emit_soon("destroy", container)

    def remove_by_name(self, name: str, pool_id: str) -> None:
        with self._lock:
            stale = [i for i in self._named.get(name, ()) if self._containers[i].state != "running"]
        for container_id in stale:
            self.stop_and_remove(container_id, 0)

    def _emit_soon(self, action: str, container: _Container) -> None:
        self._on_loop(self._emit, action, container)

    def _on_loop(self, callback: Callable[..., object], *args: object) -> None:
        """Call ``callback`` on the bound loop soon: queued there directly when called
        on it (the agents' calls are: ``blocking`` is False), through its wake-up pipe
        from another thread (a write to it for every start was a tenth of the process)."""
        loop = self._loop
        if loop is None:
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            loop.call_soon(callback, *args)
        else:
            loop.call_soon_threadsafe(callback, *args)

    def images_in_use(self) -> set[str]:
        with self._lock:
            return {c.image for c in self._containers.values()}

    def remove_image(self, image: str) -> bool:
        with self._lock:
            if image in self.images:
                self.images.discard(image)
                return True
            return False

    def sample_usage(self) -> HostUsage:
        running = [c for c in self.list_containers() if c.state == "running"]
        return HostUsage(
            cpu=0.01 * len(running),
            memory=_MEMORY_IN_USE * len(running),
            containers=len(running),
            seconds=0.0,
            images=tuple(sorted(self.images)),
            per_container={c.container_id: (0.01, _MEMORY_IN_USE, 0) for c in running},
        )

    def logs(
        self,
        container_id: str,
        *,
        follow: bool,
        tail: int,
        timestamps: bool,
        since: float = 0.0,
    ) -> LogStream:
        """A hollow container writes nothing: its log is empty."""
        with self._lock:
            self._get(container_id)
        return _EmptyLog()

    def exec(self, container_id: str, command: list[str], limit: int) -> tuple[int, bytes]:
        raise Unavailable("a hollow host runs no processes")

    def exec_open(
        self, container_id: str, command: list[str], *, tty: bool, env: list[str]
    ) -> ExecConnection:
        raise Unavailable("a hollow host runs no processes")

    def top(self, container_id: str) -> tuple[list[str], list[list[str]]]:
        raise Unavailable("a hollow host runs no processes")

    def signal(self, container_id: str, action: str, signal: str) -> None:
        raise Unavailable("a hollow host runs no processes")

    def kill(self, container_id: str, exit_code: int = 137) -> None:
        """A container dies (for tests of restart policies at scale)."""
        with self._lock:
            container = self._get(container_id)
            container.state, container.exit_code = "exited", exit_code
            container.finished_at = time.time()
            container.observed = None
        self._emit_soon("die", container)


def _stamp(seconds: float | None) -> str:
    return "" if seconds is None else iso_at(seconds)


def _print_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Every task's chain of awaits, innermost last, each headed by the host it serves (found in
    its frames' ``self``): ``grep -A12 'host hollow-00431'`` shows where that host's
    reconciler, session and watches wait."""
    for task in asyncio.all_tasks(loop):
        host = next(filter(None, map(_host_of, await_chain(task))), "?")
        print(f"--- task {task.get_name()}, host {host}", file=sys.stderr)
        print(where_it_waits(task), file=sys.stderr)
    sys.stderr.flush()


def _host_of(frame: FrameType) -> str | None:
    """The host id of the agent part whose method ``frame`` runs, if it says."""
    owner = frame.f_locals.get("self")
    for holder in (owner, getattr(owner, "config", None), getattr(owner, "_config", None)):
        host_id = getattr(holder, "host_id", None)
        if isinstance(host_id, str):
            return host_id
    return None


def hollow_agents(
    servers: Sequence[str],
    count: int,
    transport_for: Callable[[str], Transport],
    *,
    name: str = "hollow",
    start_delay: float = 0.2,
    cpus: float = 16.0,
    memory: int = 64 << 30,
    stats_seconds: float = 5.0,
    first: int = 0,
) -> list[tuple[Agent, HollowRuntime]]:
    """``count`` hollow hosts ``NAME-00000``...: the real agent over a hollow runtime."""
    made = []
    for i in range(first, first + count):
        host_id = f"{name}-{i:05d}"
        runtime = HollowRuntime(host_id=host_id, start_delay=start_delay, cpus=cpus, memory=memory)
        config = AgentConfig(
            servers=servers,
            host_id=host_id,
            transport=transport_for(host_id),
            stats_seconds=stats_seconds,
            resync_seconds=30.0,
            address="127.0.0.1",
        )
        made.append((Agent(config, runtime), runtime))
    return made


async def run_hollow(agents: list[tuple[Agent, HollowRuntime]], spread: float = 5.0) -> None:
    """Run every agent until cancelled; starts are spread over ``spread`` seconds so
    thousands of hosts do not all connect in the same instant."""
    loop = asyncio.get_running_loop()
    # `kill -USR1` prints every task's stack to stderr (the process's log): a host whose
    # reconciler stopped making progress shows where it waits.
    loop.add_signal_handler(signal.SIGUSR1, _print_tasks, loop)

    async def one(index: int, agent: Agent, runtime: HollowRuntime) -> None:
        runtime.bind(loop)
        await asyncio.sleep(spread * index / max(1, len(agents)))
        await agent.run()

    watch = asyncio.create_task(watch_own_loop(len(agents)))
    try:
        await asyncio.gather(*(one(i, a, r) for i, (a, r) in enumerate(agents)))
    finally:
        watch.cancel()


STALL_LOGGED = 2.0  # seconds: a hollow process whose loop ran nothing this long says so
_STALLED = (
    "hollow process stalled: its event loop ran nothing for %.1fs; "
    "its %d hosts were silent meanwhile"
)
_STALL_FOUND = re.compile(r"hollow process stalled: its event loop ran nothing for ([0-9.]+)s")


def stalls_in(lines: Iterable[str]) -> list[tuple[float, float]]:
    """Each stall a hollow process's log (``lines``, in ``main``'s format) tells of: when
    it ended (the line's time, seconds since the epoch) and how long it was."""
    found = []
    for line in lines:
        m = _STALL_FOUND.search(line)
        if m is not None:
            ended = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((ended, float(m.group(1))))
    return found


def most_stalled_within(stalls: Sequence[tuple[float, float]], window: float) -> float:
    """The most seconds ``stalls`` (of one process, as ``stalls_in`` gives them) add up
    to within any ``window`` seconds: a host is marked down after its TTL of silence,
    and several stalls, each short, can make it up."""
    ends = sorted(stalls)
    return max(
        (sum(s for t, s in ends if end - window <= t - s and t <= end) for end, _ in ends),
        default=0.0,
    )


async def watch_own_loop(hosts: int, every: float = 0.5, logged: float = STALL_LOGGED) -> None:
    """Log each time this process's event loop ran nothing for ``logged`` seconds or
    more (it was starved of cpu, or something blocked it): its hosts sent nothing
    meanwhile, so a control plane that marks some of them down for silence is right to.
    Hollow hosts share the benchmark's machine with the control plane; real hosts do not,
    so a benchmark counts these lines (``benchmarks/scale.py``) apart from the server's."""
    while True:
        began = time.monotonic()
        await asyncio.sleep(every)
        stalled = time.monotonic() - began - every
        if stalled >= logged:
            log.warning(_STALLED, stalled, hosts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--server", required=True, help="control plane address(es), a,b")
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--first", type=int, default=0, help="number of the first host")
    parser.add_argument("--name", default="hollow", help="host ids are NAME-00000...")
    parser.add_argument("--start-delay", type=float, default=0.2)
    parser.add_argument("--cpus", type=float, default=16.0)
    parser.add_argument("--memory-gib", type=int, default=64)
    parser.add_argument("--stats-seconds", type=float, default=5.0)
    parser.add_argument("--spread", type=float, default=5.0, help="seconds to connect all")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--pki-dir", type=Path, help="a TestPKI directory (agent certificates)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.insecure:

        def transport_for(host_id: str) -> Transport:
            return Transport(None)

    else:
        from fleet.testing.certs import TestPKI

        if args.pki_dir is None:
            parser.error("--pki-dir or --insecure is needed")
        pki = TestPKI(args.pki_dir)

        def transport_for(host_id: str) -> Transport:
            return Transport(pki.agent(host_id))

    agents = hollow_agents(
        [s for s in args.server.split(",") if s],
        args.hosts,
        transport_for,
        name=args.name,
        start_delay=args.start_delay,
        cpus=args.cpus,
        memory=args.memory_gib << 30,
        stats_seconds=args.stats_seconds,
        first=args.first,
    )
    print(f"hollow: {len(agents)} hosts", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_hollow(agents, args.spread))


if __name__ == "__main__":
    main()
