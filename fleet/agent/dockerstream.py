"""Docker's multiplexed stream, as an exec without a terminal answers on its hijacked
connection: frames of an 8-byte header (stream: 0 stdin, 1 stdout, 2 stderr; three
zero bytes; a big-endian 32-bit length) and that many bytes. With a terminal the
output is raw and needs none of this.

``Demuxer`` is fed whatever a read returned (a frame may span reads, and a read may
hold several frames) and hands back whole or partial payloads as they are known, so
a long frame is passed on piece by piece instead of being held whole.
"""

from __future__ import annotations

import struct

__all__ = ["STDERR", "STDOUT", "Demuxer", "FramingError"]

STDOUT = 1
STDERR = 2
_HEADER = struct.Struct(">BxxxL")


class FramingError(ValueError):
    """The bytes are not Docker's multiplexed stream."""


class Demuxer:
    def __init__(self) -> None:
        self._header = b""  # a header cut by the end of a read
        self._stream = 0  # of the frame being read
        self._left = 0  # its bytes still to come

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """(stream, payload) pieces in ``data``, in order; stdin frames are refused."""
        pieces: list[tuple[int, bytes]] = []
        view = memoryview(data)
        while view:
            if self._left:
                take = view[: self._left]
                self._left -= len(take)
                view = view[len(take) :]
                if pieces and pieces[-1][0] == self._stream:  # one piece per stream run
                    pieces[-1] = (self._stream, pieces[-1][1] + bytes(take))
                else:
                    pieces.append((self._stream, bytes(take)))
                continue
            need = _HEADER.size - len(self._header)
            self._header += bytes(view[:need])
            view = view[need:]
            if len(self._header) < _HEADER.size:
                break
            stream, length = _HEADER.unpack(self._header)
            self._header = b""
            if stream not in (STDOUT, STDERR):
                raise FramingError(f"unexpected stream {stream} in a multiplexed frame")
            self._stream, self._left = stream, length
        return pieces

    @property
    def partial(self) -> bool:
        """Whether the stream stopped inside a frame (a truncated stream)."""
        return bool(self._header) or self._left > 0
