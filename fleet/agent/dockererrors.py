"""How Docker's errors become fleet's: every call into dockerd goes through ``translate``
(and a pull through ``pull_failure``), so nothing the Docker SDK raises reaches the agent
as anything but a ``FleetError``.

docker-py raises ``APIError`` subclasses for answers of the daemon (by HTTP status),
plain ``DockerException`` subclasses for what it refuses itself, and requests' errors
(``OSError`` subclasses) when the daemon does not answer. Once an unwrapped
``docker.errors.NotFound`` from a pull of a mistyped tag ended the agent on every host
that tried it.
"""

from __future__ import annotations

import docker.errors
import requests.exceptions
from docker.utils import parse_repository_tag

from fleet.errors import (
    Conflict,
    FleetError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PullFailed,
    Unavailable,
)

__all__ = ["DOCKER_ERRORS", "pull_failure", "translate"]

# What a call into the Docker SDK may raise besides its result: docker-py's own errors,
# requests' (OSError) when the daemon is away, and a stream it could not parse.
DOCKER_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
    OSError,
    docker.errors.StreamParseError,
)

_INVALID = (
    docker.errors.InvalidArgument,
    docker.errors.InvalidRepository,
    docker.errors.InvalidVersion,
    docker.errors.NullResource,
)


def _explanation(error: BaseException) -> str:
    if isinstance(error, docker.errors.APIError) and error.explanation:
        return str(error.explanation)
    return str(error) or type(error).__name__


def translate(what: str, error: BaseException) -> FleetError:
    """The fleet error for ``error``, raised by Docker while doing ``what``."""
    text = f"docker: {what}: {_explanation(error)}"[:2000]
    if isinstance(error, docker.errors.NotFound):
        return NotFound(text)
    if isinstance(error, docker.errors.APIError):
        status = error.status_code or 0
        if status == 409:
            return Conflict(text)
        if status in (401, 403):
            return PermissionDenied(text)
        if 400 <= status < 500:
            return InvalidArgument(text)
        return Unavailable(text)
    if isinstance(error, _INVALID):
        return InvalidArgument(text)
    return Unavailable(text)


# Fragments of dockerd's pull errors, by what they mean, as distribution (the registry)
# and dockerd word them. Looked for in this order: "unauthorized" and "no such host"
# come inside texts that also say "not found" or "denied".
_UNREACHABLE = (
    "connection refused",
    "no route to host",
    "no such host",
    "i/o timeout",
    "timeout",
    "network is unreachable",
    "connection reset",
    "tls: ",
    "server gave http response to https client",
    "dial tcp",
    "unexpected eof",
)
_UNAUTHORIZED = (
    "unauthorized",
    "authentication required",
    "no basic auth credentials",
    "denied: requested access",
    "access denied",
)
_NOT_FOUND = (
    "manifest unknown",
    "not found",
    "does not exist",
    "name unknown",
    "no such image",
)


def _registry(image: str) -> str:
    repository = str(parse_repository_tag(image)[0])
    first, sep, _ = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def pull_failure(image: str, error: BaseException) -> FleetError:
    """Why pulling ``image`` failed, as a ``PullFailed`` with its reason, or (when
    dockerd itself did not answer) ``Unavailable``: the registry is not to blame then."""
    if isinstance(error, requests.exceptions.RequestException | OSError) and not isinstance(
        error, docker.errors.APIError
    ):
        return translate(f"pull {image}", error)
    detail = _explanation(error)
    lowered = detail.lower()
    registry = _registry(image)
    if any(f in lowered for f in _UNAUTHORIZED):
        return PullFailed(
            "unauthorized",
            f"registry {registry} refused to let this host pull {image} ({detail[:300]}); "
            f"store credentials for it with `fleet registry login {registry} --username USER "
            "--password-stdin` (or check the login's user, password and --apps)",
        )
    if any(f in lowered for f in _UNREACHABLE):
        return PullFailed(
            "registry-unreachable",
            f"registry {registry} of image {image} did not answer ({detail[:300]})",
        )
    if isinstance(error, docker.errors.NotFound) or any(f in lowered for f in _NOT_FOUND):
        return PullFailed("image-not-found", f"image {image} not found in the registry")
    return PullFailed("pull-failed", f"pulling {image} failed: {detail[:300]}")
