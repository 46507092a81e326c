"""How the agent tells a replica is healthy: an http, tcp or exec check, with Docker's
interval, timeout, retries and start period."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Self

from pydantic import BeforeValidator, Field, model_validator

from fleet.spec._fields import Model, Words, has_space, schema, words_schema
from fleet.spec._quote import show as _show
from fleet.spec._units import DURATION_SCHEMA, seconds

__all__ = ["HealthCheck"]

_MAX_HEALTH_SECONDS = 3600.0


def _health_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"expected a container port from 1 to 65535, got {_show(value)}")
    return value


def _health_url(value: object) -> str:
    text = value if isinstance(value, str) else ""
    parsed = urllib.parse.urlsplit(text) if text and text.isprintable() else None
    try:
        port = parsed.port if parsed is not None else None
    except ValueError:
        port = None
    if parsed is None or parsed.scheme != "http" or port is None or has_space(text):
        raise ValueError(
            "expected an http URL with the container port, like http://:8080/healthz "
            f"(the host part is ignored: the check runs inside the container's network), "
            f"got {_show(value)}"
        )
    return text


# How often a check runs, and how long it may take.
_CheckSeconds = Annotated[
    float, BeforeValidator(seconds(0.1, _MAX_HEALTH_SECONDS)), schema(**DURATION_SCHEMA)
]


class HealthCheck(Model):
    """How the agent tells a replica is healthy: exactly one of ``http`` (a GET that must
    answer 2xx or 3xx), ``tcp`` (a port that must accept a connection) or ``exec`` (a
    command run in the container that must exit 0). http and tcp checks run from the
    agent, inside the container's network namespace; exec checks run as Docker's
    HEALTHCHECK. Like Docker's: ``retries`` failures in a row after ``start_period``
    make it unhealthy."""

    http: Annotated[
        str | None,
        BeforeValidator(lambda v: None if v is None else _health_url(v)),
        schema(type="string", pattern="^http://", examples=["http://:8080/healthz"]),
    ] = None
    tcp: Annotated[
        int | None,
        BeforeValidator(lambda v: None if v is None else _health_port(v)),
        schema(type="integer", minimum=1, maximum=65535, description="a container port"),
    ] = None
    exec: Annotated[
        Words, words_schema("a command run in the container; exit 0 means healthy", ["pg_isready"])
    ] = None
    interval: _CheckSeconds = 2.0
    timeout: _CheckSeconds = 1.0
    retries: int = Field(default=3, ge=1, le=100)
    start_period: Annotated[
        float, BeforeValidator(seconds(0, _MAX_HEALTH_SECONDS)), schema(**DURATION_SCHEMA)
    ] = 0.0

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of http, tcp or exec, got "
                + (" and ".join(given) if given else "none")
            )
        return self

    @property
    def kind(self) -> str:
        return "http" if self.http is not None else "tcp" if self.tcp is not None else "exec"

    def http_target(self) -> tuple[int, str]:
        """The container port and the path (with its query) an http check asks for."""
        assert self.http is not None
        parsed = urllib.parse.urlsplit(self.http)
        assert parsed.port is not None
        path = parsed.path or "/"
        return parsed.port, path + (f"?{parsed.query}" if parsed.query else "")
