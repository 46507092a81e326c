"""How an edge's HAProxy is started so that it outlives the agent: as a host process in
a session of its own (an agent installed on the host), or as a sibling container (an
agent that runs in a container, the image's default).

A child process of a containerised agent would live in the agent's container and die
when that container stops (an upgrade restarts it), taking the pool's entry point
down. So such an agent asks its dockerd for a sibling container instead, from its own
image (which has HAProxy), with the host's network (HAProxy binds the host's port) and
PID namespace (the pidfile then names a process the agent can see, watch with a pidfd
and signal, as it does a host process), and the agent's edge state dir bind-mounted at
the same path, so the config, the state file and both sockets mean the same to both.
Everything after the start (adoption by pidfile and master socket, reloads, the
runtime API) is the same for both launchers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import docker
import docker.errors

from fleet.agent.dockererrors import DOCKER_ERRORS, translate
from fleet.agent.haproxy import HAProxyError, Paths
from fleet.agent.hostprocess import spawn_detached
from fleet.agent.incontainer import read_own_container_id
from fleet.errors import FleetError

__all__ = [
    "EDGE_CONTAINER",
    "LABEL_EDGE_PROXY",
    "ContainerLauncher",
    "Launcher",
    "ProcessLauncher",
    "haproxy_argv",
]

log = logging.getLogger(__name__)

EDGE_CONTAINER = "fleet-edge-proxy"
LABEL_EDGE_PROXY = "fleet.edge-proxy"  # the host whose agent started it

_FAILED: tuple[type[BaseException], ...] = (FleetError, *DOCKER_ERRORS)


def haproxy_argv(binary: str, paths: Paths) -> list[str]:
    return [
        binary,
        "-W",  # master-worker: reloads on the master CLI
        "-S",
        f"{paths.master},level,admin,mode,600",  # the master CLI: root's only
        "-f",
        str(paths.config),
        "-p",
        str(paths.pidfile),
    ]


class Launcher(Protocol):
    async def spawn(self, binary: str, paths: Paths) -> tuple[int, bool]:
        """Start HAProxy's master; its pid (0: it exited at once) and whether it is
        this process's child (to be reaped)."""

    async def forget(self) -> None:
        """After the master is gone for good: remove what is left of it."""


class ProcessLauncher:
    """HAProxy as a host process of its own session, its output appended to its log:
    not an asyncio subprocess, whose transport kills it when closed."""

    async def spawn(self, binary: str, paths: Paths) -> tuple[int, bool]:
        # posix_spawn returns once the child exists: no wait worth a thread.
        pid = spawn_detached(haproxy_argv(binary, paths), paths.log, dict(os.environ))
        return pid, True

    async def forget(self) -> None:
        return None


class ContainerLauncher:
    """HAProxy in a sibling container (``fleet-edge-proxy``) on the host's dockerd."""

    def __init__(
        self,
        client: Callable[[], docker.DockerClient],
        host_id: str,
        image: str = "",
        *,
        proc: Path = Path("/proc"),
    ) -> None:
        self.client = client
        self.host_id = host_id
        self.image = image
        self._proc = proc

    async def spawn(self, binary: str, paths: Paths) -> tuple[int, bool]:
        return await asyncio.to_thread(self._spawn, binary, paths), False

    async def forget(self) -> None:
        await asyncio.to_thread(self._remove)

    def _own(self) -> dict[str, Any]:
        container_id = read_own_container_id(self._proc)
        if container_id is None:
            raise HAProxyError(
                "start",
                "the agent does not run in a Docker container, so it has no image and no "
                "mounts to share with HAProxy's: start it with --edge-proxy-in process",
            )
        try:
            attrs: dict[str, Any] = self.client().api.inspect_container(container_id)
        except docker.errors.NotFound:
            raise HAProxyError(
                "start",
                f"the agent's container {container_id[:12]} is not on the Docker daemon it "
                "manages: start it with --edge-proxy-in process",
            ) from None
        except DOCKER_ERRORS as error:
            why = translate("inspect the agent's container", error)
            raise HAProxyError("start", str(why)) from error
        except FleetError as error:  # no dockerd to ask
            raise HAProxyError("start", str(error)) from error
        return attrs

    def _spawn(self, binary: str, paths: Paths) -> int:
        if paths.socket_dir != paths.dir:
            raise HAProxyError(
                "start",
                f"the edge state dir {paths.dir} is too long a path for HAProxy's sockets, "
                "which its container must share: give the agent a shorter --state-dir",
            )
        own = self._own()
        source = host_path(own.get("Mounts") or [], paths.dir)
        if source is None:
            raise HAProxyError(
                "start",
                f"the edge state dir {paths.dir} is not on a volume or bind mount of the "
                "agent's container, so HAProxy's container cannot share it: mount the "
                "agent's state dir (the README's run line mounts /var/lib/fleet)",
            )
        self._remove()  # a HAProxy that died leaves its exited container
        api = self.client().api
        # sh appends HAProxy's output to its log in the shared dir, as for a process.
        shell = 'log=$1; shift; exec "$@" >>"$log" 2>&1'
        try:
            created = api.create_container(
                self.image or str(own["Image"]),
                [str(paths.log), *haproxy_argv(binary, paths)],
                entrypoint=["/bin/sh", "-c", shell, "fleet-edge-proxy"],
                name=EDGE_CONTAINER,
                labels={LABEL_EDGE_PROXY: self.host_id},
                user="0",  # binds the host's port 80, writes the root-owned state dir
                host_config=api.create_host_config(
                    network_mode="host",
                    pid_mode="host",
                    binds={source: {"bind": str(paths.dir), "mode": "rw"}},
                    # The agent restarts it (with a backoff) and says why it died.
                    restart_policy={"Name": "no"},
                    log_config={"type": "json-file", "config": {"max-size": "1m"}},
                ),
            )
            api.start(created["Id"])
            state = api.inspect_container(created["Id"])["State"]
        except _FAILED as error:
            raise HAProxyError("start", f"its container: {error}") from error
        log.info("edge: haproxy's container %s started", created["Id"][:12])
        return int(state.get("Pid") or 0)

    def _remove(self) -> None:
        try:
            self.client().api.remove_container(EDGE_CONTAINER, force=True)
        except docker.errors.NotFound:
            pass
        except _FAILED as error:
            raise HAProxyError("remove its old container", str(error)) from error


def host_path(mounts: list[dict[str, Any]], path: Path) -> str | None:
    """The host's path of ``path`` in a container with these mounts (docker inspect's
    ``Mounts``): through the mount with the longest destination above it."""
    target = PurePosixPath(path)
    best: tuple[int, str] | None = None
    for mount in mounts:
        destination = PurePosixPath(mount.get("Destination", "/nowhere"))
        source = mount.get("Source") or ""
        if not source or (target != destination and destination not in target.parents):
            continue
        depth = len(destination.parts)
        if best is None or depth > best[0]:
            best = (depth, str(PurePosixPath(source) / target.relative_to(destination)))
    return best[1] if best else None
