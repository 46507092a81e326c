"""A session's outbox and wake-ups: messages in order to one taker, ``join`` until
what was put is sent, and an end that lets every waiter go (nothing sent after it)."""

from __future__ import annotations

import asyncio

import pytest

from fleet.controlplane._handlers import _encode
from fleet.controlplane.outbox import SessionOutbox, Wakeup
from fleet.proto import fleet_pb2 as pb


def _message(n: int) -> pb.ServerMessage:
    return pb.ServerMessage(desired=pb.DesiredSet(version=n))


async def test_messages_come_out_in_order_and_the_taker_waits_for_the_next() -> None:
    outbox = SessionOutbox()
    outbox.put_nowait(_message(1))
    await outbox.put(_message(2))
    assert [(await outbox.get()).desired.version for _ in range(2)] == [1, 2]  # type: ignore[union-attr]
    taker = asyncio.create_task(outbox.get())
    await asyncio.sleep(0)
    assert not taker.done()
    outbox.put_nowait(_message(3))
    message = await asyncio.wait_for(taker, 1)
    assert message is not None and message.desired.version == 3


async def test_join_waits_until_every_message_put_is_sent_for_every_waiter() -> None:
    outbox = SessionOutbox()
    await outbox.join()  # nothing put: at once
    outbox.put_nowait(_message(1))
    outbox.put_nowait(_message(2))
    waiters = [asyncio.create_task(outbox.join()) for _ in range(2)]
    cancelled = asyncio.create_task(outbox.join())
    await asyncio.sleep(0)
    cancelled.cancel()  # one waiter going away leaves the others waiting
    await outbox.get()
    outbox.task_done()
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    await outbox.get()
    outbox.task_done()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    with pytest.raises(asyncio.CancelledError):
        await cancelled


async def test_the_end_releases_the_taker_and_the_joiners_and_drops_what_is_left() -> None:
    outbox = SessionOutbox()
    taker = asyncio.create_task(outbox.get())
    await asyncio.sleep(0)
    outbox.end()
    assert await asyncio.wait_for(taker, 1) is None
    outbox = SessionOutbox()
    outbox.put_nowait(_message(1))
    joiner = asyncio.create_task(outbox.join())
    await asyncio.sleep(0)
    outbox.end()
    await asyncio.wait_for(joiner, 1)
    assert outbox.ended and outbox.empty() and await outbox.get() is None
    outbox.put_nowait(_message(2))  # after the end: nobody takes it, it is not kept
    assert outbox.empty()
    with pytest.raises(asyncio.QueueEmpty):
        outbox.get_nowait()


async def test_a_wakeup_wakes_its_waiter_and_stays_set_until_cleared() -> None:
    wake = Wakeup()
    waiter = asyncio.create_task(wake.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    wake.set()
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(wake.wait(), 1)  # still set: at once
    wake.clear()
    assert not wake.is_set()
    waiter = asyncio.create_task(wake.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    waiter.cancel()
    wake.set()  # the cancelled waiter's future is not set again
    assert wake.is_set()


def test_what_the_outbox_holds_serialized_is_sent_as_it_is() -> None:
    """A desired set waits serialized (``Outgoing``); the stream's serializer sends those
    bytes untouched and serializes a message."""
    message = pb.ServerMessage(desired=pb.DesiredSet(version=7, fingerprint="f"))
    data = message.SerializeToString()
    assert _encode(data) is data
    assert _encode(message) == data
    assert pb.ServerMessage.FromString(_encode(data)).desired.version == 7
