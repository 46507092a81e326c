"""``ingress:``, how an app is reached from outside through the edge hosts (``fleet
agent --ingress``): HTTP by host name and path prefix, or a TCP port of its own.

Each route an app claims (``route_names``) is held by one app at a time: the control
plane refuses an apply that claims a route another app holds (``appchanges``)."""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import BeforeValidator, Field, model_validator

from fleet._names import DNS_LABEL_PATTERN
from fleet.spec._fields import Model, schema
from fleet.spec._quote import show as _show
from fleet.spec._units import DURATION_PATTERN, parse_duration

__all__ = ["HOST_NAME_PATTERN", "Ingress", "http_route", "tcp_route"]

# A lowercase DNS name, optionally a wildcard of one level: *.example.com.
HOST_NAME_PATTERN = rf"(?:\*\.)?{DNS_LABEL_PATTERN}(?:\.{DNS_LABEL_PATTERN})*"
_HOST_NAME = re.compile(HOST_NAME_PATTERN)
# A URL path as HTTP sends it (RFC 3986 pchar and '/'), without query or fragment.
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
# Each host name is a route claimed in the apply's one etcd transaction (a guard each):
# bounded, so an apply of a few apps stays within etcd's --max-txn-ops.
MAX_HOSTS = 32
MAX_PATH = 256
_HOST_TEXT = (
    "a lowercase DNS name like web.example.com (letters, digits, '-' and '.'; "
    "'*.' in front for every name under a domain)"
)


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, got {_show(value)}")
    return value


def _host_name(value: object) -> str:
    if isinstance(value, str) and value != value.lower() and _HOST_NAME.fullmatch(value.lower()):
        raise ValueError(f"expected a lowercase host name: write {value.lower()!r}")
    if not isinstance(value, str) or len(value) > 253 or not _HOST_NAME.fullmatch(value):
        raise ValueError(f"expected {_HOST_TEXT}, got {_show(value)}")
    return value


def _hosts(value: object) -> list[str] | None:
    if value is None:
        return None  # the app's name
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise ValueError(f"expected a host name or a non-empty list of them, got {_show(value)}")
    if len(names) > MAX_HOSTS:
        raise ValueError(
            f"expected at most {MAX_HOSTS} host names, got {len(names)}: route a domain's "
            "names with one '*.' name"
        )
    checked = [_host_name(name) for name in names]
    for i, name in enumerate(checked):
        if name in checked[:i]:
            raise ValueError(f"host {name!r} is listed twice")
    return checked


def _path(value: object) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not _PATH.fullmatch(value)
        or "//" in value
        or len(value) > MAX_PATH
    ):
        raise ValueError(
            "expected a path prefix starting with '/', like /api (no spaces, '?', '#' "
            f"or '//', at most {MAX_PATH} characters), got {_show(value)}"
        )
    # "/api/" and "/api" are one prefix: the route is the same, and so is its claim.
    return value.rstrip("/") or "/"


# The edge's wait for a replica's answer: as long as common proxies' defaults (nginx's
# proxy_read_timeout), shorter for apps whose answers are quick, so a request caught on
# a host that vanished is retried elsewhere sooner.
DEFAULT_TIMEOUT = 60.0
_MAX_TIMEOUT = 3600.0


def _timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration like 5s or 1m, got {_show(value)}")
    seconds = parse_duration(value)
    if not 0.1 <= seconds <= _MAX_TIMEOUT:
        raise ValueError(f"expected a duration from 100ms to 1h, got {_show(value)}")
    return seconds


def http_route(host: str, path: str) -> str:
    """The name of an HTTP route's claim: ``http:HOST/PATH``."""
    return f"http:{host}{path}"


def tcp_route(port: int) -> str:
    """The name of a TCP route's claim: ``tcp:PORT``."""
    return f"tcp:{port}"


class Ingress(Model):
    """How the edge hosts route to an app: HTTP requests for ``host`` (and under
    ``path``), or TCP connections to the edges' port ``tcp``, to the container port
    ``port`` of each available replica."""

    port: Annotated[
        int,
        BeforeValidator(_port),
        schema(
            type="integer",
            minimum=1,
            maximum=65535,
            description="the container port (tcp) the edges route to; if `ports` does not "
            "publish it, fleet publishes it on an ephemeral host port",
            examples=[8080],
        ),
    ]
    host: Annotated[
        list[str] | None,
        BeforeValidator(_hosts),
        schema(
            anyOf=[
                {"type": "string", "pattern": f"^{HOST_NAME_PATTERN}$"},
                {"type": "array", "items": {"type": "string", "pattern": f"^{HOST_NAME_PATTERN}$"}},
            ],
            description="the HTTP host names routed to the app (default: the app's name)",
            examples=["web.example.com", ["example.com", "*.example.com"]],
        ),
    ] = None
    path: Annotated[
        str | None,
        BeforeValidator(_path),
        schema(
            type="string",
            pattern="^/",
            description="only requests under this path prefix (default: every path)",
            examples=["/api"],
        ),
    ] = None
    tcp: Annotated[
        int | None,
        BeforeValidator(lambda v: None if v is None else _port(v)),
        schema(
            type="integer",
            minimum=1,
            maximum=65535,
            description="for an app that does not speak HTTP: the port the edges listen on "
            "for it (instead of host and path)",
            examples=[5432],
        ),
    ] = Field(default=None)
    timeout: Annotated[
        float,
        BeforeValidator(_timeout),
        schema(
            anyOf=[
                {"type": "number", "minimum": 0.1, "maximum": _MAX_TIMEOUT},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            description="how long an edge waits for a replica's answer; then an idempotent "
            "request is retried on another replica, any other gets 504 (default 60s)",
            examples=["5s", "2m"],
        ),
    ] = DEFAULT_TIMEOUT

    @model_validator(mode="after")
    def _tcp_alone(self) -> Self:
        if self.tcp is not None and (self.host is not None or self.path is not None):
            given = " and ".join(k for k in ("host", "path") if getattr(self, k) is not None)
            raise ValueError(
                f"tcp routes connections by port, not by {given}: remove {given}, or "
                "remove tcp for an HTTP route"
            )
        return self

    def hosts(self, app: str) -> list[str]:
        """The HTTP host names routed to ``app`` (its name when none is given)."""
        return list(self.host) if self.host is not None else [app]

    def route_path(self) -> str:
        """The HTTP path prefix; "/" for every path."""
        return self.path or "/"

    def route_names(self, app: str) -> list[str]:
        """The routes ``app`` claims, sorted: one per host name, or its TCP port."""
        if self.tcp is not None:
            return [tcp_route(self.tcp)]
        return sorted(http_route(host, self.route_path()) for host in self.hosts(app))
