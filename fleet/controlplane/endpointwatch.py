"""Following one app's endpoints, or every app's (``fleet endpoints [APP] --watch``,
``WatchEndpoints``): the whole list at once, then again each time it changes, with a
rising version.

Woken by the informer, not by polling: a change of the app's records, its reports or
the hosts recomputes the list, and a timer fires exactly when a running container is
due to become available (``ready_since + update.min_ready``), the one change that time
alone makes. A list equal to the last one sent is not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from fleet.controlplane.appstatus import endpoints
from fleet.controlplane.availability import observe
from fleet.controlplane.endpointcache import EndpointsCache
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, Informer

__all__ = ["endpoints_due", "endpoints_inputs", "endpoints_of", "watch_endpoints"]

_COALESCE = 0.05  # seconds a watch waits after a change before it looks (a burst: one look)
_LATE = 0.01  # past a container's due time, so that it counts as available then


def endpoints_of(
    state: ClusterState, app: str, now: float, cache: EndpointsCache | None = None
) -> list[pb.Endpoint]:
    """``app``'s endpoints at ``now``; every app's (by app name) when ``app`` is "".
    With ``cache``, an app's slots are worked out again only when they change."""
    find = cache.endpoints if cache is not None else endpoints
    if app:
        return find(state, app, now)
    return [e for name in sorted(state.apps) for e in find(state, name, now)]


def endpoints_inputs(state: ClusterState, app: str) -> object | None:
    """What ``endpoints_of(state, app, now)`` reads of ``state``, as the informer's
    change counters (None: the state does not say): the app's record and replicas, its
    reports, and the hosts (their addresses, their sessions); every app's for ""."""
    changes = state.changes
    if changes is None:
        return None
    if not app:
        return changes.hosts, dict(changes.apps), dict(changes.reports)
    return changes.hosts, changes.apps.get(app, 0), changes.reports.get(app, 0)


def endpoints_due(state: ClusterState, app: str, now: float) -> float | None:
    """The earliest time after ``now`` at which a desired container of ``app`` (of any
    app, for "") becomes available if nothing else changes; None when none is on its
    way."""
    if not app:
        return min(
            (at for name in state.apps if (at := endpoints_due(state, name, now)) is not None),
            default=None,
        )
    stored = state.apps.get(app)
    if stored is None:
        return None
    min_ready = stored.value.spec.update.min_ready
    observed = observe(state, app)
    due = [
        at
        for replica in state.replicas_of(app)
        for container in replica.containers()
        if (at := observed.available_at(container, min_ready)) is not None and at > now
    ]
    return min(due, default=None)


async def watch_endpoints(
    informer: Informer,
    app: str,
    clock: Callable[[], float] = time.time,
    cache: EndpointsCache | None = None,
) -> AsyncIterator[pb.EndpointList]:
    """``app``'s endpoint list now (every app's for ""), then each new one, until the
    caller stops iterating. An app deleted meanwhile has no endpoints: an empty list,
    and the watch goes on (it may be applied again)."""
    await informer.wait_synced()
    subscription = informer.subscribe()
    sent: list[pb.Endpoint] | None = None
    version = 0
    inputs: object = None
    due: float | None = None
    try:
        while True:
            state, now = informer.state(), clock()
            now_inputs = endpoints_inputs(state, app)
            woken_by_time = due is not None and now >= due
            if sent is None or woken_by_time or now_inputs is None or now_inputs != inputs:
                inputs = now_inputs
                found = endpoints_of(state, app, now, cache)
                due = endpoints_due(state, app, now)
                if found != sent:
                    version = max(state.revision, version + 1)
                    sent = found
                    yield pb.EndpointList(endpoints=found, version=version)
            timeout = None if due is None else max(0.0, due - clock()) + _LATE
            with contextlib.suppress(TimeoutError):  # the timer: a container due
                await asyncio.wait_for(subscription.wait(), timeout)
            await asyncio.sleep(_COALESCE)
    finally:
        informer.unsubscribe(subscription)
