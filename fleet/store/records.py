"""What fleet stores under each key: small pydantic records, serialised as JSON.

Records are frozen; a change is a new record written with a compare-and-swap on the
mod revision the old one was read at (see ``fleet.store.store``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from fleet.spec import AppSpec

__all__ = [
    "AppRecord",
    "ContainerReport",
    "HostRecord",
    "HostState",
    "LiveRecord",
    "PortBinding",
    "ReplicaRecord",
    "ResourceAmounts",
    "RevisionRecord",
    "SecretRecord",
    "StatusRecord",
    "TokenRecord",
]

HostState = Literal["ready", "cordoned", "draining", "drained", "maintenance"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


class ResourceAmounts(_Record):
    cpu: float = 0.0
    memory: int = 0  # bytes


class AppRecord(_Record):
    """The desired app: its spec, a generation that rises with every change of it, and
    the revision number of its current container template."""

    spec: AppSpec
    generation: int
    revision: int
    created_at: str
    updated_at: str


class RevisionRecord(_Record):
    """One container template of an app; a new one is made when the template changes."""

    app: str
    revision: int
    template_hash: str
    spec: AppSpec
    created_at: str


class ReplicaRecord(_Record):
    """A desired replica: which revision runs in slot ``slot`` and on which host.

    Reservations and fixed host ports are copied from the revision so that the
    scheduler can account for a host without joining records.
    """

    app: str
    slot: int
    revision: int
    host: str
    resources: ResourceAmounts
    host_ports: list[str] = []  # "8080/tcp" for every fixed host port it publishes


class HostRecord(_Record):
    """A registered host: what its agent reported when it last registered, and the
    state operators set (cordoned, draining, ...)."""

    host_id: str
    capacity: ResourceAmounts
    labels: dict[str, str] = {}
    facts: dict[str, str] = {}
    state: HostState = "ready"
    registered_at: str


class LiveRecord(_Record):
    """Bound to the host's lease: present exactly while its agent is connected."""

    server: str
    connected_at: str


class PortBinding(_Record):
    host_port: int
    container_port: int
    protocol: str


class ContainerReport(_Record):
    app: str
    slot: int
    revision: int
    spec_hash: str
    container_id: str
    name: str
    state: str
    exit_code: int = 0
    started_at: str = ""
    ports: list[PortBinding] = []
    message: str = ""
    cpu: float = 0.0  # live usage
    memory: int = 0
    memory_limit: int = 0


class SecretRecord(_Record):
    """A secret's value, sealed with the control plane's key (never stored in plain)."""

    name: str
    key_id: str
    nonce: str
    ciphertext: str
    version: int
    created_at: str
    updated_at: str


class TokenRecord(_Record):
    """A bearer token for the API: only the SHA-256 of its secret is kept."""

    id: str
    name: str
    role: str
    secret_sha256: str
    created_at: str


class StatusRecord(_Record):
    """What an agent last reported: its fleet containers and the host's usage."""

    host_id: str
    reported_at: str
    applied_version: int
    usage: ResourceAmounts
    containers: list[ContainerReport]
    images: list[str] = []
