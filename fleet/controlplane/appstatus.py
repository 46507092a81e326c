"""The read side of apps: what ``get apps``, ``rollout status``, ``endpoints`` and the
metrics show of an app's containers. Pure, but for ``CountsCache`` (``appcounts``), an
explicit memo that the control plane holds one of.
"""

from __future__ import annotations

from fleet.controlplane.appcounts import CountsCache, RolloutCounts, count_all
from fleet.controlplane.availability import observe, trouble
from fleet.controlplane.endpointcache import container_endpoints
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState
from fleet.store.records import RolloutRecord

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


def app_trouble(state: ClusterState, app: str, cache: CountsCache | None = None) -> tuple[str, str]:
    """Why an app's wanted containers are not all up: the commonest word among them,
    and its first sentence with a count (``("", "")`` when nothing is wrong). With
    ``cache``, from its tally's troubled slots."""
    stored = state.apps.get(app)
    if cache is not None and stored is not None:
        return cache.trouble(state, stored.value)
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


def rollout_counts(
    state: ClusterState, app: str, now: float, cache: CountsCache | None = None
) -> RolloutCounts:
    """``app``'s counts at ``now``; with ``cache``, only the slots that changed since
    the cache last counted the app are counted again (``appcounts``)."""
    stored = state.apps.get(app)
    if stored is None:
        return RolloutCounts(0, 0, 0, 0, 0)
    if cache is not None:
        return cache.counts(state, stored.value, now)
    return count_all(state, stored.value).counts(now)


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
            found += container_endpoints(app, container, host.value, report)
    return found
