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
    template: str = ""  # its fleet.spec-hash label: the template it runs


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

    def places(
        self,
        host: str,
        revision: int,
        template: str = "",
        templates: dict[tuple[str, int], str] | None = None,
    ) -> int | None:
        """The revision this slot places a running container of ``revision`` (running
        ``template``) as on ``host``, None if it does not belong there. Two revisions of
        an app may share a template (an image set back, an undo), and fleet keeps a
        container whose template is placed whatever revision made it: the same one."""

        def same(placed: int | None) -> bool:
            if placed is None:
                return False
            if placed == revision:
                return True
            return bool(template) and (templates or {}).get((self.app, placed)) == template

        if self.stopped:
            return None
        if self.host == host and same(self.revision):
            return self.revision
        if self.next_host == host and same(self.next_revision):
            return self.next_revision
        return None


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
    templates: dict[tuple[str, int], str] = field(default_factory=dict)  # revision's hash
    images: dict[tuple[str, int], str] = field(default_factory=dict)  # revision's image


@dataclass(frozen=True)
class Snapshot:
    """The truth at one moment: every host's fleet containers, and etcd (None when no
    member answered); hosts whose dockerd did not answer are listed apart."""

    at: float
    containers: tuple[Container, ...]
    unreadable: frozenset[str]
    etcd: EtcdView | None
    rss: dict[str, int] = field(default_factory=dict)  # process name -> bytes
    # Images no pull can get (the registry does not hold them: the workload's broken one).
    unpullable: frozenset[str] = frozenset()


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
