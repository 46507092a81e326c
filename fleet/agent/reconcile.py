"""The agent's reconcile step: desired vs observed -> an ordered list of tasks. Pure.

Order matters: stale containers go first (so a replaced container frees its fixed host
port and its name), then missing ones are created, then stopped ones are restarted as
their policy says. Time comes in as ``now``; a restart held back by its backoff comes
out as the time to look again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fleet.agent.runtime import ObservedContainer
from fleet.proto import fleet_pb2 as pb

__all__ = [
    "Backoff",
    "Create",
    "Remove",
    "RestartBook",
    "Start",
    "Stop",
    "Task",
    "plan",
    "restart_wanted",
]


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
class Backoff:
    """Delay before the n-th restart: ``initial * 2**n``, capped (as kubelet does)."""

    initial: float = 1.0
    cap: float = 300.0
    reset_after: float = 600.0  # a run this long starts the backoff from `initial` again

    def delay(self, restarts: int) -> float:
        return float(min(self.cap, self.initial * 2.0 ** min(restarts, 32)))


@dataclass
class RestartBook:
    """Restarts per container id: ``counts`` all of them (for ``on-failure:N``),
    ``streaks`` those since the last long run (for the backoff). The agent keeps it
    between rounds and on disk."""

    counts: dict[str, int] = field(default_factory=dict)
    streaks: dict[str, int] = field(default_factory=dict)

    def count(self, container_id: str) -> int:
        return self.counts.get(container_id, 0)

    def streak(self, container: ObservedContainer, backoff: Backoff) -> int:
        """Restarts that count for the backoff: none once a run lasted ``reset_after``."""
        return 0 if _ran_long(container, backoff) else self.streaks.get(container.container_id, 0)

    def record(self, container: ObservedContainer, backoff: Backoff) -> None:
        cid = container.container_id
        self.streaks[cid] = self.streak(container, backoff) + 1
        self.counts[cid] = self.count(cid) + 1

    def forget_except(self, container_ids: Iterable[str]) -> None:
        keep = set(container_ids)
        self.counts = {cid: n for cid, n in self.counts.items() if cid in keep}
        self.streaks = {cid: n for cid, n in self.streaks.items() if cid in keep}

    def failed(self, container: ObservedContainer) -> bool:
        """Stopped for good: a failure after the last restart ``on-failure:N`` allows."""
        return (
            container.state in ("exited", "dead")
            and container.restart.startswith("on-failure:")
            and (container.exit_code != 0 or container.oom_killed)
            and not restart_wanted(
                container.restart,
                container.exit_code,
                container.oom_killed,
                self.count(container.container_id),
            )
        )

    def save(self, path: Path) -> None:
        """Write the counts (atomically), so they survive an agent restart."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"counts": self.counts, "streaks": self.streaks}, sort_keys=True)
        )
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> RestartBook:
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        if not isinstance(saved, dict):
            return cls()

        def ints(key: str) -> dict[str, int]:
            found = saved.get(key)
            if not isinstance(found, dict):
                return {}
            return {str(k): v for k, v in found.items() if isinstance(v, int)}

        return cls(ints("counts"), ints("streaks"))


def _ran_long(container: ObservedContainer, backoff: Backoff) -> bool:
    started, finished = container.started_epoch, container.finished_at
    return (
        started is not None and finished is not None and finished - started >= backoff.reset_after
    )


def restart_wanted(policy: str, exit_code: int, oom_killed: bool, restarts: int) -> bool:
    """Docker's words: ``no``, ``always``, ``on-failure``, ``on-failure:N``."""
    kind, _, limit = policy.partition(":")
    if kind == "always":
        return True
    if kind == "on-failure":
        failed = exit_code != 0 or oom_killed
        return failed and (not limit or restarts < int(limit))
    return False


def plan(
    desired: list[pb.ContainerSpec],
    observed: list[ObservedContainer],
    restarts: RestartBook,
    now: float,
    backoff: Backoff = Backoff(),
) -> tuple[list[Task], float | None]:
    """The tasks that bring ``observed`` to ``desired``, and when to look again (None:
    nothing is waiting on a backoff)."""
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
        if container.state not in ("exited", "dead"):
            continue
        count = restarts.count(container.container_id)
        if not restart_wanted(container.restart, container.exit_code, container.oom_killed, count):
            continue
        # Docker stamps every exit; a container without a stamp is due at once rather
        # than postponed on every round.
        due = (container.finished_at or 0.0) + backoff.delay(restarts.streak(container, backoff))
        if due <= now:
            starts.append(
                Start(container, f"restart {count + 1} (exit code {container.exit_code})")
            )
        else:
            look_again = due if look_again is None else min(look_again, due)
    return removes + creates + starts, look_again
