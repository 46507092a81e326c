"""The hub that tells browsers what changed: one notice per change of a topic, live
usage (every heartbeat) held back to its slower pace."""

from __future__ import annotations

import asyncio
from typing import Any

from fleet.dashboard.live import ChangeHub, UsageHistory, app_usage
from fleet.store import ClusterState, Versioned
from fleet.store.informer import Subscription
from fleet.store.records import ResourceAmounts, StatusRecord
from tests.unit.dashboard.test_views import _changes


class _Informer:
    def __init__(self) -> None:
        self.subscription = Subscription()
        self.current = ClusterState(revision=1, changes=_changes())

    def subscribe(self) -> Subscription:
        self.subscription.notify()
        return self.subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        pass

    def state(self) -> ClusterState:
        return self.current

    def change(self, **changes: Any) -> None:
        self.current = ClusterState(revision=self.current.revision + 1, changes=_changes(**changes))
        self.subscription.notify()


async def _next(hub: ChangeHub, seen: int) -> list[str]:
    await asyncio.wait_for(hub.wait_past(seen), 5)
    return hub.changed_since(seen)


async def test_each_change_is_told_once_and_usage_at_its_own_pace() -> None:
    informer = _Informer()
    hub = ChangeHub(informer, UsageHistory())  # type: ignore[arg-type]
    task = asyncio.create_task(hub.run(min_interval=0, usage_interval=3600))
    try:
        assert await _next(hub, 0) == ["apps", "pool", "upgrade", "usage"]  # the first look
        seen = hub.sequence
        informer.change(hosts=7, status=5)  # a cordon, and a heartbeat
        assert await _next(hub, seen) == ["pool", "upgrade"]  # usage: sent an hour ago
        seen = hub.sequence
        informer.change(hosts=7, status=6)  # only heartbeats: nothing to tell yet
        informer.change(hosts=7, status=7, apps={"web": 9})
        assert await _next(hub, seen) == ["apps"]
        assert hub.sequence == seen + 1
    finally:
        task.cancel()


async def test_events_are_a_topic_of_their_own() -> None:
    hub = ChangeHub(_Informer(), UsageHistory())  # type: ignore[arg-type]
    await hub.publish(["events"])
    await hub.publish(["events"])
    assert hub.changed_since(0) == ["events"] and hub.changed_since(2) == []
    await hub.publish([])  # nothing changed: no notice
    assert hub.sequence == 2


def test_app_usage_sums_each_apps_containers_over_hosts() -> None:
    state = ClusterState(revision=1)
    for host, usage in (
        ("h1", {"web/0/1": (0.5, 100), "db/0/1": (1.0, 7)}),
        ("h2", {"web/1/1": (0.25, 50)}),
    ):
        record = StatusRecord(
            host_id=host,
            reported_at="t",
            applied_version=1,
            usage=ResourceAmounts(cpu=0, memory=0),
            container_usage=usage,
        )
        state.status[host] = Versioned(record, 1)
    assert app_usage(state) == {"web": (0.75, 150), "db": (1.0, 7)}
