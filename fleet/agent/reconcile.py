"""The agent's reconcile step: desired vs observed -> a plan of ordered tasks. Pure.

Order matters, and the plan carries it as phases (each runs after the one before; the
tasks of one phase run concurrently):

1. stale containers are removed, and beside them the missing containers that cannot
   clash with them are created (a replacement has its own name), so a rolling wave
   does not wait for the last one's stops and shutdown delays;
2. missing containers with a fixed host port are created once the removes freed it;
3. stopped containers are restarted as their policy says (``fleet.agent.restarts``),
   created ones started, and finished jobs stopped.

Time comes in as ``now``; a restart held back by its backoff comes out as the time to
look again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fleet.agent.restarts import Backoff, RestartBook, restart_verdict
from fleet.agent.runtime import ObservedContainer
from fleet.proto import fleet_pb2 as pb

__all__ = ["Create", "Plan", "Remove", "Start", "Stop", "Task", "plan"]


@dataclass(frozen=True)
class Remove:
    container: ObservedContainer
    reason: str


@dataclass(frozen=True)
class Create:
    spec: pb.ContainerSpec


@dataclass(frozen=True)
class Start:
    container: ObservedContainer
    reason: str


@dataclass(frozen=True)
class Stop:
    """Stop, but keep (a finished job's container, for its logs)."""

    container: ObservedContainer
    reason: str


Task = Remove | Create | Start | Stop


@dataclass(frozen=True)
class Plan:
    """The tasks of one round in their phases (see the module's docstring), and when
    to look again (None: nothing is waiting on a backoff)."""

    phases: tuple[tuple[Task, ...], ...]
    look_again: float | None = None

    @property
    def tasks(self) -> list[Task]:
        """Every task, phase after phase."""
        return [task for phase in self.phases for task in phase]

    def only(self, keep: Callable[[Task], bool]) -> Plan:
        """The same plan with only the tasks ``keep`` says yes to, in their phases."""
        phases = tuple(tuple(t for t in phase if keep(t)) for phase in self.phases)
        return Plan(phases, self.look_again)


def _fixed_port(task: Task) -> bool:
    return isinstance(task, Create) and any(p.host_port for p in task.spec.ports)


def plan(
    desired: list[pb.ContainerSpec],
    observed: list[ObservedContainer],
    restarts: RestartBook,
    now: float,
    backoff: Backoff | None = None,
) -> Plan:
    """The tasks that bring ``observed`` to ``desired``, and when to look again; restarts
    wait out ``backoff`` (kubelet's by default)."""
    backoff = backoff or Backoff()
    # A slot may want two containers at once (its own and its replacement, each with
    # its template), so a container is matched on its slot and its template.
    wanted = {(c.app, c.slot, c.spec_hash): c for c in desired}
    slots = {(c.app, c.slot): c for c in desired}
    removes: list[Task] = []
    keep: dict[tuple[str, int, str], ObservedContainer] = {}

    # Prefer a running container when several match one replica (never two at once).
    ranked = sorted(observed, key=lambda c: (c.state != "running", c.name, c.container_id))
    for container in ranked:
        spec = wanted.get(container.key)
        if spec is None:
            replacement = slots.get((container.app, container.slot))
            reason = (
                f"replaced by template {replacement.spec_hash[:8]}"
                if replacement is not None
                else "no longer desired on this host"
            )
            removes.append(Remove(container, reason))
        elif container.key in keep:
            removes.append(Remove(container, "duplicate of a replica that already runs"))
        else:
            keep[container.key] = container

    # A held replica (the control plane withholds a secret from it) keeps a container
    # it has, and gets none made.
    creates: list[Task] = [
        Create(spec)
        for key, spec in sorted(wanted.items())
        if key not in keep and not spec.stopped and not spec.held
    ]

    starts: list[Task] = []
    look_again: float | None = None
    for key, container in keep.items():
        if wanted[key].stopped:
            if container.state in ("running", "restarting", "paused"):
                starts.append(Stop(container, "its job is over"))
            continue
        if container.state == "created":
            starts.append(Start(container, "created, not yet started"))
            continue
        verdict = restart_verdict(container, restarts, backoff, now)
        if verdict.action == "restart":
            reason = f"restart {verdict.restarts + 1} (exit code {container.exit_code})"
            starts.append(Start(container, reason))
        elif verdict.action == "wait":
            look_again = verdict.due if look_again is None else min(look_again, verdict.due)

    phases = (
        tuple(removes + [t for t in creates if not _fixed_port(t)]),
        tuple(t for t in creates if _fixed_port(t)),
        tuple(starts),
    )
    return Plan(phases, look_again)
