"""Which container the agent runs in, and whether it shares the host's PID namespace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fleet.agent.incontainer import capabilities, check_host_pid_namespace, own_container_id
from fleet.errors import FailedPrecondition, Unavailable

ID = "4c01db0b339c" + "a" * 52
# /proc/self/mountinfo in a container whose daemon's data-root is /var/lib/docker, with
# /var/lib a filesystem of its own (so the root field starts below it).
MOUNTINFO = f"""\
612 540 0:52 / / rw,relatime master:301 - overlay overlay rw,lowerdir=/var/lib/docker/x
613 612 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
640 612 8:1 /docker/containers/{ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw
641 612 8:1 /docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/sda1 rw
"""


def test_the_container_is_found_by_the_files_docker_mounts_into_it() -> None:
    assert own_container_id(MOUNTINFO, "0::/\n") == ID  # cgroup v2, private namespace


def test_else_by_its_cgroup() -> None:
    cgroup = f"12:memory:/docker/{ID}\n0::/system.slice/docker-{ID}.scope\n"
    assert own_container_id("", cgroup) == ID


def test_outside_a_container_there_is_none() -> None:
    # This very machine: /.dockerenv exists, but nothing of Docker's is mounted.
    mountinfo = "22 1 254:1 / / rw,relatime - ext4 /dev/vda rw\n"
    cgroup = "4:memory:/process_api/f1a499a67170798f7ae3a3d8f2d06167\n0::/\n"
    assert own_container_id(mountinfo, cgroup) is None


class _Client:
    def __init__(self, pid: int | Exception) -> None:
        self.api = self
        self._pid = pid

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        if isinstance(self._pid, Exception):
            raise self._pid
        assert container_id == ID
        return {"State": {"Pid": self._pid}}


def _proc(tmp_path: Path) -> Path:
    """A /proc whose self is in container ID; the real pids and stats are linked."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self/mountinfo").write_text(MOUNTINFO)
    (proc / "self/cgroup").write_text("0::/\n")
    for pid in (os.getpid(), os.getppid()):
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "stat").write_text(Path(f"/proc/{pid}/stat").read_text())
    return proc


def test_an_agent_that_shares_the_hosts_pids_passes(tmp_path: Path) -> None:
    # Docker's pid of the container's first process is the agent's own, or a parent's.
    proc = _proc(tmp_path)
    check_host_pid_namespace(lambda: _Client(os.getpid()), proc)
    check_host_pid_namespace(lambda: _Client(os.getppid()), proc)


def test_an_agent_in_a_pid_namespace_of_its_own_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="--pid host"):
        check_host_pid_namespace(lambda: _Client(4_000_000), _proc(tmp_path))


def test_nothing_to_check_without_a_daemon_to_ask(tmp_path: Path) -> None:
    def away() -> Any:
        raise Unavailable("docker: connect: no socket")

    check_host_pid_namespace(away, _proc(tmp_path))
    check_host_pid_namespace(lambda: _Client(4_000_000))  # the real /proc: no container


def test_capabilities_by_dockers_names() -> None:
    # Docker's default set plus SYS_ADMIN and SYS_PTRACE (the agent's run line).
    status = "Name:\tfleet\nCapPrm:\t00000000a82c25fb\nCapEff:\t00000000a82c25fb\n"
    assert capabilities(status) == [
        "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "SYS_PTRACE", "SYS_ADMIN", "MKNOD",
        "AUDIT_WRITE", "SETFCAP",
    ]  # fmt: skip
    # Those Docker 20.10 cannot name (PERFMON and later) are left out.
    assert "CHOWN" in capabilities("CapEff:\t000001ffffffffff\n")
    assert len(capabilities("CapEff:\t000001ffffffffff\n")) == 38
