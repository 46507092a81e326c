"""The agent's outbox to the control plane: events taken for a stream that broke go
back to the front of the queue, for the next stream."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.events import EventQueue
from fleet.agent.held import HeldReplicas
from fleet.agent.restarts import RestartBook
from fleet.agent.session import EdgeTables, Outbox, os_facts, reconnect_backoff
from fleet.agent.state import HostState
from fleet.proto import fleet_pb2 as pb


async def test_events_a_broken_stream_did_not_send_go_back_first_in_line() -> None:
    queue = EventQueue()
    outbox = Outbox(queue)
    await outbox.put(pb.AgentMessage(register=pb.Register(host_id="h1")))
    for kind in ("a", "b"):
        queue.put(pb.Event(kind=kind))
    sender = asyncio.create_task(outbox.send_events())
    messages = outbox.messages()
    sent = [await anext(messages), await anext(messages)]  # the stream sends these two
    assert [m.WhichOneof("kind") for m in sent] == ["register", "events"]
    queue.put(pb.Event(kind="c"))
    await asyncio.sleep(0)  # the sender moves "c" into the outbox...
    await outbox.put(pb.AgentMessage(heartbeat=pb.Heartbeat()))
    queue.put(pb.Event(kind="d"))
    await asyncio.sleep(0)  # ... and "d"; then the stream breaks
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)
    queue.put(pb.Event(kind="e"))  # raised after the stream broke
    outbox.close()
    assert [e.kind for e in queue.take()] == ["c", "d", "e"]


async def test_a_closed_outbox_with_nothing_unsent_gives_nothing_back() -> None:
    queue = EventQueue()
    outbox = Outbox(queue)
    await outbox.put(pb.AgentMessage(heartbeat=pb.Heartbeat()))
    outbox.close()
    assert queue.take() == [] and not queue.ready.is_set()


def test_os_facts_read_the_os_release_file(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n# comment\n')
    assert os_facts(release) == {
        "os_name": "Debian GNU/Linux",
        "os_version": "12",
        "os_id": "debian",
    }
    assert os_facts(tmp_path / "missing") == {}


def test_edge_tables_are_handed_on_unless_older_but_the_first_of_a_stream() -> None:
    got: list[int] = []
    tables = EdgeTables(lambda config: got.append(config.version))
    for version in (10, 12, 11, 12, 13):  # 11: from a server that lags behind
        tables.take(pb.EdgeConfig(version=version))
    assert got == [10, 12, 12, 13]
    tables.new_stream()  # another server, counting from its own state
    tables.take(pb.EdgeConfig(version=5))
    tables.take(pb.EdgeConfig(version=4))
    assert got == [10, 12, 12, 13, 5]
    assert EdgeTables(None).take(pb.EdgeConfig(version=1))  # not an edge: nothing to call


async def test_the_first_heartbeat_waits_for_the_first_listing_but_not_for_ever() -> None:
    """A heartbeat before the agent listed its containers would report none (a
    restarted edge agent's own replicas left the table for a second: ingress e2e)."""
    state = HostState(events=EventQueue(), held=HeldReplicas(EventQueue()), restarts=RestartBook())
    assert not await state.wait_listed(0.05)  # dockerd not answering: go on, be heard
    waiting = asyncio.create_task(state.wait_listed(5.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    state.listed.set()  # the reconcile loop's first listing
    assert await waiting


def test_reconnect_backoff_doubles_to_its_cap_and_waits_a_jittered_share() -> None:
    """The backoff doubles up to the cap whatever is drawn; the wait is the drawn share."""
    delay, waits, delays = 0.2, [], []
    for draw in (0.0, 0.5, 0.999, 0.25, 0.5, 0.5, 0.5, 0.1):
        wait, delay = reconnect_backoff(delay, 10.0, draw)
        waits.append(round(wait, 3))
        delays.append(round(delay, 3))
    assert delays == [0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]
    assert waits == [0.0, 0.2, 0.799, 0.4, 1.6, 3.2, 5.0, 1.0]


@given(st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=30))
def test_property_reconnect_waits_stay_within_the_backoff(draws: list[float]) -> None:
    """Every wait lies in [0, backoff] and never beyond the cap; the backoff never shrinks."""
    delay = 0.2
    for draw in draws:
        wait, after = reconnect_backoff(delay, 10.0, draw)
        assert 0.0 <= wait <= delay <= 10.0
        assert delay <= after <= 10.0
        delay = after


def test_agents_cut_off_together_come_back_spread_out() -> None:
    """A hundred agents that lost their streams at once, drawing their own jitter, do not
    retry at one instant: their first tries spread over the first backoff."""
    rng = random.Random(7)
    waits = sorted(reconnect_backoff(0.2, 10.0, rng.random())[0] for _ in range(100))
    assert waits[0] < 0.02 and waits[-1] > 0.18
    assert len({round(w, 2) for w in waits}) > 15


async def test_a_closed_outbox_ends_what_the_stream_sends() -> None:
    """gRPC's sender of a stream the server ended waits on ``messages`` until it ends."""
    outbox = Outbox(EventQueue())
    messages = outbox.messages()
    waiting = asyncio.create_task(anext(messages))
    await asyncio.sleep(0)
    outbox.close()
    with pytest.raises(StopAsyncIteration):
        await waiting


def beat(cpu: float) -> pb.AgentMessage:
    return pb.AgentMessage(heartbeat=pb.Heartbeat(usage=pb.Resources(cpu=cpu)))


async def test_a_heartbeat_waiting_to_be_sent_is_replaced_by_the_next_in_its_turn() -> None:
    """A stream slower than the heartbeats sends the newest, not a backlog of stale ones."""
    outbox = Outbox(EventQueue())
    await outbox.put_heartbeat(beat(1))
    await outbox.put(pb.AgentMessage(events=pb.EventBatch(events=[pb.Event(kind="a")])))
    await outbox.put_heartbeat(beat(2))
    await outbox.put_heartbeat(beat(3))
    messages = outbox.messages()
    first, second = await anext(messages), await anext(messages)
    assert first.heartbeat.usage.cpu == 3  # the newest, in the first one's turn
    assert [e.kind for e in second.events.events] == ["a"]
    await outbox.put_heartbeat(beat(4))  # sent: the next one waits its own turn
    assert (await anext(messages)).heartbeat.usage.cpu == 4
    outbox.close()
    with pytest.raises(StopAsyncIteration):
        await anext(messages)


async def test_a_heartbeat_that_waited_long_is_said_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outbox = Outbox(EventQueue(), clock=lambda: now[0])
    messages = outbox.messages()
    for waited in (1.0, 6.0, 7.0):  # the second and third both late: one warning
        await outbox.put_heartbeat(beat(waited))
        now[0] += waited
        await anext(messages)
    late = [r.getMessage() for r in caplog.records if "heartbeat waited" in r.getMessage()]
    assert late == [late[0]] and late[0].startswith("a heartbeat waited 6.0s to be sent")
    now[0] += 60
    await outbox.put_heartbeat(beat(0))
    now[0] += 8.0
    await anext(messages)
    late = [r.getMessage() for r in caplog.records if "heartbeat waited" in r.getMessage()]
    assert len(late) == 2 and late[1].startswith("a heartbeat waited 8.0s")


async def test_a_message_slow_to_be_sent_is_said(caplog: pytest.LogCaptureFixture) -> None:
    """gRPC asks for the next message once the last one is sent: the time between is how
    long the control plane's flow control held it (it had not read what came before)."""
    now = [0.0]
    outbox = Outbox(EventQueue(), clock=lambda: now[0])
    messages = outbox.messages()
    for message in (beat(1), pb.AgentMessage(events=pb.EventBatch())):
        await outbox.put(message)
    await anext(messages)
    now[0] += 6.5  # the first one's send took this long
    await anext(messages)
    [said] = [r.getMessage() for r in caplog.records]
    assert said.startswith("a message to the control plane took 6.5s to be sent")
