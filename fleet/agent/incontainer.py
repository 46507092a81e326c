"""The agent in a Docker container: which container it is, and whether it was started
so that it can see the host (the run line of the README's install section).

Health checks enter containers' network namespaces through ``/proc/PID/ns/net`` and
live usage reads ``/proc/PID/cgroup``, with the PIDs dockerd reports: both need the
host's PID namespace (``--pid host``). In a PID namespace of its own, a PID dockerd
reports names nothing, or worse one of the agent's own processes (a health check would
then probe the agent's own network), so that mistake stops the agent at its start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet.agent.dockererrors import DOCKER_ERRORS
from fleet.errors import FailedPrecondition, FleetError

__all__ = [
    "capabilities",
    "check_host_pid_namespace",
    "own_container_id",
    "read_own_container_id",
]

# Linux's capabilities by number (linux/capability.h), as Docker names them, up to
# AUDIT_READ: Docker 20.10 refuses PERFMON, BPF and CHECKPOINT_RESTORE by name.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ",
)  # fmt: skip

# Not the daemon's container (NotFound), or no daemon to ask (FleetError: Unavailable).
_UNKNOWN: tuple[type[BaseException], ...] = (FleetError, *DOCKER_ERRORS)
_CONTAINER_ID = re.compile(r"\b([0-9a-f]{64})\b")
# Docker bind-mounts these from DATA_ROOT/containers/ID/ into every container.
_DOCKER_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def own_container_id(mountinfo: str, cgroup: str) -> str | None:
    """The id of the Docker container this process runs in, from its mounts (the files
    Docker bind-mounts, whatever the cgroup version) or else its cgroup (v1, or v2 in
    the host's cgroup namespace); None outside a container."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in _DOCKER_FILES:
            found = re.search(r"/containers/([0-9a-f]{64})/", fields[3])
            if found:
                return found.group(1)
    found = _CONTAINER_ID.search(cgroup)
    return found.group(1) if found else None


def read_own_container_id(proc: Path = Path("/proc")) -> str | None:
    """``own_container_id`` of this process."""
    try:
        return own_container_id(
            (proc / "self/mountinfo").read_text(), (proc / "self/cgroup").read_text()
        )
    except OSError:
        return None


def _ancestors(proc: Path) -> list[int]:
    """This process and its parents, as this PID namespace numbers them."""
    chain, pid = [], os.getpid()
    while pid > 0 and pid not in chain:
        chain.append(pid)
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])  # the field after the state
    return chain


def check_host_pid_namespace(client: Callable[[], Any], proc: Path = Path("/proc")) -> None:
    """Raise ``FailedPrecondition`` when the agent runs in a container of the daemon of
    ``client()`` without the host's PID namespace. Outside a container, in another
    daemon's, or with the daemon away, there is nothing to check."""
    container_id = read_own_container_id(proc)
    if container_id is None:
        return
    try:
        init = int(client().api.inspect_container(container_id)["State"]["Pid"] or 0)
    except _UNKNOWN:
        return
    # The daemon's PID for the container's first process is one of ours only when both
    # count PIDs alike.
    if init and init not in _ancestors(proc):
        raise FailedPrecondition(
            f"the agent runs in container {container_id[:12]} without the host's PID "
            "namespace, so it cannot reach other containers' processes for health checks "
            "and live usage: run it with --pid host (see the README's install section)"
        )


def capabilities(status: str) -> list[str]:
    """The effective capabilities in a ``/proc/PID/status``, by Docker's names."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "CapEff":
            bits = int(value.strip(), 16)
            return [c for n, c in enumerate(CAPABILITIES) if bits >> n & 1]
    return []
