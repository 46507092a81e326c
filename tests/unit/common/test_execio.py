"""The exec session's pure parts: the window of credit each direction keeps, what input
costs in it, and Docker's multiplexed framing as the agent reads it."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.dockerstream import STDERR, STDOUT, Demuxer, FramingError
from fleet.execio import CONTROL_COST, Credit, input_cost, split
from fleet.proto import fleet_pb2 as pb


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_credit_waits_for_room_and_a_consumed_total_opens_it() -> None:
    async def scenario() -> list[str]:
        credit = Credit(window=10)
        seen: list[str] = []
        await credit.take(6)
        await credit.take(4)  # exactly full

        async def sender() -> None:
            await credit.take(3)
            seen.append("sent")

        task = asyncio.create_task(sender())
        await asyncio.sleep(0)  # let it run until it waits
        assert not task.done() and credit.in_flight == 10
        credit.consumed(2)  # not enough room for 3
        await asyncio.sleep(0)
        assert not task.done()
        credit.consumed(1)  # an older total: ignored
        credit.consumed(3)
        await task
        assert credit.in_flight == 10 - 3 + 3
        return seen

    assert asyncio.run(scenario()) == ["sent"]


def test_credit_caps_a_total_beyond_what_was_sent_and_lets_a_big_piece_go_alone() -> None:
    async def scenario() -> None:
        credit = Credit(window=10)
        await credit.take(4)
        credit.consumed(1000)  # a lying receiver cannot open more than was used
        assert credit.in_flight == 0 and credit.acked == 4
        await credit.take(25)  # larger than the window, but nothing else in flight
        assert credit.in_flight == 25

    asyncio.run(scenario())


def test_a_closed_credit_wakes_its_waiter_with_eof() -> None:
    async def scenario() -> None:
        credit = Credit(window=1)
        await credit.take(1)
        waiter = asyncio.create_task(credit.take(1))
        await asyncio.sleep(0)
        credit.close()
        with pytest.raises(EOFError):
            await waiter

    asyncio.run(scenario())


def test_input_costs_its_bytes_and_control_messages_a_fixed_amount() -> None:
    assert input_cost(pb.ExecRelayInput(id="a", stdin=b"abc")) == 3
    assert input_cost(pb.ExecRelayInput(id="a", resize=pb.TerminalSize(rows=1))) == CONTROL_COST
    assert input_cost(pb.ExecRelayInput(id="a", close_stdin=True)) == CONTROL_COST
    assert input_cost(pb.ExecRelayInput(id="a", consumed=99)) == 0
    assert input_cost(pb.ExecRelayInput(id="a", cancel=True)) == 0


def test_split_bounds_every_piece() -> None:
    assert split(b"") == []
    assert split(b"abcde", 2) == [b"ab", b"cd", b"e"]


def test_demuxer_reads_frames_across_reads_and_keeps_streams_apart() -> None:
    stream = _frame(STDOUT, b"hello ") + _frame(STDOUT, b"world\n") + _frame(STDERR, b"oops\n")
    demux = Demuxer()
    got: list[tuple[int, bytes]] = []
    for i in range(0, len(stream), 5):  # reads that cut headers and payloads
        got.extend(demux.feed(stream[i : i + 5]))
    out = b"".join(p for s, p in got if s == STDOUT)
    err = b"".join(p for s, p in got if s == STDERR)
    assert (out, err) == (b"hello world\n", b"oops\n")
    assert not demux.partial
    # In one read, consecutive frames of one stream come as one piece.
    assert Demuxer().feed(stream) == [(STDOUT, b"hello world\n"), (STDERR, b"oops\n")]


def test_demuxer_refuses_what_is_not_its_framing_and_notices_a_cut_frame() -> None:
    with pytest.raises(FramingError, match="stream 7"):
        Demuxer().feed(b"\x07\x00\x00\x00\x00\x00\x00\x01x")
    demux = Demuxer()
    demux.feed(_frame(STDOUT, b"long payload")[:12])
    assert demux.partial


@given(st.lists(st.tuples(st.sampled_from([STDOUT, STDERR]), st.binary(max_size=40))), st.data())
def test_demuxer_gives_back_every_byte_whatever_the_reads(
    frames: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(_frame(s, p) for s, p in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    demux, got = Demuxer(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got.extend(demux.feed(stream[start:end]))
    for which in (STDOUT, STDERR):
        expected = b"".join(p for s, p in frames if s == which)
        assert b"".join(p for s, p in got if s == which) == expected
    assert not demux.partial
