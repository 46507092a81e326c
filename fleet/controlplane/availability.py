"""When a container counts as available, and what is wrong with one that is not. Pure.

A replica's container is **available** once it has been healthy (or, without a health
check, running) for the app's ``update.min_ready``, as its agent reports it. Rollouts,
drains and the read side (``get apps``, endpoints, metrics) all judge containers here.

A container in trouble is told by a word for a column (``image-not-found``,
``crash-looping``) and a sentence; a container of a new revision in trouble fails its
rollout (``crash_reason``).
"""

from __future__ import annotations

from collections.abc import Mapping

from fleet._time import epoch
from fleet.store import ClusterState
from fleet.store.records import ContainerReport, SlotContainer

__all__ = ["CRASH_RESTARTS", "Observed", "crash_reason", "observe", "trouble"]

# A new revision's container restarted this often is crash-looping: the rollout fails.
CRASH_RESTARTS = 3


class Observed:
    """What the agents report of one app's containers, by (slot, revision, host), as
    one look at the state sees them (made for each look: it remembers what it worked
    out, and the reports must not change under it)."""

    def __init__(self, reports: Mapping[tuple[int, int, str], ContainerReport]) -> None:
        self.reports = reports
        # When each reported container became ready, by (slot, revision, host): a
        # rollout's step asks of every container several times (at 2,000 replicas an
        # app's plan was mostly parsing the same timestamps again).
        self._ready_at: dict[tuple[int, int, str], float | None] = {}

    def report(self, container: SlotContainer) -> ContainerReport | None:
        return self.reports.get((container.slot, container.revision, container.host))

    def available_at(self, container: SlotContainer, min_ready: float) -> float | None:
        """When the container is (or will be, if nothing changes) available; None if it
        is not on its way there (not running, unhealthy, or not reported)."""
        ready_at = self.ready_at(container.slot, container.revision, container.host)
        return None if ready_at is None else ready_at + min_ready

    def ready_at(self, slot: int, revision: int, host: str) -> float | None:
        """Since when the container of ``slot`` at ``revision`` on ``host`` is ready
        (healthy, or running without a check, and not crash-looping); None if it is not."""
        key = (slot, revision, host)
        try:
            return self._ready_at[key]
        except KeyError:
            found = self._ready_at[key] = _ready_at(self.reports.get(key))
            return found

    def available(self, container: SlotContainer, min_ready: float, now: float) -> bool:
        at = self.available_at(container, min_ready)
        return at is not None and at <= now


def _ready_at(report: ContainerReport | None) -> float | None:
    """Since when a reported container is ready; None if it is not on its way there."""
    if report is None or report.state != "running" or report.health not in ("", "healthy"):
        return None
    if crash_reason(report) is not None:
        return None  # crash-looping: up now, down again soon
    return epoch(report.ready_since) if report.ready_since else None


def observe(state: ClusterState, app: str) -> Observed:
    """The reports of ``app``'s containers from every connected host."""
    return Observed(state.reports_of(app))


def trouble(report: ContainerReport | None) -> tuple[str, str] | None:
    """What is wrong with a container, as a word for a column (``image-not-found``,
    ``crash-looping``) and a sentence; None when nothing is."""
    if report is None:
        return None
    where = f"replica {report.slot}"
    if report.state == "pull-failed":  # the message names the image, and what happened
        return report.reason or "pull-failed", report.message or "its image cannot be pulled"
    if report.state == "create-failed":
        return "create-failed", f"{where} cannot be created: {report.message}"
    if report.state == "refused":
        return "refused", f"{where} was refused by its host: {report.message}"
    if report.state == "held":
        return "held", f"{where} is held: {report.message}"
    if report.state == "failed":
        return "failed", f"{where} stopped for good: {report.message or 'restart limit reached'}"
    if report.health == "unhealthy":
        return "unhealthy", f"{where} is unhealthy: {report.message or 'its health check fails'}"
    if report.restarts >= CRASH_RESTARTS:
        return "crash-looping", (
            f"{where} is crash-looping ({report.restarts} restarts, exit code {report.exit_code})"
        )
    return None


def crash_reason(report: ContainerReport | None) -> str | None:
    """Why a container of a new revision counts as failed (the rollout fails), or None.
    A new image that cannot be pulled fails it at once, not at its progress deadline."""
    found = trouble(report)
    return None if found is None else found[1]
