"""``GetApps`` of every app lets the event loop turn between apps: after a restart the
first count of 50 apps of 2,000 replicas held the loop for over a second, every agent's
heartbeat waiting behind it (seen at 5,000 hosts as "the event loop has run none of the
last 1.0 s of probes")."""

from __future__ import annotations

import asyncio
from typing import Any

from fleet.controlplane.api import FleetService
from fleet.controlplane.auth import LocalCall
from fleet.pki.subjects import Identity, Kind, Role
from fleet.proto import fleet_pb2 as pb
from fleet.spec import load_documents
from fleet.store import ClusterState
from tests.unit.controlplane.builders import add_app, cluster


class _Informer:
    def __init__(self, state: ClusterState) -> None:
        self._state = state

    async def wait_synced(self) -> None:
        pass

    async def wait_for_revision(self, revision: int) -> None:
        pass

    def state(self) -> ClusterState:
        return self._state


def _service(apps: int) -> FleetService:
    state = cluster(("h1", 4.0, 2**30))
    for n in range(apps):
        [app] = load_documents(f"name: app{n}\nimage: img:v1\nreplicas: 2\n", "app.yaml")
        add_app(state, app)
    informer: Any = _Informer(state)
    return FleetService(None, informer, None, None)  # type: ignore[arg-type]


async def test_other_tasks_run_between_the_apps_of_one_get_apps() -> None:
    service = _service(apps=4)
    turns: list[int] = []
    counting = True

    async def other_task() -> None:
        while counting:
            turns.append(1)
            await asyncio.sleep(0)

    task = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    before = len(turns)
    call = LocalCall(Identity(kind=Kind.client, name="token:viewer", role=Role.viewer), "test")
    answer = await service.GetApps(pb.GetRequest(), call)
    during = len(turns) - before
    counting = False
    await task
    assert call.code is None
    assert [a.name for a in answer.apps] == ["app0", "app1", "app2", "app3"]
    assert during >= 3  # a turn between each two apps


async def test_get_apps_of_one_app_answers_it_alone() -> None:
    service = _service(apps=3)
    call = LocalCall(Identity(kind=Kind.client, name="token:viewer", role=Role.viewer), "test")
    answer = await service.GetApps(pb.GetRequest(name="app1"), call)
    assert call.code is None
    assert [a.name for a in answer.apps] == ["app1"]
