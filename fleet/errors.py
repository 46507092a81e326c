"""fleet's exceptions: callers catch these, never ``grpc.RpcError`` or etcd's errors.

    FleetError
    ├── InvalidArgument      a request is malformed (bad name, value out of range)
    │   └── SpecError        an app file or spec is invalid (carries every problem found)
    ├── NotFound             the named app, host or container does not exist
    ├── Conflict             someone else changed the state first; re-read and retry
    ├── FailedPrecondition   the state does not allow it now (a secret still in use)
    ├── PermissionDenied     the caller may not do this
    │   └── PolicyDenied     apps ask for what the cluster policy does not allow (every field)
    ├── Unavailable          the control plane, etcd or dockerd cannot be reached
    │   └── TlsRefused       reached, but TLS failed: the message says who refused what
    └── PullFailed           a host could not pull an image (``reason`` says how)

(``tests/unit/common/test_errors.py`` checks that this drawing is the classes' tree.) Each
maps to one gRPC status code (``GRPC_CODE_BY_ERROR``), so the server raises these and
the client re-raises the same class from the status it receives. The problems of a
``SpecError`` or ``PolicyDenied`` travel one by one in a trailer (``problems_trailer``),
so a client can put each at its place in the file it sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

__all__ = [
    "GRPC_CODE_BY_ERROR",
    "REQUEST",
    "Conflict",
    "FailedPrecondition",
    "FleetError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PolicyDenied",
    "PullFailed",
    "SpecError",
    "SpecProblem",
    "TlsRefused",
    "Unavailable",
    "details",
    "error_from_grpc",
    "grpc_code_for",
    "problems_trailer",
]


class FleetError(Exception):
    """Base of every error fleet raises on purpose."""


class InvalidArgument(FleetError):
    """A request is malformed: a bad name, a value out of range, a missing field."""


class NotFound(FleetError):
    """The named object does not exist."""


class Conflict(FleetError):
    """A compare-and-swap lost: the state changed since it was read."""


class FailedPrecondition(FleetError):
    """The request is valid but the current state does not allow it."""


class PermissionDenied(FleetError):
    """The caller is not allowed to do this."""


class Unavailable(FleetError):
    """A server fleet depends on (the control plane, etcd, dockerd) did not answer."""


class TlsRefused(Unavailable):
    """The server answered, but the TLS handshake failed: it refused this side's
    certificate, this side refused the server's, or one side spoke plaintext. The
    message says which, why, and which files were used. Only clients raise it (gRPC
    says UNAVAILABLE, as for a server that is not running)."""


class PullFailed(FleetError):
    """An image could not be pulled; ``reason`` is what kind of failure it was, as
    Docker tells them apart (Kubernetes' ErrImagePull, split):

    - ``image-not-found``: the registry answered; it has no such repository or tag;
    - ``unauthorized``: the registry wants credentials this host does not have;
    - ``registry-unreachable``: the registry did not answer;
    - ``pull-failed``: anything else (a disk full, a corrupt layer).
    """

    REASONS = ("image-not-found", "unauthorized", "registry-unreachable", "pull-failed")

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS, reason
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class SpecProblem:
    """One problem in an app file: where it is and what was expected."""

    source: str  # file name, or REQUEST for specs sent over the API
    document: int  # 1-based index of the YAML document in the file (0: the whole file)
    path: str  # dotted field path, e.g. "resources.memory" or "ports[1]"
    line: int | None  # 1-based line in the file, when known
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
        if self.document:
            where += f" (document {self.document})"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


# The source of problems in specs sent over the API: the document is the spec's 1-based
# place in the request.
REQUEST = "<request>"


class SpecError(InvalidArgument):
    """An app file or spec failed validation; ``problems`` lists every finding."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PolicyDenied(PermissionDenied):
    """Valid apps that ask for what the cluster policy does not allow; ``problems`` names
    every refused field of every app."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


GRPC_CODE_BY_ERROR: dict[type[FleetError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    SpecError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.ABORTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}

_ERROR_BY_GRPC_CODE: dict[grpc.StatusCode, type[FleetError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


MAX_DETAILS = 2000  # gRPC trailers are limited (16 KiB); echoed input must not blow them


def details(error: FleetError) -> str:
    """The status details a server sends for ``error``: bounded, whatever it quotes."""
    text = str(error)
    return text if len(text) <= MAX_DETAILS else text[:MAX_DETAILS] + "... (cut)"


def grpc_code_for(error: FleetError) -> grpc.StatusCode:
    """The status code a server answers ``error`` with (the closest class wins)."""
    for cls in type(error).__mro__:
        if cls in GRPC_CODE_BY_ERROR:
            return GRPC_CODE_BY_ERROR[cls]
    return grpc.StatusCode.UNKNOWN


# The errors whose problems a status carries, by its code.
_PROBLEM_ERRORS: dict[grpc.StatusCode, type[SpecError | PolicyDenied]] = {
    grpc.StatusCode.INVALID_ARGUMENT: SpecError,
    grpc.StatusCode.PERMISSION_DENIED: PolicyDenied,
}
PROBLEMS_KEY = "fleet-problems"
# Metadata is limited (grpc's soft limit is 8 KiB, the details included): the problems
# go compressed (their messages repeat), and beyond this the trailer ends with one
# problem saying how many more there were.
MAX_PROBLEM_BYTES = 4000
_MAX_UNPACKED = 1 << 20


def _pack(rows: list[list[object]]) -> str:
    return base64.b64encode(zlib.compress(json.dumps(rows).encode(), 9)).decode()


def problems_trailer(error: FleetError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata carrying ``error``'s problems (none for other errors): JSON,
    compressed, in base64 (metadata is ASCII), at most ``MAX_PROBLEM_BYTES``."""
    problems = error.problems if isinstance(error, SpecError | PolicyDenied) else []
    if not problems:
        return ()
    rows: list[list[object]] = [[p.source, p.document, p.path, p.line, p.message] for p in problems]
    packed = _pack(rows)
    if len(packed) > MAX_PROBLEM_BYTES:

        def cut(kept: int) -> str:
            more = f"... and {len(rows) - kept} more like these"
            return _pack([*rows[:kept], [rows[kept][0], 0, "", None, more]])

        low, high = 0, len(rows) - 1  # the most rows that fit with the last line
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (
                (middle, high) if len(cut(middle)) <= MAX_PROBLEM_BYTES else (low, middle - 1)
            )
        packed = cut(low)
    return ((PROBLEMS_KEY, packed),)


def _problems(trailers: Sequence[tuple[str, str | bytes]]) -> list[SpecProblem]:
    """The problems a status's trailer carries; none when it carries none or garbage."""
    for key, value in trailers:
        if key != PROBLEMS_KEY:
            continue
        try:
            packed = base64.b64decode(value, validate=True)
            rows = json.loads(zlib.decompressobj().decompress(packed, _MAX_UNPACKED))
            return [
                SpecProblem(str(s), int(d), str(p), None if n is None else int(n), str(m))
                for s, d, p, n, m in rows
            ]
        except (ValueError, TypeError, binascii.Error, zlib.error):
            return []
    return []


def error_from_grpc(
    code: grpc.StatusCode, details: str, trailers: Sequence[tuple[str, str | bytes]] | None = ()
) -> FleetError:
    """The fleet error a client raises for a failed call: with its problems one by one
    when the status carries them (a ``SpecError`` or ``PolicyDenied``)."""
    problems = _problems(trailers or ())
    if problems and code in _PROBLEM_ERRORS:
        return _PROBLEM_ERRORS[code](problems)
    return _ERROR_BY_GRPC_CODE.get(code, FleetError)(details or code.name)
