"""``fleet exec -it``: the real CLI under a pseudo-terminal, through a real control plane
and agent to a shell in a container on a real dockerd. What is typed reaches the
shell, a resize of the local terminal changes the container's, Ctrl-C interrupts the
command in the container (not the CLI), and the CLI exits with the shell's code and
gives the terminal back as it found it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest

from fleet.errors import PermissionDenied
from fleet.pki.subjects import Role
from fleet.proto import fleet_pb2 as pb
from fleet.spec import load_documents
from fleet.testing import wait_until
from tests.integration.conftest import Fleet, wait_containers
from tests.integration.test_logs_exec import _cli

PROMPT = re.compile(rb"# ")


class Terminal:
    """The test's side of the pseudo-terminal the CLI runs in (its controlling one)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the CLI, with the pty as its terminal
            try:
                os.execve(command[0], command, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.seen = b""
        self._from = 0  # what expect has matched so far ends here
        self.status: int | None = None

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _read(self, deadline: float) -> bool:
        """Read what is there (waiting until ``deadline``); False at the end of output."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the CLI is gone and the pty closed
            return False
        self.seen += data
        return bool(data)

    def expect(self, pattern: re.Pattern[bytes] | bytes, timeout: float = 15.0) -> re.Match[bytes]:
        """The next match of ``pattern`` in the output (after the last one)."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.seen, self._from)
            if found:
                self._from = found.end()
                return found
            if time.monotonic() >= deadline or not self._read(deadline):
                raise AssertionError(f"{regex.pattern!r} not seen; the terminal: {self.seen!r}")

    def resize(self, rows: int, cols: int) -> None:
        # Set on the pty, the kernel sends SIGWINCH to the CLI, as a terminal window does.
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def alive(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is None

    def wait(self, timeout: float = 15.0) -> int:
        """The CLI's exit code, once it exits (its output read to the end meanwhile)."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            if not self._read(min(deadline, time.monotonic() + 0.2)):
                break  # the pty closed: the CLI is exiting
        wait_until(lambda: not self.alive(), max(0.1, deadline - time.monotonic()), what="exit")
        while self._read(time.monotonic() + 0.5):  # what it wrote last
            pass
        assert self.status is not None
        return os.waitstatus_to_exitcode(self.status)

    def close(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def _running(fleet: Fleet, command: str) -> bool:
    """Whether ``command`` runs in box's container (asked of dockerd, not of fleet)."""
    [container] = fleet.docker.containers.list(filters={"label": "fleet.app=box"})
    return any(command in " ".join(p) for p in container.top()["Processes"])


def _box(fleet: Fleet) -> None:
    spec = f"name: box\nimage: {fleet.image}\ncommand: [sh, -c, 'sleep 3600']\n"
    fleet.client.apply(load_documents(spec, "box.yaml"))
    wait_containers(fleet, "box", 1)


def test_exec_it_relays_a_terminal_keys_resizes_ctrl_c_and_the_exit_code(fleet: Fleet) -> None:
    _box(fleet)
    command, env = _cli(fleet, "exec", "-it", "box", "--", "sh")
    env["TERM"] = "xterm"
    term = Terminal(command, env)
    try:
        term.resize(24, 80)
        term.expect(PROMPT)
        cooked = termios.tcgetattr(term.fd)  # the CLI is raw by now: read back at the end

        # Typed keys reach the shell, and its answer comes back: the sum proves it ran.
        term.send(b"echo hi-$((1+1))\r")
        term.expect(b"hi-2\r\n")
        term.expect(PROMPT)

        # A resize of this terminal reaches the container's (the SIGWINCH may be taken
        # after the keys typed with it: asked again until the new size shows).
        term.resize(33, 101)

        def resized() -> bool:
            term.send(b"stty size\r")
            rows, cols = term.expect(re.compile(rb"\r\n(\d+) (\d+)\r\n")).groups()
            return (int(rows), int(cols)) == (33, 101)

        wait_until(resized, 15, interval=0.1, what="the container's terminal to be 33x101")
        term.expect(PROMPT)

        # Ctrl-C goes to the command in the container, as a byte on its terminal: the
        # sleep ends, the shell prompts again, and the CLI lives on.
        term.send(b"sleep 100\r")
        # Once it runs (a Ctrl-C before then would reach the shell, as it would anywhere).
        wait_until(lambda: _running(fleet, "sleep 100"), 10, what="the sleep to run")
        started = time.monotonic()
        term.send(b"\x03")
        term.expect(PROMPT, timeout=10)
        term.send(b"echo after-$((2+3))\r")
        term.expect(b"after-5\r\n", timeout=10)
        assert time.monotonic() - started < 20 and term.alive()

        # The CLI exits with the shell's exit code, and puts the terminal back.
        term.send(b"exit 3\r")
        assert term.wait() == 3
        restored = termios.tcgetattr(term.fd)
        assert restored[3] & termios.ECHO and restored[3] & termios.ICANON
        assert not cooked[3] & termios.ICANON  # it was raw while the shell ran
        # Who opened it, where and what, in the control plane's log and (without the
        # command) in the events.
        logged = f"exec by admin (admin) in box.0 on {fleet.host.name} (tty): sh"
        assert logged in fleet.server.process.log_tail(80)
        [event] = [e for e in fleet.client.events(app="box") if e.kind == "exec"]
        assert event.message == "exec session opened by admin (tty)"
        assert event.host == fleet.host.name
    finally:
        term.close()


@contextlib.contextmanager
def _sleeping(fleet: Fleet, seconds: int) -> Iterator[Terminal]:
    """``fleet exec -it box -- sleep SECONDS`` in a terminal, once the sleep runs; on the
    way out, waits until it no longer does (hung up)."""
    _box(fleet)
    command, env = _cli(fleet, "exec", "-it", "box", "--", "sleep", str(seconds))
    term = Terminal(command, env)
    sleeping = f"sleep {seconds}"
    try:
        wait_until(lambda: _running(fleet, sleeping), 15, what="the command to run")
        yield term
        wait_until(lambda: not _running(fleet, sleeping), 15, what="it to be hung up")
    finally:
        term.close()


def test_a_killed_client_hangs_the_command_up(fleet: Fleet) -> None:
    with _sleeping(fleet, 301) as term:
        os.kill(term.pid, signal.SIGKILL)  # no goodbye: the stream just breaks


def test_an_agent_that_goes_away_ends_the_session_and_its_command(fleet: Fleet) -> None:
    with _sleeping(fleet, 302) as term:
        fleet.agent.stop()  # as an upgrade restarts it
        assert term.wait() == 1
        assert b"agent disconnected" in term.seen


def test_exec_i_streams_stdin_without_a_terminal_and_is_for_admins_only(fleet: Fleet) -> None:
    _box(fleet)
    command, env = _cli(
        fleet, "exec", "-i", "box", "--", "sh", "-c", "tr a-z A-Z; echo to-stderr >&2; exit 4"
    )
    many = b"hello\n" * 20000  # 120 KB: through the windows, in order
    result = subprocess.run(command, env=env, input=many, capture_output=True, timeout=60)
    assert result.returncode == 4, result.stderr
    assert result.stdout == many.upper()
    assert result.stderr.endswith(b"to-stderr\n")

    # -t with an input that is no terminal is refused before anything runs.
    command, env = _cli(fleet, "exec", "-it", "box", "--", "sh")
    refused = subprocess.run(command, env=env, input=b"", capture_output=True, timeout=60)
    assert refused.returncode == 1 and b"not a terminal" in refused.stderr

    # Admins only: a deployer is refused before anything of the request is read.
    start = pb.ExecStart(app="box", slot=-1, command=["sh"], tty=True, stdin=True)
    deployer = fleet.server.client("dan", Role.deployer)
    with deployer, pytest.raises(PermissionDenied, match="run commands in containers"):
        list(deployer.exec_stream(iter([pb.ExecInput(start=start)])))


def test_plain_exec_streams_output_as_it_comes_and_stops_at_its_timeout(fleet: Fleet) -> None:
    """Without -i/-t: stdout comes before the command ends, stderr stays apart, and
    --timeout hangs the command up (it no longer runs in the container) with 124."""
    _box(fleet)
    command, env = _cli(
        fleet,
        "exec",
        "--timeout",
        "6s",
        "box",
        "--",
        "sh",
        "-c",
        "echo first; echo oops >&2; exec sleep 303",
    )
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"first\n"
        # Streamed: the line came while the command (and the CLI) still ran.
        assert process.poll() is None and time.monotonic() - started < 6
        assert _running(fleet, "sleep 303")
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 124, err
    assert out == b""  # the rest: nothing more
    assert err.startswith(b"oops\n") and b"ran past --timeout (6s)" in err
    wait_until(lambda: not _running(fleet, "sleep 303"), 15, what="the command hung up")
