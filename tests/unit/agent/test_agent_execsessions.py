"""Exec sessions on the agent, against a fake connection: output stops at the window
until the control plane gives credit, input is written in order and acknowledged, the
exit code goes last, and a cancelled session hangs its command up."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable

from fleet.agent.execsessions import ExecSessions
from fleet.agent.runtime import ExecConnection, ObservedContainer
from fleet.execio import CHUNK, WINDOW
from fleet.proto import fleet_pb2 as pb


class FakeExec:
    """Output from a queue (None: the end), and a record of what was done to it."""

    tty = True

    def __init__(self) -> None:
        self.output: queue.Queue[bytes | None] = queue.Queue()
        self.written: list[bytes] = []
        self.calls: list[str] = []
        self.closed = threading.Event()

    def read(self) -> bytes:
        data = self.output.get()
        return b"" if data is None or self.closed.is_set() else data

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close_input(self) -> None:
        self.calls.append("close_input")

    def resize(self, rows: int, cols: int, *, first: bool = False) -> None:
        self.calls.append(f"resize {rows}x{cols}{' first' if first else ''}")

    def exit_code(self) -> int | None:
        return 7

    def hang_up(self) -> None:
        self.calls.append("hang_up")

    def close(self) -> None:
        self.closed.set()
        self.output.put(None)


class FakeRuntime:
    blocking = True

    def __init__(self, conn: FakeExec) -> None:
        self.conn = conn

    def exec_open(
        self, container_id: str, command: list[str], *, tty: bool, env: list[str]
    ) -> ExecConnection:
        self.conn.calls.append(f"open {container_id} {command} {env}")
        return self.conn


async def _find(app: str, slot: int) -> ObservedContainer | None:
    return ObservedContainer(
        container_id="c1", name="box.0.x", app=app, slot=slot, revision=1, spec_hash="x",
        restart="always", stop_grace=1, state="running", exit_code=0, oom_killed=False,
        started_at="", finished_at=None, ports=(),
    )  # fmt: skip


def _open(sessions: ExecSessions, sent: list[pb.ExecRelayOutput]) -> None:
    async def send(message: pb.ExecRelayOutput) -> None:
        sent.append(message)

    start = pb.ExecStart(
        app="box", slot=0, command=["sh"], tty=True, stdin=True, term="xterm",
        size=pb.TerminalSize(rows=30, cols=90),
    )  # fmt: skip
    sessions.handle(pb.ExecRelayInput(id="s1", open=start), send)


async def _until(predicate: Callable[[], object], what: str) -> None:
    """Poll ``predicate`` on the loop (the fake's threads set no event to await)."""
    deadline = time.monotonic() + 5.0
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_output_stops_at_the_window_until_credit_comes_then_the_exit_goes_last() -> None:
    conn = FakeExec()
    sessions, sent = ExecSessions(FakeRuntime(conn), _find), []  # type: ignore[arg-type]
    _open(sessions, sent)
    for _ in range(3 * WINDOW // CHUNK):
        conn.output.put(b"y" * CHUNK)
    await _until(lambda: sum(len(m.stdout) for m in sent) >= WINDOW, "a window of output")
    await asyncio.sleep(0.05)  # room for a wrong extra piece to show up
    assert sum(len(m.stdout) for m in sent) == WINDOW
    assert conn.output.qsize() > 0  # the rest waits in the command's pipe, not here
    conn.output.put(None)

    def passed_on() -> bool:  # the control plane passes everything on, as it comes
        total = sum(len(m.stdout) for m in sent)
        sessions.handle(pb.ExecRelayInput(id="s1", consumed=total), None)  # type: ignore[arg-type]
        return bool(sent[-1].HasField("exit"))

    await _until(passed_on, "the exit code")
    assert sent[0].started and sum(len(m.stdout) for m in sent) == 3 * WINDOW
    assert sent[-1].exit.code == 7
    assert conn.calls[:2] == ["open c1 ['sh'] ['TERM=xterm']", "resize 30x90 first"]
    assert "hang_up" not in conn.calls  # it ended by itself
    await _until(lambda: len(sessions) == 0, "the session to be forgotten")


async def test_input_is_written_in_order_and_acknowledged_and_cancel_hangs_up() -> None:
    conn = FakeExec()
    sessions, sent = ExecSessions(FakeRuntime(conn), _find), []  # type: ignore[arg-type]
    _open(sessions, sent)
    await _until(lambda: sent, "the start")
    for message in (
        pb.ExecRelayInput(id="s1", stdin=b"ls\r"),
        pb.ExecRelayInput(id="s1", resize=pb.TerminalSize(rows=5, cols=6)),
        pb.ExecRelayInput(id="s1", stdin=b"\x03"),
        pb.ExecRelayInput(id="s1", close_stdin=True),
    ):
        sessions.handle(message, None)  # type: ignore[arg-type]
    await _until(lambda: "close_input" in conn.calls, "the input to be written")
    assert conn.written == [b"ls\r", b"\x03"] and "resize 5x6" in conn.calls
    await _until(lambda: sent[-1].consumed == 3 + 64 + 1 + 64, "the acknowledgement")
    sessions.handle(pb.ExecRelayInput(id="s1", cancel=True), None)  # type: ignore[arg-type]
    await _until(lambda: conn.closed.is_set(), "the connection to close")
    assert "hang_up" in conn.calls and not any(m.HasField("exit") for m in sent)
    await _until(lambda: len(sessions) == 0, "the session to be forgotten")


async def test_input_beyond_the_window_ends_the_session() -> None:
    conn = FakeExec()
    sessions, sent = ExecSessions(FakeRuntime(conn), _find), []  # type: ignore[arg-type]
    _open(sessions, sent)
    await _until(lambda: sent, "the start")
    blocker = threading.Event()
    conn.write = lambda data: blocker.wait(5)  # type: ignore[method-assign]
    sessions.handle(pb.ExecRelayInput(id="s1", stdin=b"x" * WINDOW), None)  # type: ignore[arg-type]
    sessions.handle(pb.ExecRelayInput(id="s1", stdin=b"x"), None)  # type: ignore[arg-type]
    await _until(lambda: conn.closed.is_set(), "the session to end")
    blocker.set()
    assert "hang_up" in conn.calls
