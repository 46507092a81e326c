"""The capabilities in the README's run line of the agent, and why each is there: a
health check opens ``/proc/PID/ns/net`` of a container's first process and ``setns``
into it, which is what busybox's ``nsenter -n FILE`` does too, run here from a
container started as the agent's is (root, host PID and network namespaces, Docker's
default seccomp profile) with each set of added capabilities."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fleet.testing import DockerHost
from fleet.testing.images import DEFAULT_CMD
from tests.conftest import WEB_INDEX, ensure_image

PROBE = "nsenter -n/proc/{pid}/ns/net wget -qO- http://127.0.0.1:8080/index.html"


@pytest.fixture
def apps(single_host: DockerHost) -> Iterator[dict[str, int]]:
    """Web containers as fleet may run them, by the pid of their first process."""
    image = ensure_image(single_host)
    client = single_host.client()
    kinds = {
        "root": {},
        "another user": {"user": "1000"},  # an image with USER, say
        "a capability the agent lacks": {"cap_add": ["NET_ADMIN"]},
    }
    started = {
        kind: client.containers.run(image, DEFAULT_CMD, detach=True, labels={"caps": ""}, **kw)
        for kind, kw in kinds.items()
    }
    try:
        pids = {}
        for kind, container in started.items():
            container.reload()
            pids[kind] = int(container.attrs["State"]["Pid"])
        yield pids
    finally:
        for container in started.values():
            container.remove(force=True)


def _probe(host: DockerHost, pid: int, caps: list[str]) -> str:
    output: Any = host.client().containers.run(
        ensure_image(host),
        ["sh", "-c", PROBE.format(pid=pid) + " 2>&1; true"],
        user="0",
        pid_mode="host",
        network_mode="host",
        cap_add=caps,
        remove=True,
    )
    return str(output.decode().strip())


def test_sys_admin_enters_and_sys_ptrace_opens_any_containers_namespace(
    single_host: DockerHost, apps: dict[str, int]
) -> None:
    served = WEB_INDEX.strip()
    seen = {
        (tuple(caps), kind): _probe(single_host, pid, caps)
        for caps in ([], ["SYS_ADMIN"], ["SYS_ADMIN", "SYS_PTRACE"])
        for kind, pid in apps.items()
    }
    # setns into a network namespace needs CAP_SYS_ADMIN (Docker's seccomp profile
    # allows it once the capability is there).
    assert "Operation not permitted" in seen[(), "root"]
    assert not any(out == served for (caps, _), out in seen.items() if not caps)
    # Opening the namespace of a process of another user, or with capabilities the
    # agent lacks, is a ptrace access check: CAP_SYS_PTRACE.
    assert seen[("SYS_ADMIN",), "root"] == served
    assert "Permission denied" in seen[("SYS_ADMIN",), "another user"]
    assert "Permission denied" in seen[("SYS_ADMIN",), "a capability the agent lacks"]
    assert all(seen[("SYS_ADMIN", "SYS_PTRACE"), kind] == served for kind in apps), seen
