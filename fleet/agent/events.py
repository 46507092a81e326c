"""The agent's events: Docker's, translated, and the agent's own (restarts, adoption,
refusals), queued while the control plane is away and sent when it is back."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fleet._time import now_iso
from fleet.agent.restarts import Backoff, RestartBook, restart_verdict
from fleet.agent.runtime import LABEL_APP, LABEL_SLOT, ObservedContainer
from fleet.proto import fleet_pb2 as pb

__all__ = ["EventQueue", "from_docker", "own", "restart_events"]

# Docker's container actions worth telling ops about ("health_status: healthy" included).
_DOCKER_ACTIONS = {"start", "die", "oom", "kill", "stop", "health_status"}


def from_docker(event: dict[str, Any]) -> pb.Event | None:
    """A fleet event for one of Docker's container events, None for the uninteresting."""
    action = str(event.get("Action") or event.get("status") or "")
    kind, _, detail = action.partition(":")
    if event.get("Type") != "container" or kind not in _DOCKER_ACTIONS:
        return None
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    nanos = int(event.get("timeNano") or 0)
    moment = datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else None
    exit_code = int(attributes.get("exitCode", 0) or 0)
    message = detail.strip() or (f"exit code {exit_code}" if kind == "die" else "")
    return pb.Event(
        time=moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if moment
        else now_iso(),
        app=attributes.get(LABEL_APP, ""),
        slot=int(attributes.get(LABEL_SLOT, "0") or 0),
        container_id=str((event.get("Actor") or {}).get("ID") or event.get("id") or ""),
        kind=kind,
        message=message,
        exit_code=exit_code,
    )


def own(
    kind: str, message: str, container: ObservedContainer | None = None, **fields: Any
) -> pb.Event:
    """An event the agent itself raises."""
    event = pb.Event(time=now_iso(), kind=kind, message=message, **fields)
    if container is not None:
        event.app, event.slot, event.container_id = (
            container.app,
            container.slot,
            container.container_id,
        )
    return event


def restart_events(
    observed: Iterable[ObservedContainer], restarts: RestartBook, backoff: Backoff, now: float
) -> list[tuple[tuple[str, int, str], pb.Event]]:
    """For each stopped container: the restart it waits for (with its delay), or that its
    restart limit is reached. Keyed so the agent raises each one once."""
    found = []
    for c in observed:
        verdict = restart_verdict(c, restarts, backoff, now)
        if verdict.action == "wait":
            kind, message = (
                "restart-scheduled",
                f"restart {verdict.restarts + 1} in {verdict.delay:g}s",
            )
        elif verdict.action == "limit":
            kind, message = (
                "restart-limit",
                f"failed: {verdict.restarts} restarts, the limit of {c.restart}",
            )
        else:
            continue
        event = own(kind, message, c, exit_code=c.exit_code)
        found.append(((c.container_id, verdict.restarts, kind), event))
    return found


class EventQueue:
    """A bounded queue of events waiting to be sent; the oldest go first when full.
    Events taken for a stream that then broke are given back (``give_back``)."""

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._events: deque[pb.Event] = deque(maxlen=limit)
        self.ready = asyncio.Event()

    def put(self, event: pb.Event) -> None:
        self._events.append(event)
        self.ready.set()

    def take(self, at_most: int = 500) -> list[pb.Event]:
        taken = [self._events.popleft() for _ in range(min(at_most, len(self._events)))]
        if not self._events:
            self.ready.clear()
        return taken

    def give_back(self, events: list[pb.Event]) -> None:
        """Events a broken stream did not deliver: first in line again. They are older
        than any queued since, so when the queue is full they are the ones dropped
        (the oldest first), as ``put`` drops the oldest."""
        room = self._limit - len(self._events)
        kept = events[len(events) - room :] if room < len(events) else events
        self._events.extendleft(reversed(kept))
        if self._events:
            self.ready.set()
