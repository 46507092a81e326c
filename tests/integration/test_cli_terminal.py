"""The CLI in a real terminal (a pseudo-terminal), as people see it: a table on a
narrow terminal cuts no value (kubectl's way: the terminal wraps a long row), and bash,
with the script `fleet completion bash` prints, completes app and host names from the
pool when TAB is pressed."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from fleet.spec import load_documents
from tests.integration.conftest import Fleet, wait_containers
from tests.integration.test_cli_habits import _env


def _in_terminal(command: list[str], env: dict[str, str], cols: int) -> str:
    """What ``command`` writes to a terminal ``cols`` wide (it runs to its end)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the other side closed
                    break
                if not data:
                    break
                seen += data
            elif process.poll() is not None:
                break
        assert process.wait(10) == 0, seen
    finally:
        process.kill()
        os.close(master)
    return seen.decode()


def test_a_narrow_terminal_cuts_no_value(fleet: Fleet) -> None:
    long_label = "a-rather-long-team-name-for-a-narrow-terminal"
    spec = f"name: narrow-app\nimage: {fleet.image}\nlabels: {{team: {long_label}}}\n"
    fleet.client.apply(load_documents(spec))
    wait_containers(fleet, "narrow-app", 1)
    env = _env(fleet, TERM="xterm")
    for args in (["get", "apps", "-o", "wide"], ["ps"], ["get", "hosts", "-o", "wide"]):
        shown = _in_terminal([sys.executable, "-m", "fleet", *args], env, cols=40)
        assert "…" not in shown, shown
        rows = shown.splitlines()
        assert len(rows) >= 2, shown
        if args[:2] == ["get", "apps"]:
            assert fleet.image in shown  # whole, on its row
        if args == ["ps"]:
            assert any(r.split() and r.split()[0] == "narrow-app.0" for r in rows), shown
        if args[:2] == ["get", "hosts"]:
            assert any(r.split() and r.split()[0] == fleet.host.name for r in rows), shown
        # A row is one line: longer than the terminal, never wrapped inside its cells.
        assert max(len(r) for r in rows) > 40


def test_bash_completes_names_from_the_pool_on_tab(fleet: Fleet, tmp_path: Path) -> None:
    for name in ("comp-web", "comp-db"):
        fleet.client.apply(load_documents(f"name: {name}\nimage: {fleet.image}\n"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "fleet"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m fleet "$@"\n')
    wrapper.chmod(0o755)
    env = _env(fleet, TERM="dumb", PS1="$ ", PATH=f"{bin_dir}:{os.environ['PATH']}")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    bash = subprocess.Popen(
        ["bash", "--norc", "--noprofile", "-i"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""

    def expect(wanted: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while wanted not in seen:
            assert time.monotonic() < deadline, f"{wanted!r} not seen: {seen[-600:]!r}"
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 65536)

    try:
        os.write(master, b'eval "$(fleet completion bash)"; echo loaded-$?\n')
        expect(b"loaded-0")
        seen = b""
        os.write(master, b"fleet logs comp-w\t")  # one candidate: completed in place
        expect(b"comp-web")
        os.write(master, b"\x15")  # Ctrl-U: clear the line
        seen = b""
        os.write(master, b"fleet scale comp-\t\t")  # several: listed on the second TAB
        expect(b"comp-db")
        expect(b"comp-web")
        os.write(master, b"\x15")
        seen = b""
        os.write(master, f"fleet cordon {fleet.host.name[:1]}\t".encode())
        expect(fleet.host.name.encode())
    finally:
        bash.kill()
        bash.wait(10)
        os.close(master)
