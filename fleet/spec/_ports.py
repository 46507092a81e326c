"""Published ports, written like docker's ``-p`` (``[HOST:]CONTAINER[/PROTOCOL]``), and the
rule that one app publishes each host port, and maps each container port, once."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from fleet.spec._fields import Model, schema
from fleet.spec._quote import show as _show

__all__ = ["PortItem", "PortSpec", "duplicate_ports"]

_PORT = re.compile(r"(?:([0-9]+):)?([0-9]+)(?:/([A-Za-z]+))?")
_PORT_PATTERN = r"^([0-9]{1,5}:)?[0-9]{1,5}(/(tcp|udp))?$"


class PortSpec(Model):
    """A published port, written like docker's ``-p``: ``[HOST:]CONTAINER[/PROTOCOL]``."""

    host_port: int = Field(default=0, ge=0, le=65535, description="0: an ephemeral host port")
    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: object) -> object:
        if isinstance(data, int) and not isinstance(data, bool):
            data = str(data)
        if isinstance(data, dict | PortSpec):
            return data
        match = _PORT.fullmatch(data.strip()) if isinstance(data, str) else None
        if match is None:
            raise ValueError(
                "expected a port like 8080, 80:8080 or 9000/udp ([HOST:]CONTAINER[/PROTOCOL]), "
                f"got {_show(data)}"
            )
        host, container, protocol = int(match[1] or 0), int(match[2]), (match[3] or "tcp")
        if protocol.lower() not in ("tcp", "udp"):
            raise ValueError(f"expected protocol tcp or udp, got {protocol!r} in {data!r}")
        if not 1 <= container <= 65535:
            raise ValueError(f"expected a container port from 1 to 65535, got {container}")
        if host > 65535:
            raise ValueError(f"expected a host port from 1 to 65535, got {host}")
        return {"host_port": host, "container_port": container, "protocol": protocol.lower()}

    def __str__(self) -> str:
        text = str(self.container_port)
        if self.host_port:
            text = f"{self.host_port}:{text}"
        return text if self.protocol == "tcp" else f"{text}/{self.protocol}"


# An entry of an app's ``ports``, as users write it.
PortItem = Annotated[
    PortSpec, schema(anyOf=[{"type": "string", "pattern": _PORT_PATTERN}, {"type": "integer"}])
]


def duplicate_ports(ports: Sequence[PortSpec]) -> list[InitErrorDetails]:
    """An error at ``ports[i]`` for each port whose host port is already published, or
    whose container port already mapped, by an earlier entry."""
    errors: list[InitErrorDetails] = []
    hosts: dict[tuple[int, str], int] = {}
    containers: dict[tuple[int, str], int] = {}
    for i, port in enumerate(ports):
        host = (port.host_port, port.protocol)
        container = (port.container_port, port.protocol)
        if port.host_port and host in hosts:
            message = f"host port {port.host_port}/{port.protocol} is already published"
            earlier = hosts[host]
        elif container in containers:
            message = f"container port {port.container_port}/{port.protocol} is already mapped"
            earlier = containers[container]
        else:
            hosts.setdefault(host, i)
            containers[container] = i
            continue
        message += f" by ports[{earlier}]"
        errors.append(
            InitErrorDetails(
                type=PydanticCustomError("duplicate_port", message),
                loc=("ports", i),
                input=str(port),
            )
        )
    return errors
