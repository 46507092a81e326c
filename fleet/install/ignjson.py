"""The two encodings butane uses when it writes Ignition: data URLs and Go's JSON.

Both follow coreos/butane as of its v0.x releases: ``base/util/url.go`` (MakeDataURL)
for file contents, and Go's ``encoding/json`` (through clarketm/json) for the output.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

__all__ = ["data_url", "dumps"]

# RFC 2396's unreserved characters: what vincent-petithory/dataurl's Escape keeps as is.
_UNRESERVED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()")


def _escape(data: bytes) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in data)


def data_url(contents: bytes, *, compress: bool = True) -> tuple[str, str]:
    """``(source, compression)`` for ``contents`` as butane writes them: the shortest of
    percent-escaped, base64, and (when ``compress``) base64 of gzip, which then sets
    ``compression: gzip``; otherwise compression is "" (butane sets it explicitly, so a
    merged child config never inherits a parent's compression).

    gzip bytes differ from butane's (Go's deflate is not zlib's), so in a near tie the
    choice may differ; what Ignition writes to disk is the same either way."""
    opaque = "," + _escape(contents)
    b64 = ";base64," + base64.b64encode(contents).decode("ascii")
    if len(b64) < len(opaque):  # strictly shorter, as butane compares
        opaque = b64
    compression = ""
    if compress:
        gz = ";base64," + base64.b64encode(_gzip(contents)).decode("ascii")
        if len(gz) + len("gzip") < len(opaque):
            opaque, compression = gz, "gzip"
    return "data:" + opaque, compression


# Go's gzip header at BestCompression: no name, no mtime (so the output is the same from
# run to run), XFL 2 (slowest), OS 255 (unknown). Python's zlib would say OS 3 (Unix).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"


def _gzip(data: bytes) -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the header is ours
    body = deflate.compress(data) + deflate.flush()
    return _GZIP_HEADER + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


# Go's encoder escapes these inside strings (HTML safety); JSON readers see the same text.
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028"}
_GO_ESCAPES["\u2029"] = "\\u2029"


def dumps(config: dict[str, Any], *, pretty: bool) -> str:
    """``config`` as JSON the way butane prints it (``--pretty``: two-space indent),
    with the newline butane ends its output with. Key order is the caller's: build
    dicts in the order of Ignition's Go structs."""
    if pretty:
        text = json.dumps(config, indent=2, ensure_ascii=False)
    else:
        text = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
    # These characters can only occur inside strings, so replacing them is safe.
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text + "\n"
