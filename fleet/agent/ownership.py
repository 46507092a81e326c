"""Which fleet containers on a host are this pool's: the agent acts on those only.
Pure, and the memory it needs (the pool's id, the claims) kept in one small file.

Every container the agent creates carries the pool's id (label ``fleet.pool``), which
the control plane sends at registration. A host may also hold containers no agent of
this pool made: leftovers of another pool (an etcd restored from a backup, a host moved
between pools), with the very names this pool's would have, since the same app at the
same revision has the same template hash. Taken as its own, a leftover became a second
container of a slot placed on another host, and a host ran more replicas than it was
given (seen: a fresh pool on hosts with an earlier pool's stopped containers). So:

- labelled with this pool: ours;
- labelled with another pool: a stranger, reported once and left alone (never started,
  stopped, removed, or reported as a replica). Not even a stopped one is removed: it may
  be someone's way back to the other pool, and the event names the ``docker rm`` that
  clears it;
- with no pool label (made before pools had an id: by this pool's agent before an
  upgrade, or by another pool's): ours when the desired set places that very app, slot
  and template on this host (it is then exactly what the agent would create, and taking
  it keeps an upgraded host's replicas serving), or when it was taken so before (a
  claim, kept in the state dir: Docker cannot label a container after its creation).
  Otherwise a stranger. Before the first desired set none is taken or judged: the set
  says which are wanted;
- the pool not known yet (an agent that never registered since it had pools): none is
  taken, so nothing is started or removed until the control plane has said who the
  pool is; a control plane that has no pool id (an older one): all are ours, as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fleet.agent.runtime import ObservedContainer
from fleet.proto import fleet_pb2 as pb

__all__ = ["Claims", "Sorted", "sort_out", "stranger_message"]


@dataclass(frozen=True)
class Sorted:
    """The containers of one listing, sorted out: this pool's, and the strangers with
    why each is not (the containers not yet judged are in neither)."""

    ours: list[ObservedContainer]
    strangers: list[tuple[ObservedContainer, str]]
    undecided: int = 0  # pool-less containers waiting for a desired set (or the pool)
    claimed: list[str] = field(default_factory=list)  # ids newly taken as ours


def sort_out(
    observed: list[ObservedContainer],
    pool_id: str | None,
    desired: list[pb.ContainerSpec] | None,
    claims: frozenset[str],
) -> Sorted:
    """Sort ``observed`` out for pool ``pool_id`` (None: not known yet; "": a control
    plane without pool ids), given the desired set (None: none yet) and the ids already
    claimed (see the module's docstring)."""
    if pool_id == "":
        return Sorted(list(observed), [])
    if pool_id is None:
        return Sorted([], [], undecided=len(observed))
    placed = {(c.app, c.slot, c.spec_hash) for c in desired or ()}
    ours: list[ObservedContainer] = []
    strangers: list[tuple[ObservedContainer, str]] = []
    claimed: list[str] = []
    undecided = 0
    for container in observed:
        if container.pool == pool_id or (not container.pool and container.container_id in claims):
            ours.append(container)
        elif container.pool:
            strangers.append(
                (container, f"it belongs to pool {container.pool[:12]}, not {pool_id[:12]}")
            )
        elif desired is None:
            undecided += 1
        elif container.key in placed:
            ours.append(container)
            claimed.append(container.container_id)
        else:
            why = (
                "it has no pool label (made before pools had an id) and this pool does not "
                f"place {container.app}.{container.slot} of template "
                f"{container.spec_hash[:8]} here"
            )
            strangers.append((container, why))
    return Sorted(ours, strangers, undecided, claimed)


def stranger_message(container: ObservedContainer, why: str) -> str:
    """What the host's event says of a container it leaves alone, and how to clear it."""
    return (
        f"container {container.name} ({container.container_id[:12]}, {container.state}) is "
        f"not this pool's: {why}. fleet leaves it alone: not adopted, not started, not "
        "counted as a replica. If nothing needs it, remove it on this host: "
        f"docker rm -f {container.name}"
    )


class Claims:
    """What the agent remembers of its pool between runs (``pool.json`` in its state
    dir): the pool's id, for the rounds before the control plane answers, and the
    pool-less containers it took as its own."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.pool_id: str | None = None
        self.ids: frozenset[str] = frozenset()
        if path is None:
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(saved, dict):
            pool = saved.get("pool_id")
            self.pool_id = pool if isinstance(pool, str) else None
            ids = saved.get("claimed")
            if isinstance(ids, list):
                self.ids = frozenset(i for i in ids if isinstance(i, str))

    def update(self, pool_id: str | None, claimed: Iterable[str], present: Iterable[str]) -> bool:
        """Take ``pool_id`` and the newly ``claimed`` ids, forget the claims of
        containers no longer ``present``; whether anything changed (then ``save``)."""
        # A host that moved to another pool keeps no claim made for the one before.
        kept = self.ids if pool_id == self.pool_id or self.pool_id is None else frozenset()
        ids = (kept | frozenset(claimed)) & frozenset(present)
        changed = ids != self.ids or pool_id != self.pool_id
        self.pool_id, self.ids = pool_id, ids
        return changed

    def save(self) -> None:
        """Write it (atomically); nothing without a state dir."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"pool_id": self.pool_id, "claimed": sorted(self.ids)}, sort_keys=True)
        )
        temporary.replace(self.path)
