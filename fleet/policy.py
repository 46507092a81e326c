"""What containers may ask of a host: the cluster policy and each agent's own.

By default nothing: no privileged containers, no host network or PID namespace, no
added capabilities, no bind mounts of host paths, no host devices. An admin widens the
cluster policy (``fleet policy set``), checked at apply; every agent checks again against its own
(``fleet agent --allow ...``), so a compromised control plane cannot take a host the
agent was not told to give. Both use ``violations`` below; the agent also looks at what
each bind mount leads to on its host (``host_violations``, see ``fleet.hostpaths``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from fleet.hostpaths import form_problem, symlink_problem
from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppSpec, device_host_path

__all__ = [
    "ALLOW_WORDS",
    "Policy",
    "Privileges",
    "host_violations",
    "prefix_warnings",
    "refused_fields",
    "violations",
]

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
    allow_devices: list[str] = []  # host device path prefixes, e.g. /dev/fuse or /dev/snd

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
            allow_devices=list(message.allow_devices),
        )


@dataclass(frozen=True)
class Privileges:
    """What one container asks beyond an ordinary, unprivileged container."""

    privileged: bool = False
    host_network: bool = False
    host_pid: bool = False
    cap_add: tuple[str, ...] = ()
    bind_mounts: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()  # host device paths

    @classmethod
    def of_spec(cls, spec: AppSpec) -> Privileges:
        return cls(
            spec.privileged,
            spec.host_network,
            spec.host_pid,
            tuple(spec.cap_add),
            tuple(spec.bind_mounts()),
            tuple(device_host_path(d) for d in spec.devices),
        )

    @classmethod
    def of_container(cls, spec: pb.ContainerSpec) -> Privileges:
        binds = tuple(v.split(":", 1)[0] for v in spec.volumes if v.startswith("/"))
        devices = tuple(device_host_path(d) for d in spec.options.devices)
        return cls(
            spec.privileged, spec.host_network, spec.host_pid, tuple(spec.cap_add), binds, devices
        )


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/") or "/"
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _path_by_words(path: str, prefixes: list[str], what: str) -> str | None:
    """Why a host ``path`` that is ``what`` ("bind mount of", "device") is refused by
    the allowed ``prefixes``, judged by their words; None if they allow it."""
    problem = form_problem(path)
    if problem:
        return f"{what} {path} (it {problem})"
    if not any(_under(path, prefix) for prefix in prefixes):
        return f"{what} {path}"
    return None


def _bind_by_words(path: str, policy: Policy) -> str | None:
    return _path_by_words(path, policy.allow_bind_mounts, "bind mount of")


def _device_by_words(path: str, policy: Policy) -> str | None:
    return _path_by_words(path, policy.allow_devices, "device")


def violations(asked: Privileges, policy: Policy) -> list[str]:
    """What ``asked`` wants that ``policy`` does not allow, one phrase each. Bind mounts
    are judged by their words: an absolute, normal path under an allowed prefix."""
    found = []
    if asked.privileged and not policy.allow_privileged:
        found.append("privileged")
    if asked.host_network and not policy.allow_host_network:
        found.append("host network")
    if asked.host_pid and not policy.allow_host_pid:
        found.append("host PID namespace")
    if "ALL" not in policy.allow_capabilities:
        found += [f"capability {c}" for c in asked.cap_add if c not in policy.allow_capabilities]
    found += filter(None, (_bind_by_words(path, policy) for path in asked.bind_mounts))
    found += filter(None, (_device_by_words(path, policy) for path in asked.devices))
    return found


def host_violations(asked: Privileges, policy: Policy) -> list[str]:
    """``violations``, and what this host's filesystem says against the bind mounts the
    words allow: a symlink in the path would take the mount out of its prefix. The
    agent's check before every create and start (it reads the filesystem)."""
    found = violations(asked, policy)
    for path in asked.bind_mounts:
        if _bind_by_words(path, policy) is None:
            problem = symlink_problem(path)
            if problem:
                found.append(
                    f"bind mount of {path} ({problem}; "
                    "bind its target explicitly if that is allowed)"
                )
    for path in asked.devices:
        # Docker follows a symlink to the device it names: /dev/allowed -> /dev/sda.
        if _device_by_words(path, policy) is None:
            problem = symlink_problem(path)
            if problem:
                found.append(f"device {path} ({problem}; name the device itself)")
    return found


def prefix_warnings(policy: Policy) -> list[str]:
    """The allowed prefixes that allow nothing on this host, and why: not in normal form,
    or a symlink among their parts (prefixes are compared as written, and an allowed
    bind mount has no symlink)."""
    found = []
    for prefix in policy.allow_bind_mounts:
        written = prefix.rstrip("/") or "/"
        form = form_problem(written)
        symlink = None if form else symlink_problem(written)
        if form:
            found.append(f"--allow-bind {prefix} allows nothing: it {form}")
        elif symlink:
            found.append(f"--allow-bind {prefix} allows nothing: {symlink}; allow its real path")
    return found


def refused_fields(spec: AppSpec, policy: Policy) -> list[tuple[str, str]]:
    """Every field of ``spec`` that ``policy`` refuses, as (field path, message): each
    asked for alone through ``violations``, so the two never disagree. The control
    plane's check at apply: the client puts each at its line."""
    flags = [
        ("privileged", spec.privileged, Privileges(privileged=True)),
        ("host_network", spec.host_network, Privileges(host_network=True)),
        ("host_pid", spec.host_pid, Privileges(host_pid=True)),
    ]
    # The word of `--allow` is the field's name with a dash (ALLOW_WORDS).
    asks = [(name, asked, f"--allow {name.replace('_', '-')}") for name, on, asked in flags if on]
    asks += [
        (f"cap_add[{i}]", Privileges(cap_add=(cap,)), f"--allow-cap {cap}")
        for i, cap in enumerate(spec.cap_add)
    ]
    asks += [
        (f"volumes[{i}]", Privileges(bind_mounts=(path,)), f"--allow-bind {path}")
        for i, volume in enumerate(spec.volumes)
        if volume.startswith("/")
        for path in [volume.split(":", 1)[0]]
    ]
    asks += [
        (f"devices[{i}]", Privileges(devices=(path,)), f"--allow-device {path}")
        for i, device in enumerate(spec.devices)
        for path in [device_host_path(device)]
    ]
    return [
        (
            field,
            f"app {spec.name!r}: {phrase} is not allowed by the cluster policy; an admin "
            f"can allow it with `fleet policy set {option}` (set replaces the whole "
            "policy: repeat what `fleet policy get` lists)",
        )
        for field, asked, option in asks
        for phrase in violations(asked, policy)
    ]
