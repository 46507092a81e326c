"""What the soak's checker reasons about: snapshots of the truth (Docker, etcd, /proc),
the faults' time windows and the clients' operations. Plain frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AppView",
    "Container",
    "EtcdView",
    "FaultWindow",
    "Finding",
    "OpRecord",
    "Outcome",
    "Placement",
    "Snapshot",
]

Outcome = Literal["ok", "refused", "ambiguous"]


@dataclass(frozen=True)
class Container:
    """One fleet-labelled container as its host's dockerd reports it."""

    host: str
    id: str
    name: str
    app: str
    slot: int
    revision: int
    pool: str  # the fleet.pool label ("" if none)
    running: bool
    image: str
    started_at: str = ""
    port: int | None = None  # the host port 8080/tcp is published on
    serving: bool | None = None  # it answered HTTP at the host's address (None: not asked)


@dataclass(frozen=True)
class Placement:
    """A replica record (replicas/<app>/<slot>): where its own container and its next run."""

    app: str
    slot: int
    revision: int
    host: str
    next_revision: int | None = None
    next_host: str | None = None
    stopped: bool = False  # kept but not run (a failed job's)

    def places(self, host: str, revision: int) -> bool:
        """Whether a running container of this slot at ``revision`` belongs on ``host``."""
        if self.stopped:
            return False
        own = (self.host, self.revision) == (host, revision)
        return own or (self.next_host, self.next_revision) == (host, revision)


@dataclass(frozen=True)
class AppView:
    """An app record (apps/<app>), the parts the checker reads."""

    name: str
    generation: int
    revision: int
    replicas: int
    mode: str
    image: str
    min_available: int | str | None = None


@dataclass(frozen=True)
class EtcdView:
    """fleet's keys read straight from etcd (not through fleet's API) at one revision."""

    pool_id: str
    apps: dict[str, AppView]
    replicas: tuple[Placement, ...]
    revisions: frozenset[tuple[str, int]]  # (app, revision) of every revisions/ key
    rollouts: frozenset[str]
    jobs: frozenset[str]
    hosts: dict[str, str]  # host -> its state (ready, cordoned, ...)
    alive: frozenset[str]
    status: frozenset[str]
    reports: frozenset[tuple[str, str, int, int]]  # (host, app, slot, revision)
    host_labels: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Snapshot:
    """The truth at one moment: every host's fleet containers, and etcd (None when no
    member answered); hosts whose dockerd did not answer are listed apart."""

    at: float
    containers: tuple[Container, ...]
    unreadable: frozenset[str]
    etcd: EtcdView | None
    rss: dict[str, int] = field(default_factory=dict)  # process name -> bytes


@dataclass(frozen=True)
class FaultWindow:
    """A fault from its injection to its healing (end None: still on). ``hosts`` are the
    Docker hosts it touches (none for a control plane or an etcd member)."""

    kind: str
    target: str
    hosts: frozenset[str]
    start: float
    end: float | None = None

    def covers(self, at: float, grace: float = 0.0) -> bool:
        return self.start <= at and (self.end is None or at <= self.end + grace)


@dataclass(frozen=True)
class OpRecord:
    """One client call: what it asked, how it ended, and the app's generation in etcd
    right before and after it (calls on one app never overlap)."""

    thread: str
    op: str  # apply, scale, set-image, undo, delete, drain, uncordon
    target: str
    args: str
    start: float
    end: float
    outcome: Outcome
    error: str = ""
    gen_before: int | None = None  # None: no record (or not an app op)
    gen_after: int | None = None
    wants: tuple[tuple[str, str], ...] = ()  # what a success makes true: (field, value)


@dataclass(frozen=True)
class Finding:
    """A violated invariant: which, when, and what was seen (enough to look it up)."""

    invariant: str
    at: float
    detail: str
