"""The daemons' life under a service manager: sd_notify datagrams, and a stop signal
that lets the daemon wind down and end with status 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.cli.lifecycle import Lifecycle, notify, run_daemon
from fleet.errors import Unavailable


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A socket listening as systemd's notify socket does (a datagram socket)."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        yield path, sock


def received(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except BlockingIOError:
            return got


def test_notify_sends_one_datagram(manager: tuple[str, socket.socket]) -> None:
    path, sock = manager
    assert notify(path, "READY=1", "STATUS=serving")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_without_a_manager_does_nothing(tmp_path: Path) -> None:
    assert not notify(None, "READY=1")
    assert not notify("", "READY=1")
    assert not notify("vsock:2:1234", "READY=1")
    assert not notify(str(tmp_path / "nobody"), "READY=1")  # a warning, not an error


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"fleet-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("@" + name, "READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_sigterm_stops_the_daemon_cleanly(
    manager: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = manager
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    seen: list[str] = []

    async def daemon(life: Lifecycle) -> None:
        life.ready("serving")
        # A daemon's own children must not speak for it.
        seen.append(os.environ.get("NOTIFY_SOCKET", "unset"))
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(life.stopping.wait(), 5)
        seen.append(f"stopping on {life.signal}")

    run_daemon(daemon)  # returns: the command then exits 0
    assert seen == ["unset", "stopping on SIGTERM"]
    assert received(sock) == ["READY=1\nSTATUS=serving", "STOPPING=1\nSTATUS=stopping (SIGTERM)"]


def test_a_second_signal_cancels_a_daemon_slow_to_stop() -> None:
    async def daemon(life: Lifecycle) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await life.stopping.wait()
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(30)  # winding down too slowly: cancelled

    run_daemon(daemon)


def test_a_daemon_that_fails_with_a_fleet_error_raises_it() -> None:
    async def daemon(life: Lifecycle) -> None:
        raise Unavailable("etcd is gone")

    with pytest.raises(Unavailable, match="etcd is gone"):
        run_daemon(daemon)


def test_a_fleet_error_is_logged_when_the_logs_are_for_a_machine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def daemon(life: Lifecycle) -> None:
        raise Unavailable("etcd is gone")

    with pytest.raises(SystemExit) as ended:
        run_daemon(daemon, log_errors=True)
    assert ended.value.code == 1
    [record] = [r for r in caplog.records if r.name == "fleet.cli.lifecycle"]
    assert record.levelname == "ERROR" and "etcd is gone" in record.getMessage()
    assert record.exc_info is None  # a fleet error's message says it all


def test_a_bug_is_logged_with_its_traceback_and_exits_1(caplog: pytest.LogCaptureFixture) -> None:
    async def daemon(life: Lifecycle) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(SystemExit) as ended:
        run_daemon(daemon)
    assert ended.value.code == 1
    [record] = [r for r in caplog.records if r.name == "fleet.cli.lifecycle"]
    assert record.levelname == "CRITICAL" and record.exc_info is not None
    assert "RuntimeError: a bug" in caplog.text
