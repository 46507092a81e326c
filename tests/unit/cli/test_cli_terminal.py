"""The CLI's side of ``exec -i``: its input queue holds at most ``_STDIN_AHEAD`` reads of
stdin (the reading thread then waits), while resizes are never held back behind them."""

from __future__ import annotations

import threading

from fleet.cli.terminal import _STDIN_AHEAD, _Input
from fleet.proto import fleet_pb2 as pb


def test_stdin_waits_for_the_sender_but_a_resize_does_not() -> None:
    inputs = _Input(pb.ExecStart(app="box", command=["sh"]))
    sent = iter(inputs)
    assert next(sent).start.app == "box"
    for _ in range(_STDIN_AHEAD):
        inputs.stdin(b"k")
    blocked = threading.Thread(target=inputs.stdin, args=(b"last",), daemon=True)
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # held back: nothing was sent yet
    inputs.put(pb.ExecInput(resize=pb.TerminalSize(rows=9, cols=9)))  # does not wait
    assert next(sent).stdin == b"k"  # one sent: room for one more read
    blocked.join(5)
    assert not blocked.is_alive()
    rest = [next(sent) for _ in range(_STDIN_AHEAD + 1)]  # 31 keys, the resize, "last"
    assert rest[-2].resize.rows == 9 and rest[-1].stdin == b"last"
    inputs.put(None)
    assert list(sent) == []
