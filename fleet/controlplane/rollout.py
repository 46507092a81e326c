"""Rollouts: how a new revision replaces the old one, gated on availability. Pure.

A replica is **available** once its container has been healthy (or, without a health
check, running) for the app's ``update.min_ready``, as its agent reports it. The
rollout step, run on every wake-up of the replica controller, moves each app towards
its current revision under two bounds (Kubernetes' Deployment rules):

- never more than ``replicas + max_surge`` containers: start-first replacements are
  started as the slot's ``next`` on a host the scheduler picks, and take the slot over
  (the old container then stops gracefully) only once they are available;
- never fewer than ``replicas - max_unavailable`` available: a replica is replaced in
  place (stop, then start) only while the budget allows, or when it is not available
  anyway.

The rollout's own record (``rollouts/<app>``) holds what must survive a restart of the
control plane: the target, the revision it started from (the one an automatic rollback
returns to), its state and when it last made progress. A rollout fails when a replica of
the new revision crashes or turns unhealthy, or when it makes no progress for
``progress_deadline``; with ``auto_rollback`` the app is pointed back at the revision it
started from, and that rollback runs under the same gates.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass

from fleet._time import epoch
from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppSpec
from fleet.store import ClusterState
from fleet.store.records import AppRecord, ContainerReport, ReplicaRecord

__all__ = [
    "CRASH_RESTARTS",
    "Instance",
    "Observed",
    "RolloutCounts",
    "app_trouble",
    "crash_reason",
    "endpoints",
    "instances",
    "observe",
    "revisions_in_use",
    "rollout_counts",
    "template_of",
    "trouble",
]

# A new revision's container restarted this often is crash-looping: the rollout fails.
CRASH_RESTARTS = 3


@dataclass(frozen=True)
class Instance:
    """One container a slot wants: the slot's own (``next=False``) or its replacement."""

    slot: int
    revision: int
    host: str
    next: bool


class Observed:
    """What the agents report of one app's containers, by (slot, revision, host)."""

    def __init__(self, reports: Mapping[tuple[int, int, str], ContainerReport]) -> None:
        self.reports = reports

    def report(self, instance: Instance) -> ContainerReport | None:
        return self.reports.get((instance.slot, instance.revision, instance.host))

    def available_at(self, instance: Instance, min_ready: float) -> float | None:
        """When the instance is (or will be, if nothing changes) available; None if it
        is not on its way there (not running, unhealthy, or not reported)."""
        report = self.report(instance)
        if report is None or report.state != "running" or report.health not in ("", "healthy"):
            return None
        if crash_reason(report) is not None:
            return None  # crash-looping: up now, down again soon
        since = epoch(report.ready_since) if report.ready_since else None
        return None if since is None else since + min_ready

    def available(self, instance: Instance, min_ready: float, now: float) -> bool:
        at = self.available_at(instance, min_ready)
        return at is not None and at <= now


def observe(state: ClusterState, app: str) -> Observed:
    """The reports of ``app``'s containers from every connected host."""
    return Observed(state.reports_of(app))


def instances(replica: ReplicaRecord) -> list[Instance]:
    own = [Instance(replica.slot, replica.revision, replica.host, next=False)]
    if replica.next is None:
        return own
    return [*own, Instance(replica.slot, replica.next.revision, replica.next.host, next=True)]


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


def app_trouble(state: ClusterState, app: str) -> tuple[str, str]:
    """Why an app's wanted containers are not all up: the commonest word among them,
    and its first sentence with a count (``("", "")`` when nothing is wrong)."""
    observed = observe(state, app)
    found: dict[str, list[str]] = {}
    for replica in state.replicas_of(app):
        for i in instances(replica):
            what = trouble(observed.report(i))
            if what is not None:
                found.setdefault(what[0], []).append(what[1])
    if not found:
        return "", ""
    word, texts = max(found.items(), key=lambda item: (len(item[1]), item[0]))
    count = f" ({len(texts)} replicas)" if len(texts) > 1 else ""
    return word, texts[0] + count


def template_of(current: AppSpec, revision_spec: AppSpec) -> AppSpec:
    """``current`` with the container template of ``revision_spec``: what a rollback or an
    undo writes, keeping the count, placement and update settings of today."""
    kept = {"name", "replicas", "constraints", "placement", "max_per_host", "update"}
    kept |= {"min_available", "mode", "completions", "parallelism", "backoff_limit"}
    kept.add("ttl_after_finished")
    template = {k: v for k, v in revision_spec.model_dump().items() if k not in kept}
    return AppSpec.model_validate({**current.model_dump(), **template})


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
        for i in instances(replica):
            total += 1
            report = observed.report(i)
            running += report is not None and report.state == "running"
            at = observed.available_at(i, min_ready)
            if at is not None:
                available_at.append(at)
            if i.revision == target:
                before = slots.get(i.slot)
                slots[i.slot] = (
                    at if before is None else (before if at is None else min(at, before))
                )
    return _CountsBasis(
        running,
        total,
        len(slots),
        sorted(available_at),
        sorted(at for at in slots.values() if at is not None),
    )


# app -> (what its basis was made from, the basis). ``fleet get apps`` and every
# /metrics scrape count every app: at 100,000 replicas a walk of them all took 2 s of
# the server's one thread, so each app's walk is kept until its records or reports
# change (the informer's change numbers); only the time is applied per call.
_bases: dict[str, tuple[object, _CountsBasis]] = {}


def rollout_counts(state: ClusterState, app: str, now: float) -> RolloutCounts:
    stored = state.apps.get(app)
    if stored is None:
        return RolloutCounts(0, 0, 0, 0, 0)
    changes = state.changes
    key = (changes.apps.get(app, 0), changes.reports.get(app, 0)) if changes else None
    found = _bases.get(app)
    if key is not None and found is not None and found[0] == key:
        basis = found[1]
    else:
        basis = _counts_basis(state, stored.value)
        if key is not None:
            _bases[app] = (key, basis)
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
        for i in instances(replica):
            report = observed.report(i)
            host = state.hosts.get(i.host)
            if report is None or host is None or not observed.available(i, min_ready, now):
                continue
            found.extend(
                pb.Endpoint(
                    app=app,
                    slot=i.slot,
                    host=i.host,
                    address=host.value.address,
                    host_port=port.host_port,
                    container_port=port.container_port,
                    protocol=port.protocol,
                    revision=i.revision,
                )
                for port in report.ports
            )
    return found


def revisions_in_use(state: ClusterState, app: str) -> set[int]:
    """Revisions that must not be pruned: run by a replica, or a rollback's way back."""
    used = {revision for r in state.replicas_of(app) for revision, _ in r.instances()}
    rollout = state.rollouts.get(app)
    if rollout is not None:
        used |= {rollout.value.revision, rollout.value.from_revision}
    return used
