"""The control plane's end of an exec session: it never queues more output than the
window (an agent that sends more ends the session), gives credit back as output is
passed on, holds input back until the agent has room, and hangs up on close."""

from __future__ import annotations

import asyncio

from fleet.controlplane.execrelay import ExecRelay
from fleet.controlplane.outbox import SessionOutbox
from fleet.execio import CHUNK, WINDOW
from fleet.proto import fleet_pb2 as pb


def _relay() -> tuple[ExecRelay, SessionOutbox, list[str]]:
    outbox = SessionOutbox()
    forgotten: list[str] = []
    return ExecRelay("s1", "h1", outbox, lambda: forgotten.append("s1")), outbox, forgotten


def _sent(outbox: SessionOutbox) -> list[pb.ExecRelayInput]:
    found = []
    while not outbox.empty():
        found.append(outbox.get_nowait().exec_input)
    return found


async def test_output_beyond_the_window_ends_the_session_and_the_agent_is_told() -> None:
    relay, outbox, forgotten = _relay()
    for _ in range(WINDOW // CHUNK):
        relay.deliver(pb.ExecRelayOutput(id="s1", stdout=b"x" * CHUNK))
    relay.deliver(pb.ExecRelayOutput(id="s1", stdout=b"one too many"))
    messages = [await relay.next_output() for _ in range(WINDOW // CHUNK + 1)]
    assert messages[-1].error == "host h1's agent sent more output than its window"
    relay.deliver(pb.ExecRelayOutput(id="s1", stdout=b"late"))  # ignored once over
    assert relay._output.empty()
    await relay.close()
    assert [m.WhichOneof("kind") for m in _sent(outbox)] == ["cancel"] and forgotten


async def test_credit_goes_back_as_output_is_passed_on() -> None:
    relay, outbox, _ = _relay()
    relay.deliver(pb.ExecRelayOutput(id="s1", stdout=b"abc"))
    relay.deliver(pb.ExecRelayOutput(id="s1", stderr=b"de"))
    first = await relay.next_output()
    await relay.passed_on(first)  # more queued, and little passed on: no ack yet
    assert _sent(outbox) == []
    await relay.passed_on(await relay.next_output())  # drained: the running total
    assert [m.consumed for m in _sent(outbox)] == [5]


async def test_input_waits_for_the_agent_to_have_room() -> None:
    relay, outbox, _ = _relay()
    await relay.send(pb.ExecRelayInput(stdin=b"x" * WINDOW))
    waiting = asyncio.create_task(relay.send(pb.ExecRelayInput(stdin=b"more")))
    await asyncio.sleep(0)
    assert not waiting.done() and len(_sent(outbox)) == 1
    relay.deliver(pb.ExecRelayOutput(id="s1", consumed=WINDOW))
    await waiting
    assert [m.stdin for m in _sent(outbox)] == [b"more"]


async def test_an_exit_ends_it_and_close_does_not_cancel_what_ended() -> None:
    relay, outbox, forgotten = _relay()
    relay.deliver(pb.ExecRelayOutput(id="s1", exit=pb.ExecExit(code=3)))
    assert (await relay.next_output()).exit.code == 3
    await relay.close()
    assert _sent(outbox) == [] and forgotten == ["s1"]


async def test_a_host_that_goes_away_wakes_input_waiting_for_room() -> None:
    relay, _, _ = _relay()
    await relay.send(pb.ExecRelayInput(stdin=b"x" * WINDOW))
    waiting = asyncio.create_task(relay.send(pb.ExecRelayInput(stdin=b"more")))
    await asyncio.sleep(0)
    relay.fail("host h1's agent disconnected", agent_gone=True)
    assert (await relay.next_output()).error == "host h1's agent disconnected"
    try:
        await waiting
    except EOFError:
        pass
    else:
        raise AssertionError("input kept waiting for a host that is gone")
