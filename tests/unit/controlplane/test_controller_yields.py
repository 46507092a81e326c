"""A controller round over many apps lets the event loop run between two apps' plans
(reads and heartbeats wait for one app's plan, not a whole round): a task that only
counts its turns gets one between every two plans. Counts and order, no timings."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from fleet.controlplane import controller as controller_module
from fleet.controlplane.controller import ReplicaController
from fleet.controlplane.planner import plan_replicas
from fleet.controlplane.slots import ReplicaPlan
from fleet.spec import load_documents
from fleet.store import ClusterState
from fleet.store.records import AppRecord, RevisionRecord
from tests.unit.controlplane.test_controller_settled import (
    LAYOUT,
    FakeEvents,
    FakeInformer,
    FakeStore,
    settled_cluster,
)

APPS = 12


def test_a_round_yields_to_the_loop_between_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = settled_cluster()
    for n in range(APPS):  # new apps: each round plans (and places) every one
        [spec] = load_documents(f"name: app{n}\nimage: img:v1\nreplicas: 2\n", "app.yaml")
        revision = RevisionRecord(
            app=spec.name,
            revision=1,
            template_hash=spec.template_hash(),
            spec=spec,
            created_at="t0",
        )
        cluster.put(LAYOUT.revision(spec.name, 1), revision)
        record = AppRecord(spec=spec, generation=1, revision=1, created_at="t0", updated_at="t0")
        cluster.put(LAYOUT.app(spec.name), record)
    order: list[str] = []

    def planning(state: ClusterState, app: str, *args: Any) -> ReplicaPlan:
        order.append(f"plan {app}")
        return plan_replicas(state, app, *args)

    monkeypatch.setattr(controller_module, "plan_replicas", planning)
    store = FakeStore(cluster)
    controller = ReplicaController(store, FakeInformer(cluster), FakeEvents())

    async def round_beside_a_reader() -> None:
        done = False

        async def reader() -> None:  # a request that needs the loop for a moment
            while not done:
                order.append("turn")
                await asyncio.sleep(0)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0)
        try:
            await controller.reconcile_all()
        finally:
            done = True
            await task

    asyncio.run(round_beside_a_reader())
    plans = [i for i, what in enumerate(order) if what.startswith("plan ")]
    assert len(plans) == APPS + 1  # every new app, and web
    assert len(store.commits) == APPS  # the new apps were placed
    # Between any two plans the reader had a turn: no two plans in one stretch.
    assert all("turn" in order[a + 1 : b] for a, b in itertools.pairwise(plans))
