"""``GetApps`` of every app lets the event loop turn every ``TURN_SECONDS`` of counting:
after a restart the first count of 50 apps of 2,000 replicas held the loop for over a
second, every agent's heartbeat waiting behind it (seen at 5,000 hosts as "the event
loop has run none of the last 1.0 s of probes"). The apps after a turn are read from
the newest state."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from fleet.controlplane.api import FleetService, apps
from fleet.controlplane.auth import LocalCall
from fleet.pki.subjects import Identity, Kind, Role
from fleet.proto import fleet_pb2 as pb
from fleet.spec import load_documents
from tests.unit.controlplane.builders import StaticInformer, add_app, cluster


def _service(count: int) -> tuple[FleetService, StaticInformer]:
    state = cluster(("h1", 4.0, 2**30))
    for n in range(count):
        [app] = load_documents(f"name: app{n}\nimage: img:v1\nreplicas: 2\n", "app.yaml")
        add_app(state, app)
    informer = StaticInformer(state)
    handle: Any = informer
    return FleetService(None, handle, None, None), informer  # type: ignore[arg-type]


def _viewer() -> LocalCall:
    return LocalCall(Identity(kind=Kind.client, name="token:viewer", role=Role.viewer), "test")


async def test_other_tasks_run_between_the_apps_of_one_get_apps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(apps, "TURN_SECONDS", 0.0)  # every app counts as a slow one
    service, _ = _service(4)
    turns: list[int] = []
    counting = True

    async def other_task() -> None:
        while counting:
            turns.append(1)
            await asyncio.sleep(0)

    task = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    before = len(turns)
    call = _viewer()
    answer = await service.GetApps(pb.GetRequest(), call)
    during = len(turns) - before
    counting = False
    await task
    assert call.code is None
    assert [a.name for a in answer.apps] == ["app0", "app1", "app2", "app3"]
    assert during >= 3  # a turn between each two apps


async def test_the_apps_after_a_turn_are_read_from_the_newest_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(apps, "TURN_SECONDS", 0.0)
    service, informer = _service(4)
    newer = copy.copy(informer.state())
    newer.apps = {name: app for name, app in newer.apps.items() if name != "app2"}

    async def delete_app2() -> None:
        informer.current = newer

    swap = asyncio.create_task(delete_app2())  # runs at the GetApps' first turn
    call = _viewer()
    answer = await service.GetApps(pb.GetRequest(), call)
    await swap
    assert call.code is None
    assert [a.name for a in answer.apps] == ["app0", "app1", "app3"]


async def test_a_get_apps_that_counts_within_its_slice_does_not_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(apps, "TURN_SECONDS", 60.0)  # (a loaded machine may take 20 ms)
    service, _ = _service(3)
    turns: list[int] = []

    async def other_task() -> None:
        turns.append(1)

    task = asyncio.create_task(other_task())
    call = _viewer()
    answer = await service.GetApps(pb.GetRequest(), call)
    assert turns == []  # the answer came first
    await task
    assert [a.name for a in answer.apps] == ["app0", "app1", "app2"]
