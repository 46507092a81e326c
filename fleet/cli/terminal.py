"""The client's end of ``fleet exec -i`` / ``-it``: the local terminal in raw mode (so
Ctrl-C, Ctrl-D and every other key go to the command in the container as bytes, as
with ``docker exec -it`` and ``ssh``), its input and size changes streamed to the
control plane, the command's output written back as it comes, and the terminal put
back as it was whatever happens.

Three threads: gRPC's, which sends what ``_Input`` yields; one reading stdin, held
back once ``_STDIN_AHEAD`` reads are waiting (gRPC's flow control then holds the rest
in the terminal's own buffer); and the main one, which writes the output and takes
SIGWINCH (a resize is never held back behind input).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from types import FrameType

from fleet.client import FleetClient
from fleet.errors import InvalidArgument, Unavailable
from fleet.execio import CHUNK
from fleet.proto import fleet_pb2 as pb

__all__ = ["run_session", "terminal_size"]

_STDIN_AHEAD = 32  # reads of stdin waiting to be sent, at most
_READ = CHUNK  # a tty returns what was typed; a pipe, up to this
TIMEOUT_EXIT = 124  # as timeout(1)'s
_UNKNOWN_EXIT = 255  # the command's exit code could not be had (as ssh's own failures)


def terminal_size(fd: int) -> pb.TerminalSize:
    """The size of the terminal on ``fd`` (0x0 if it is none)."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return pb.TerminalSize()
    return pb.TerminalSize(rows=size.lines, cols=size.columns)


class _Input:
    """What goes to the server, in order: ExecStart, then input and resizes; None ends it."""

    def __init__(self, start: pb.ExecStart) -> None:
        self._start = start
        self._queue: queue.Queue[pb.ExecInput | None] = queue.Queue()
        self.room = threading.BoundedSemaphore(_STDIN_AHEAD)

    def __iter__(self) -> Iterator[pb.ExecInput]:
        yield pb.ExecInput(start=self._start)
        while (message := self._queue.get()) is not None:
            if message.WhichOneof("kind") == "stdin":
                self.room.release()
            yield message

    def stdin(self, data: bytes) -> None:
        self.room.acquire()  # blocks the reading thread while the server is behind
        self._queue.put(pb.ExecInput(stdin=data))

    def put(self, message: pb.ExecInput | None) -> None:
        self._queue.put(message)


def _read_stdin(fd: int, inputs: _Input) -> None:
    """Stdin to the server until it ends (then the command reads EOF)."""
    while True:
        try:
            data = os.read(fd, _READ)
        except OSError:
            data = b""
        if not data:
            inputs.put(pb.ExecInput(close_stdin=True))
            return
        inputs.stdin(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _raw(fd: int | None) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode (None: leave it), restored on the way out."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)  # TCSANOW: keep what was typed ahead
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_session(
    client: FleetClient,
    start: pb.ExecStart,
    *,
    announce: bool = False,
    timeout: float | None = None,
) -> int:
    """Run the session ``start`` describes; its command's exit code. Past ``timeout``
    seconds the session is cancelled, which hangs the command up (SIGHUP, as a closed
    terminal), and the exit code is 124, as timeout(1)'s."""
    stdin_fd, out_fd, err_fd = sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno()
    raw_fd = stdin_fd if start.tty and start.stdin and os.isatty(stdin_fd) else None
    if start.tty and start.stdin and raw_fd is None:
        raise InvalidArgument(
            "the input is not a terminal: -t needs one (drop -t to stream the input "
            "without a terminal)"
        )
    if start.tty:
        start.size.CopyFrom(terminal_size(stdin_fd if raw_fd is not None else out_fd))
        start.term = os.environ.get("TERM", "")
    inputs = _Input(start)
    call = client.exec_stream(iter(inputs))
    answers = iter(call)
    code: int | None = None
    previous: dict[int, object] = {}
    fired = threading.Event()
    timer = None
    if timeout is not None:

        def fire() -> None:
            fired.set()
            call.cancel()

        timer = threading.Timer(timeout, fire)
        timer.daemon = True
        timer.start()
    try:
        first = next(answers, None)  # ExecStarted, or the error says why not
        if first is None or first.WhichOneof("kind") != "started":
            raise Unavailable("the server ended the session before the command started")
        with _raw(raw_fd):
            if start.tty and raw_fd is not None:

                def resized(_signum: int, _frame: FrameType | None) -> None:
                    inputs.put(pb.ExecInput(resize=terminal_size(raw_fd)))

                previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resized)

            def terminated(signum: int, _frame: FrameType | None) -> None:
                raise SystemExit(128 + signum)  # through the finally: the terminal comes back

            previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, terminated)
            if start.stdin:
                reader = threading.Thread(
                    target=_read_stdin, args=(stdin_fd, inputs), name="stdin", daemon=True
                )
                reader.start()
            for answer in answers:
                kind = answer.WhichOneof("kind")
                if kind == "stdout":
                    _write_all(out_fd, answer.stdout)
                elif kind == "stderr":
                    _write_all(err_fd, answer.stderr)
                elif kind == "exit":
                    code = answer.exit.code
                    break
    except Exception:
        if not fired.is_set():
            raise
    finally:
        if timer is not None:
            timer.cancel()
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        inputs.put(None)
        call.cancel()
    if code is None and fired.is_set():
        print(f"fleet: the command ran past --timeout ({timeout:g}s): hung up", file=sys.stderr)
        return TIMEOUT_EXIT
    if code is None:
        raise Unavailable("the session ended without the command's exit code")
    if code < 0:
        print(
            "fleet: the command's exit code is unknown (its container stopped?)",
            file=sys.stderr,
        )
        return _UNKNOWN_EXIT
    return code
