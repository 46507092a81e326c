"""fleet's exceptions: callers catch these, never ``grpc.RpcError`` or etcd's errors.

    FleetError
    ├── SpecError            an app file or spec is invalid (carries every problem found)
    ├── InvalidArgument      a request is malformed (bad name, value out of range)
    ├── NotFound             the named app, host or container does not exist
    ├── Conflict             someone else changed the state first; re-read and retry
    ├── FailedPrecondition   the state does not allow it now (a secret still in use)
    ├── PermissionDenied     the caller may not do this
    ├── Unavailable          the control plane, etcd or dockerd cannot be reached
    └── PullFailed           a host could not pull an image (``reason`` says how)

Each maps to one gRPC status code (``GRPC_CODE_BY_ERROR``), so the server raises these
and the client re-raises the same class from the status it receives.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

__all__ = [
    "GRPC_CODE_BY_ERROR",
    "Conflict",
    "FailedPrecondition",
    "FleetError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PullFailed",
    "SpecError",
    "SpecProblem",
    "Unavailable",
    "details",
    "error_from_grpc",
    "grpc_code_for",
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

    source: str  # file name, or "<request>" for specs sent over the API
    document: int  # 1-based index of the YAML document in the file
    path: str  # dotted field path, e.g. "resources.memory" or "ports[1]"
    line: int | None  # 1-based line in the file, when known
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
        where += f" (document {self.document})"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class SpecError(InvalidArgument):
    """An app file or spec failed validation; ``problems`` lists every finding."""

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


def error_from_grpc(code: grpc.StatusCode, details: str) -> FleetError:
    """The fleet error a client raises for a failed call."""
    return _ERROR_BY_GRPC_CODE.get(code, FleetError)(details or code.name)
