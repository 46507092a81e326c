"""The read side of apps: what ``get apps``, ``rollout status``, ``endpoints`` and the
metrics show of an app's containers. Pure, but for ``CountsCache``, an explicit memo
that the control plane holds one of.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from fleet.controlplane.availability import observe, trouble
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState
from fleet.store.records import AppRecord, RolloutRecord

__all__ = [
    "CountsCache",
    "RolloutCounts",
    "app_trouble",
    "endpoints",
    "revision_outcome",
    "rollout_counts",
    "rollout_word",
]


def revision_outcome(rollout: RolloutRecord | None, revision: int) -> tuple[str, str]:
    """What ``rollout history`` says of ``revision``'s rollout, and why, as far as the
    app's rollout record tells: the revision it rolls out (complete, progressing,
    paused, failed), the one it rolled back (rolled back, with the cause), and the one
    it came from (complete). ``("", "")`` for older ones."""
    if rollout is None:
        return "", ""
    if revision == rollout.rollback_of:
        return (
            "rolled back",
            f"{rollout.failure or 'it failed'}; rolled back to revision {rollout.revision}",
        )
    if revision == rollout.revision:
        if rollout.state == "failed":
            return "failed", rollout.failure or rollout.message
        if rollout.state == "progressing" and rollout.paused:
            return "paused", ""
        return rollout.state, ""
    if revision == rollout.from_revision:
        return "complete", ""
    return "", ""


def rollout_word(rollout: RolloutRecord | None, available: int, desired: int) -> str:
    """The ROLLOUT column of ``get apps``: the controller's state, but ``paused`` while
    a progressing rollout is paused, and ``degraded`` for a completed one with fewer
    replicas available than wanted (never ``complete`` for an app with 0 of 2 up)."""
    if rollout is None:
        return ""
    if rollout.state == "progressing" and rollout.paused:
        return "paused"
    if rollout.state == "complete" and available < desired:
        return "degraded"
    return rollout.state


def app_trouble(state: ClusterState, app: str) -> tuple[str, str]:
    """Why an app's wanted containers are not all up: the commonest word among them,
    and its first sentence with a count (``("", "")`` when nothing is wrong)."""
    observed = observe(state, app)
    found: dict[str, list[str]] = {}
    for replica in state.replicas_of(app):
        for container in replica.containers():
            what = trouble(observed.report(container))
            if what is not None:
                found.setdefault(what[0], []).append(what[1])
    if not found:
        return "", ""
    word, texts = max(found.items(), key=lambda item: (len(item[1]), item[0]))
    count = f" ({len(texts)} replicas)" if len(texts) > 1 else ""
    return word, texts[0] + count


@dataclass(frozen=True)
class RolloutCounts:
    """An app's replicas as ``fleet get apps`` and ``rollout status`` count them."""

    running: int  # containers running, of any revision, replacements included
    available: int  # available containers, of any revision
    updated: int  # slots with a container of the current revision
    updated_available: int  # slots with an available container of the current revision
    total: int  # containers wanted, replacements included


@dataclass(frozen=True)
class _CountsBasis:
    """What an app's counts are made of, whatever the time: the times (sorted) at which
    its containers, and its slots' current-revision containers, are available."""

    running: int
    total: int
    updated: int
    available_at: list[float]
    updated_available_at: list[float]


def _counts_basis(state: ClusterState, app: AppRecord) -> _CountsBasis:
    target, min_ready = app.revision, app.spec.update.min_ready
    observed = observe(state, app.spec.name)
    running = total = 0
    available_at: list[float] = []
    slots: dict[int, float | None] = {}  # updated slot -> when it is first available
    for replica in state.replicas_of(app.spec.name):
        for container in replica.containers():
            total += 1
            report = observed.report(container)
            running += report is not None and report.state == "running"
            at = observed.available_at(container, min_ready)
            if at is not None:
                available_at.append(at)
            if container.revision == target:
                before = slots.get(container.slot)
                slots[container.slot] = (
                    at if before is None else (before if at is None else min(at, before))
                )
    return _CountsBasis(
        running,
        total,
        len(slots),
        sorted(available_at),
        sorted(at for at in slots.values() if at is not None),
    )


class CountsCache:
    """Each app's walk of its replicas, kept until its records or reports change (the
    informer's change numbers); only the time is applied per call. ``fleet get apps``
    and every /metrics scrape count every app: at 100,000 replicas a walk of them all
    took 2 s of the server's one thread. One per control plane; deleted apps leave it."""

    def __init__(self) -> None:
        self._bases: dict[str, tuple[object, _CountsBasis]] = {}

    def basis(self, state: ClusterState, app: AppRecord) -> _CountsBasis:
        name = app.spec.name
        changes = state.changes
        if changes is None:  # a state that may be changed in place (a test's): no memo
            return _counts_basis(state, app)
        key = (changes.apps.get(name, 0), changes.reports.get(name, 0))
        found = self._bases.get(name)
        if found is not None and found[0] == key:
            return found[1]
        basis = _counts_basis(state, app)
        if len(self._bases) > 2 * len(state.apps) + 16:
            self._bases = {a: b for a, b in self._bases.items() if a in state.apps}
        self._bases[name] = (key, basis)
        return basis


def rollout_counts(
    state: ClusterState, app: str, now: float, cache: CountsCache | None = None
) -> RolloutCounts:
    """``app``'s counts at ``now``; with ``cache``, its walk is reused while unchanged."""
    stored = state.apps.get(app)
    if stored is None:
        return RolloutCounts(0, 0, 0, 0, 0)
    basis = cache.basis(state, stored.value) if cache else _counts_basis(state, stored.value)
    return RolloutCounts(
        basis.running,
        bisect.bisect_right(basis.available_at, now),
        basis.updated,
        bisect.bisect_right(basis.updated_available_at, now),
        basis.total,
    )


def endpoints(state: ClusterState, app: str, now: float) -> list[pb.Endpoint]:
    """host:port of every available container of ``app``, by slot."""
    stored = state.apps.get(app)
    if stored is None:
        return []
    min_ready = stored.value.spec.update.min_ready
    observed = observe(state, app)
    found: list[pb.Endpoint] = []
    for replica in state.replicas_of(app):
        for container in replica.containers():
            report = observed.report(container)
            host = state.hosts.get(container.host)
            if report is None or host is None or not observed.available(container, min_ready, now):
                continue
            found.extend(
                pb.Endpoint(
                    app=app,
                    slot=container.slot,
                    host=container.host,
                    address=host.value.address,
                    host_port=port.host_port,
                    container_port=port.container_port,
                    protocol=port.protocol,
                    revision=container.revision,
                )
                for port in report.ports
            )
    return found
