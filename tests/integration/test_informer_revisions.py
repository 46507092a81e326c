"""The informer on a real etcd follows the watch's revision past the keys it leaves
out (the events): a caller that waits for etcd's current revision, which an event's
write may be, is answered at once, not at the state's next change. An apply that lost
a race to another waited 10 s this way once and failed with "this server's view of
etcd is behind"."""

from __future__ import annotations

import asyncio

from fleet.store import KeyLayout
from fleet.store._etcd import Etcd
from fleet.store.informer import Informer
from fleet.store.records import ReplicaRecord, ResourceAmounts
from fleet.testing import EtcdServer


def test_an_events_write_is_a_revision_the_informer_reaches(etcd_server: EtcdServer) -> None:
    layout = KeyLayout("/t-informer-revisions/")
    reserved = ResourceAmounts(cpu=0.1, memory=1 << 20)

    async def run() -> None:
        async with Etcd([etcd_server.endpoint]) as etcd:
            replica = ReplicaRecord(app="web", slot=0, revision=1, host="h1", resources=reserved)
            await etcd.put(layout.replica("web", 0), replica.dump())
            informer = Informer(etcd, layout)
            task = asyncio.create_task(informer.run())
            try:
                await asyncio.wait_for(informer.wait_synced(), 10)
                subscription = informer.subscribe()
                await subscription.wait()  # (a new subscriber's first look)
                # Only the events' folder changes: the state does not, the revision does.
                await etcd.put(layout.events() + b"0001-test", b"[]")
                current = await etcd.revision()
                await asyncio.wait_for(informer.wait_for_revision(current), 5)
                assert informer.revision == current
                assert informer.state().revision == current
                assert sorted(informer.state().replica_slots("web")) == [0]
                # Nothing the subscribers look at changed: they are not woken for it.
                assert not subscription._event.is_set()
                await etcd.put(
                    layout.replica("web", 1), replica.model_copy(update={"slot": 1}).dump()
                )
                await asyncio.wait_for(subscription.wait(), 5)
                assert sorted(informer.state().replica_slots("web")) == [0, 1]
            finally:
                task.cancel()

    asyncio.run(run())
