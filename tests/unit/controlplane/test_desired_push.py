"""Tests of ``DesiredPush``: a host's sets follow the state, and changes that keep
coming go out together, no sooner than ``_PUSH_MIN_GAP`` after the host's last set."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest

from fleet.controlplane import desiredpush
from fleet.controlplane.desiredpush import DesiredPush
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, Informer
from fleet.store.informer import Subscription
from tests.helpers import eventually
from tests.unit.controlplane.builders import add_app, add_host, app_spec, put_replica

GAP = 0.6


class FakeInformer:
    """The informer's surface that ``DesiredPush`` uses, over a state the test changes."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self._subscriptions: list[Subscription] = []

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscriptions.append(subscription)
        subscription.notify()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.remove(subscription)

    def state(self) -> ClusterState:
        return self._state

    def changed(self) -> None:
        for subscription in self._subscriptions:
            subscription.notify()


def one_replica_state() -> ClusterState:
    state = ClusterState(revision=100)
    add_host(state, "h1")
    add_app(state, app_spec(1), revision=1)
    put_replica(state, 0, "h1")
    return state


async def received(
    outbox: asyncio.Queue[pb.ServerMessage], sets: list[tuple[float, set[int]]]
) -> None:
    """Take every set the host is sent, as its agent's stream does."""
    while True:
        message = await outbox.get()
        sets.append((time.monotonic(), {c.slot for c in message.desired.containers}))
        outbox.task_done()


async def test_changes_that_keep_coming_go_together_after_the_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(desiredpush, "_PUSH_MIN_GAP", GAP)
    state = one_replica_state()
    informer = FakeInformer(state)
    push = DesiredPush(cast(Informer, informer), None)
    outbox: asyncio.Queue[pb.ServerMessage] = asyncio.Queue(maxsize=1)
    sets: list[tuple[float, set[int]]] = []
    session = asyncio.create_task(push.run("h1", outbox))
    reader = asyncio.create_task(received(outbox, sets))
    try:
        await eventually(lambda: len(sets) == 1)
        assert sets[0][1] == {0}  # the first set goes at once
        # Four changes, one every 50 ms, right after the first set: the host gets
        # them in one set, not before the gap is over.
        for slot in range(1, 5):
            put_replica(state, slot, "h1")
            informer.changed()
            await asyncio.sleep(0.05)
        await eventually(lambda: len(sets) >= 2 and sets[-1][1] == {0, 1, 2, 3, 4})
        assert len(sets) == 2
        assert sets[1][0] - sets[0][0] >= GAP - 0.01
        # After a quiet spell longer than the gap, a change goes at once.
        await eventually(lambda: time.monotonic() - sets[1][0] > GAP)
        changed_at = time.monotonic()
        put_replica(state, 5, "h1")
        informer.changed()
        await eventually(lambda: len(sets) == 3)
        assert sets[2][1] == {0, 1, 2, 3, 4, 5}
        assert sets[2][0] - changed_at < GAP
    finally:
        session.cancel()
        reader.cancel()
        await asyncio.gather(session, reader, return_exceptions=True)
        await push.close()
