"""Process and polling helpers shared by the test harness.

Every wait in the harness goes through `wait_until` (a deadline, never a fixed sleep), and
every long-running binary goes through `ManagedProcess` so its log tail shows up in errors.
What a test starts is a `Service` (``with`` starts it and stops it); a server that is one
process (etcd, a registry) is a `Daemon`, which times its start and stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

T = TypeVar("T")

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ProcessError(RuntimeError):
    """A managed process failed to start, died early or misbehaved; the message has its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago, picked by the kernel (bind to 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different TCP ports free on ``host`` a moment ago: held open together
    while picked (two ``free_port`` calls in a row may get the same port back)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    what: str = "a condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns a truthy value and return that value.

    Exceptions of the types in `ignore` count as "not yet"; on the deadline a `TimeoutError`
    is raised, chained to the last ignored exception so the cause stays visible.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
        except ignore as exc:
            last_exc = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from last_exc
        time.sleep(interval)


def require_binary(name: str, *fallbacks: str) -> str:
    """Return the absolute path of a binary from PATH (plus sbin dirs) or fail with a clear hint."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":" + SYSTEM_PATH)
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"{name!r} not found; run scripts/bootstrap.sh to install it")


def run(args: Sequence[str], *, check: bool = True, timeout: float = 60) -> str:
    """Run a short command, return its stdout, and raise with its stderr when it fails."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise ProcessError(f"{' '.join(args)} exited with {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def tail(path: Path, lines: int = 40) -> str:
    """Return the last `lines` lines of a text file, or a note that it does not exist."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"<no log at {path}: {exc.strerror}>"
    text = data[-64 * 1024 :].decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def pid_state(pid: int) -> str | None:
    """A process's state letter (R, S, D: stuck in the kernel, Z: a zombie, ...), or
    None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The state field follows the parenthesised command name.
    return stat.rsplit(")", 1)[-1].split()[0]


def pid_alive(pid: int) -> bool:
    """Tell whether a process exists and is not a zombie."""
    return pid_state(pid) not in (None, "Z", "X")


def pid_start_time(pid: int) -> int | None:
    """Return a process's start time in clock ticks since boot, to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return int(fields[19])


def pid_cmdline(pid: int) -> list[str]:
    """Return a process's argv, or an empty list when it is gone or a kernel thread."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode("utf-8", errors="replace") for part in raw.split(b"\0") if part]


def kill_pid(pid: int, timeout: float = 10.0) -> None:
    """Send SIGTERM to a process we do not parent, then SIGKILL if it outlives `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not pid_alive(pid), wait, what=f"pid {pid} to exit")
            return


class Service(ABC):
    """Something a test starts and must stop whatever happens: ``with Thing() as thing:``
    is ``start()``, and ``close()`` on the way out."""

    @abstractmethod
    def start(self) -> Self:
        """Start it (if it is not running) and return it, ready to use."""

    @abstractmethod
    def close(self) -> None:
        """Stop it and release what it holds. Idempotent."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ManagedProcess(Service):
    """A subprocess whose stdout/stderr go to a log file and whose stop is SIGTERM then SIGKILL.

    Errors raised by its methods carry the tail of the log, which is what one needs to see
    when a daemon did not come up.
    """

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.name = name or Path(self.args[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Self:
        """Start the process (appending to its log) in its own session so ^C reaches us first."""
        if self.running:
            raise ProcessError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open while the process runs
        self._log.write(f"--- start: {' '.join(self.args)}\n".encode())
        self._log.flush()
        self._popen = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int | None:
        """The pid of the current (or last) process, None before the first start."""
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited, else None."""
        return self._popen.poll() if self._popen is not None else None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the process's log file."""
        return tail(self.log_path, lines)

    def error(self, message: str) -> ProcessError:
        """Build an error about this process that ends with the tail of its log."""
        return ProcessError(
            f"{self.name}: {message}\n--- last lines of {self.log_path} ---\n{self.log_tail()}"
        )

    def check_running(self) -> None:
        """Raise a `ProcessError` with the log tail if the process has exited."""
        if not self.running:
            raise self.error(f"exited with status {self.returncode}")

    def wait_ready(
        self,
        predicate: Callable[[], object],
        timeout: float,
        what: str,
        ignore: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        """Wait until `predicate` holds while the process lives; raise with the log tail if not."""

        last: list[BaseException] = []

        def ready() -> bool:
            self.check_running()
            try:
                return bool(predicate())
            except ignore as exc:
                last[:] = [exc]
                return False

        try:
            wait_until(ready, timeout, what=what)
        except TimeoutError as exc:
            cause = f" (last error: {last[0]!r})" if last else ""
            raise self.error(f"{exc}{cause}") from exc

    def stop(self, timeout: float = 10.0) -> int | None:
        """Send SIGTERM, wait up to `timeout`, then SIGKILL; return the exit status (idempotent)."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                popen.wait(10)
        self._close_log()
        return popen.returncode

    def kill(self) -> None:
        """SIGKILL, as in a crash (no chance to clean up), then reap it."""
        if self.pid is not None and self.running:
            os.kill(self.pid, signal.SIGKILL)
            self.stop()

    def close(self) -> None:
        self.stop()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class Daemon(Service):
    """A server a test runs as one `ManagedProcess` (etcd, a registry): ready once its
    own check passes within ``start_timeout``, with the seconds its start took."""

    program = "the daemon"  # what its messages call it

    def __init__(self, log_path: Path, start_timeout: float) -> None:
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.start_seconds: float | None = None
        self._proc: ManagedProcess | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    @property
    def pid(self) -> int | None:
        """The pid of the running process, None when stopped."""
        return self._proc.pid if self._proc is not None and self._proc.running else None

    def _launch(
        self, process: ManagedProcess, ready: Callable[[], object] | None, what: str
    ) -> None:
        """Start ``process`` and wait until ``ready()`` (unless None) holds; raise with
        its log tail if it does not."""
        began = time.monotonic()
        self._proc = process.start()
        if ready is not None:
            self._proc.wait_ready(ready, self.start_timeout, what=what)
        self.start_seconds = time.monotonic() - began

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout``). Idempotent."""
        if self._proc is not None:
            self._proc.stop(timeout)

    def close(self) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of its log, for assertion messages."""
        if self._proc is None:
            raise ProcessError(f"{self.program} was never started")
        return self._proc.log_tail(lines)


def without_fleet_env() -> dict[str, str]:
    """This process's environment without its FLEET_* variables (a CLI run as a user
    with none set), but for FLEET_CLI_CONFIG: the tests' own contexts file, never the
    user's."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith("FLEET_") or k == "FLEET_CLI_CONFIG"
    }
