"""Restart policies: when a stopped container is restarted, and when it is left for ops.

Docker's words (``no``, ``always``, ``on-failure``, ``on-failure:N``), enforced by the
agent alone (its containers get Docker's ``no``), with kubelet's backoff between
restarts. ``restart_verdict`` is the one rule the reconcile plan, the restart events and
the reported status all ask. Pure: time comes in as ``now``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fleet.agent.runtime import ObservedContainer

__all__ = ["Backoff", "RestartBook", "RestartVerdict", "restart_verdict", "restart_wanted"]


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
    ``streaks`` those since the last long run (for the backoff), ``exits`` the exit code
    the last one was made from (Docker clears it when the container starts again). The
    agent keeps it between rounds and on disk."""

    counts: dict[str, int] = field(default_factory=dict)
    streaks: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    _saving: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, container_id: str) -> int:
        return self.counts.get(container_id, 0)

    def streak(self, container: ObservedContainer, backoff: Backoff) -> int:
        """Restarts that count for the backoff: none once a run lasted ``reset_after``."""
        return 0 if _ran_long(container, backoff) else self.streaks.get(container.container_id, 0)

    def record(self, container: ObservedContainer, backoff: Backoff) -> None:
        cid = container.container_id
        self.streaks[cid] = self.streak(container, backoff) + 1
        self.counts[cid] = self.count(cid) + 1
        self.exits[cid] = container.exit_code

    def last_exit(self, container_id: str) -> int:
        """The exit code the container's last restart was made from (0: none known)."""
        return self.exits.get(container_id, 0)

    def forget_except(self, container_ids: Iterable[str]) -> None:
        keep = set(container_ids)
        self.counts = {cid: n for cid, n in self.counts.items() if cid in keep}
        self.streaks = {cid: n for cid, n in self.streaks.items() if cid in keep}
        self.exits = {cid: n for cid, n in self.exits.items() if cid in keep}

    def save(self, path: Path) -> None:
        """Write the counts (atomically), so they survive an agent restart. Starts run
        in parallel, each saving from a thread: one writer at a time (they share the
        temporary file; seen: the second's rename found it gone and its start failed),
        each writing the counts as they are then, so the last write is the newest."""
        with self._saving:
            text = json.dumps(
                {
                    "counts": dict(self.counts),
                    "streaks": dict(self.streaks),
                    "exits": dict(self.exits),
                },
                sort_keys=True,
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(text)
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

        return cls(ints("counts"), ints("streaks"), ints("exits"))  # (no exits: older agent)


def _ran_long(container: ObservedContainer, backoff: Backoff) -> bool:
    started, finished = container.started_epoch, container.finished_at
    return (
        started is not None and finished is not None and finished - started >= backoff.reset_after
    )


def restart_wanted(policy: str, exit_code: int, oom_killed: bool, restarts: int) -> bool:
    """Whether ``policy`` restarts a container that exited so, after ``restarts``."""
    kind, _, limit = policy.partition(":")
    if kind == "always":
        return True
    if kind == "on-failure":
        failed = exit_code != 0 or oom_killed
        return failed and (not limit or restarts < int(limit))
    return False


@dataclass(frozen=True)
class RestartVerdict:
    """What a container's restart policy says of it at one moment:

    - ``none``: it is not stopped, or its policy leaves it stopped (``no``, a clean
      exit under ``on-failure``);
    - ``restart``: restart it now;
    - ``wait``: restart it at ``due``, once its backoff is over;
    - ``limit``: it failed after the last restart ``on-failure:N`` allows: stopped for
      good, left for ops.
    """

    action: Literal["none", "restart", "wait", "limit"]
    restarts: int = 0  # done so far: the next one is restarts + 1
    delay: float = 0.0  # the backoff before the next restart (restart, wait)
    due: float = 0.0  # when the next restart is due: the exit plus the delay (restart, wait)


def restart_verdict(
    container: ObservedContainer, book: RestartBook, backoff: Backoff, now: float
) -> RestartVerdict:
    """The restart rule: what ``container``'s policy wants of it at ``now``."""
    if container.state not in ("exited", "dead"):
        return RestartVerdict("none")
    count = book.count(container.container_id)
    if restart_wanted(container.restart, container.exit_code, container.oom_killed, count):
        delay = backoff.delay(book.streak(container, backoff))
        # Docker stamps every exit; a container without a stamp is due at once rather
        # than postponed on every round.
        due = (container.finished_at or 0.0) + delay
        return RestartVerdict("restart" if due <= now else "wait", count, delay, due)
    failed = container.exit_code != 0 or container.oom_killed
    if failed and container.restart.startswith("on-failure:"):
        return RestartVerdict("limit", count)
    return RestartVerdict("none", count)
