"""Held replicas: the desired containers this host cannot run now, and why.

A held replica's status says why instead of Docker's state: ``refused`` (this host's
policy), ``pull-failed`` (its image cannot be pulled), ``create-failed`` (dockerd
refuses to create it, again and again) or ``held`` (the control plane holds it, say
for a secret it withholds). A refusal or hold is said once, in the log and as an
event, not on every round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fleet.agent.events import EventQueue, own
from fleet.proto import fleet_pb2 as pb

__all__ = ["Held", "HeldReplicas", "ReplicaKey"]

log = logging.getLogger(__name__)

ReplicaKey = tuple[str, int, int]  # app, slot, revision


def replica_key(spec: pb.ContainerSpec) -> ReplicaKey:
    return (spec.app, spec.slot, spec.revision)


@dataclass(frozen=True)
class Held:
    """Why a desired container does not run: ``state`` is what its status says
    instead of Docker's (refused, pull-failed, create-failed, held)."""

    state: str
    reason: str
    message: str


class HeldReplicas:
    """The held replicas of one host, by (app, slot, revision)."""

    def __init__(self, events: EventQueue) -> None:
        self._events = events
        self.replicas: dict[ReplicaKey, Held] = {}

    def keep_only(self, wanted: set[ReplicaKey], present: set[ReplicaKey]) -> None:
        """Forget replicas no longer desired, and those that now have a container."""
        self.replicas = {k: v for k, v in self.replicas.items() if k in wanted and k not in present}

    def hold_as_the_control_plane_says(
        self, desired: list[pb.ContainerSpec], present: set[ReplicaKey]
    ) -> None:
        """Hold the replicas the control plane holds (the plan makes none of them) that
        have no container here; one it holds no longer is made this round."""
        for spec in desired:
            key = replica_key(spec)
            if not spec.held or key in present:
                if key in self.replicas and self.replicas[key].state == "held":
                    del self.replicas[key]
                continue
            held = Held("held", "held", spec.held[:1000])
            if self.replicas.get(key) != held:
                log.warning("not starting %s.%d: %s", spec.app, spec.slot, held.message)
                self._events.put(own("held", held.message, app=spec.app, slot=spec.slot))
            self.replicas[key] = held

    def refuse(self, key: ReplicaKey, refused: list[str]) -> None:
        """Hold a replica this host's policy refuses."""
        app, slot, _ = key
        message = f"refused by this host's policy: {', '.join(refused)}"
        held = Held("refused", "refused", message)
        if self.replicas.get(key) != held:
            log.warning("not starting %s.%d: %s", app, slot, message)
            self._events.put(own("refused", message, app=app, slot=slot))
        self.replicas[key] = held

    def pull_failed(self, key: ReplicaKey, reason: str, message: str) -> None:
        """Hold a replica whose image cannot be pulled (the pull says it once)."""
        self.replicas[key] = Held("pull-failed", reason, message)

    def pull_retried(self, key: ReplicaKey) -> None:
        """Its image is no longer known to fail: it may be made again."""
        if key in self.replicas and self.replicas[key].state == "pull-failed":
            del self.replicas[key]

    def create_failed(self, key: ReplicaKey, message: str) -> None:
        """Hold a replica dockerd refuses to create, again and again."""
        self.replicas[key] = Held("create-failed", "create-failed", message[:1000])

    def release(self, key: ReplicaKey) -> None:
        """Its container was made."""
        self.replicas.pop(key, None)

    def statuses(self) -> list[pb.ContainerStatus]:
        """What the heartbeat says of each held replica."""
        return [
            pb.ContainerStatus(
                app=app,
                slot=slot,
                revision=revision,
                state=held.state,
                reason=held.reason,
                message=held.message,
            )
            for (app, slot, revision), held in sorted(self.replicas.items())
        ]
