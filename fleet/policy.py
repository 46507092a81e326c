"""What containers may ask of a host: the cluster policy and each agent's own.

By default nothing: no privileged containers, no host network or PID namespace, no
added capabilities, no bind mounts of host paths. An admin widens the cluster policy
(``fleet policy set``), checked at apply; every agent checks again against its own
(``fleet agent --allow ...``), so a compromised control plane cannot take a host the
agent was not told to give. Both use ``violations`` below.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppSpec

__all__ = ["ALLOW_WORDS", "Policy", "Privileges", "violations"]

# The words of `--allow` on the CLI and the agent, and the policy flag each sets.
ALLOW_WORDS = {
    "privileged": "allow_privileged",
    "host-network": "allow_host_network",
    "host-pid": "allow_host_pid",
}


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_pid: bool = False
    allow_capabilities: list[str] = []  # "ALL" allows any
    allow_bind_mounts: list[str] = []  # host path prefixes, e.g. /var/log

    def to_proto(self) -> pb.Policy:
        return pb.Policy(**self.model_dump())

    @classmethod
    def from_proto(cls, message: pb.Policy) -> Policy:
        return cls(
            allow_privileged=message.allow_privileged,
            allow_host_network=message.allow_host_network,
            allow_host_pid=message.allow_host_pid,
            allow_capabilities=[c.upper() for c in message.allow_capabilities],
            allow_bind_mounts=list(message.allow_bind_mounts),
        )


@dataclass(frozen=True)
class Privileges:
    """What one container asks beyond an ordinary, unprivileged container."""

    privileged: bool = False
    host_network: bool = False
    host_pid: bool = False
    cap_add: tuple[str, ...] = ()
    bind_mounts: tuple[str, ...] = ()

    @classmethod
    def of_spec(cls, spec: AppSpec) -> Privileges:
        return cls(
            spec.privileged,
            spec.host_network,
            spec.host_pid,
            tuple(spec.cap_add),
            tuple(spec.bind_mounts()),
        )

    @classmethod
    def of_container(cls, spec: pb.ContainerSpec) -> Privileges:
        binds = tuple(v.split(":", 1)[0] for v in spec.volumes if v.startswith("/"))
        return cls(spec.privileged, spec.host_network, spec.host_pid, tuple(spec.cap_add), binds)


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def violations(asked: Privileges, policy: Policy) -> list[str]:
    """What ``asked`` wants that ``policy`` does not allow, one phrase each."""
    found = []
    if asked.privileged and not policy.allow_privileged:
        found.append("privileged")
    if asked.host_network and not policy.allow_host_network:
        found.append("host network")
    if asked.host_pid and not policy.allow_host_pid:
        found.append("host PID namespace")
    if "ALL" not in policy.allow_capabilities:
        found += [f"capability {c}" for c in asked.cap_add if c not in policy.allow_capabilities]
    found += [
        f"bind mount of {path}"
        for path in asked.bind_mounts
        if not any(_under(path, prefix) for prefix in policy.allow_bind_mounts)
    ]
    return found
