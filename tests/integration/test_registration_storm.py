"""Registrations waiting for their turn hold no snapshot of the informer's state.

In a storm (5,000 hosts connecting, or reconnecting to a restarted control plane)
thousands of registrations wait for one of a few dozen turns. Each held the snapshot it
began with, and the state changes with every registration, so up to 150 snapshots were
alive at once, each with its own copies of the host tables. Here every turn is taken,
registrations wait, the state moves on, and the snapshot they began with must go.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

from fleet.controlplane.server import ControlPlane, ServerConfig
from fleet.proto import fleet_pb2 as pb
from fleet.store.records import ReplicaRecord, ResourceAmounts
from fleet.testing import EtcdServer, free_port
from fleet.testing.certs import TestPKI
from fleet.transport import Transport
from tests.helpers import eventually


def test_registrations_waiting_for_a_turn_hold_no_snapshot(
    etcd_server: EtcdServer, pki: TestPKI
) -> None:
    config = ServerConfig(
        etcd=[etcd_server.endpoint],
        transport=Transport(pki.server()),
        listen=f"127.0.0.1:{free_port()}",
        prefix="/t-registration-storm/",
    )

    async def scenario() -> None:
        async with ControlPlane(config) as plane:
            agents, informer = plane.agents, plane.informer
            await asyncio.wait_for(informer.wait_synced(), 10)
            capacity = pb.Resources(cpu=2, memory_bytes=1 << 30)
            async with contextlib.AsyncExitStack() as turns:
                for _ in range(agents._registering._at_once):  # every turn taken
                    await turns.enter_async_context(agents._registering.turn())
                began_with = weakref.ref(informer.state())
                waiting = [
                    asyncio.create_task(
                        agents._register(pb.Register(host_id=f"h{n}", capacity=capacity))
                    )
                    for n in range(5)
                ]
                slots = agents._registering._slots  # (an asyncio.Semaphore)
                await eventually(
                    lambda: len(slots._waiters or ()) == len(waiting), 5, "all five waiting"
                )
                # The state moves on: a write the informer shows.
                replica = ReplicaRecord(
                    app="web",
                    slot=0,
                    revision=1,
                    host="elsewhere",
                    resources=ResourceAmounts(cpu=0.1, memory=1 << 20),
                )
                written = await plane.etcd.put(plane.store.keys.replica("web", 0), replica.dump())
                await asyncio.wait_for(informer.wait_for_revision(written), 10)
                assert informer.state() is not began_with()

                def let_go() -> bool:
                    gc.collect()
                    return began_with() is None

                # (Other parts of the control plane let it go once they see the change.)
                await eventually(let_go, 10, "the snapshot the registrations began with let go")
                assert not any(task.done() for task in waiting)  # still waiting
            # Turns given back: each registers.
            registered = await asyncio.wait_for(asyncio.gather(*waiting), 20)
            assert sorted(host_id for host_id, _, _ in registered) == [f"h{n}" for n in range(5)]
            for n in range(5):
                assert await plane.etcd.get(plane.store.keys.host(f"h{n}")) is not None

    asyncio.run(scenario())
