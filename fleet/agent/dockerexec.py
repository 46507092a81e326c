"""An exec with its input streamed in (``docker exec -i``, with ``-t`` a terminal): the
connection dockerd hijacks for it, read in one thread and written in another.

dockerd answers the start with ``101 UPGRADED`` and then speaks raw bytes on the same
connection. The HTTP client read that answer through a buffered reader, which may
already hold the first bytes of output (a shell's prompt): reads go through that
reader so they are not lost, writes straight to the socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import docker.errors

from fleet.agent.dockererrors import DOCKER_ERRORS, translate
from fleet.errors import FleetError

__all__ = ["DockerExec"]

log = logging.getLogger(__name__)

_READ = 16 * 1024
# After its stream ends, dockerd may not have recorded the exit code yet: asked again
# at these intervals (it has no event to wait on short of following every event).
_EXIT_POLLS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8)
# The first resize may come before the process runs ("not running"): tried again.
_RESIZE_TRIES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


def _call(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except DOCKER_ERRORS as error:
        raise translate(what, error) from error


class DockerExec:
    """One started exec: ``read`` (blocking; b"" at its end), ``write``, ``close_input``
    (EOF on its input), ``resize``, ``exit_code``, ``hang_up`` and ``close``."""

    def __init__(self, api: Any, exec_id: str, response: Any, tty: bool) -> None:
        self._api = api
        self.exec_id = exec_id
        self.tty = tty
        self._response = response  # kept: its garbage collection would close the socket
        reader = response.raw._fp.fp  # http.client's buffered reader over the socket
        self._reader = reader
        raw = reader.raw  # socket.SocketIO
        self._socket: socket.socket = raw._sock

    @classmethod
    def open(
        cls,
        api: Any,
        container_id: str,
        command: Sequence[str],
        *,
        tty: bool,
        env: Sequence[str] = (),
    ) -> DockerExec:
        """Create and start ``command`` in the container, its input attached."""
        created = _call(
            "exec",
            lambda: api.exec_create(
                container_id,
                list(command),
                stdin=True,
                tty=tty,
                environment=list(env) or None,
            ),
        )
        exec_id = created["Id"]

        def start() -> Any:
            # exec_start(socket=True) without losing the reader (see the module's note).
            response = api._post_json(
                api._url("/exec/{0}/start", exec_id),
                headers={"Connection": "Upgrade", "Upgrade": "tcp"},
                data={"Tty": tty, "Detach": False},
                stream=True,
            )
            api._raise_for_status(response)
            return response

        return cls(api, exec_id, _call("exec", start), tty)

    def read(self) -> bytes:
        """What the exec wrote next (b"": its output ended, or ``close`` was called)."""
        try:
            return bytes(self._reader.read1(_READ))
        except (OSError, ValueError):  # closed under the read
            return b""

    def write(self, data: bytes) -> None:
        self._socket.sendall(data)

    def close_input(self) -> None:
        """End of input: the command reads EOF (output keeps coming)."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_WR)

    def resize(self, rows: int, cols: int, *, first: bool = False) -> None:
        """Set the terminal's size; the ``first`` resize is tried again while the
        process has not started yet."""
        tries = _RESIZE_TRIES if first else (0.0,)
        for delay in tries:
            time.sleep(delay)
            try:
                self._api.exec_resize(self.exec_id, height=rows, width=cols)
                return
            except docker.errors.APIError as error:
                last: Exception = error
        log.debug("exec %s: resize to %dx%d failed: %s", self.exec_id[:12], rows, cols, last)

    def _inspect(self) -> dict[str, Any]:
        return dict(_call("exec", lambda: self._api.exec_inspect(self.exec_id)))

    def exit_code(self) -> int | None:
        """The command's exit code once dockerd has it; None if it never says (its
        container went away with it, say)."""
        for delay in _EXIT_POLLS:
            time.sleep(delay)
            try:
                found = self._inspect()
            except FleetError:
                return None
            if not found.get("Running") and found.get("ExitCode") is not None:
                return int(found["ExitCode"])
        return None

    def hang_up(self) -> None:
        """SIGHUP the command if it still runs, as a terminal that goes away does:
        dockerd leaves an exec running when its client leaves (moby#9098). The agent
        sees the host's PIDs (it runs there, or with --pid host)."""
        try:
            found = self._inspect()
        except FleetError:
            return
        pid = int(found.get("Pid") or 0)
        if found.get("Running") and pid > 1:
            try:
                os.kill(pid, signal.SIGHUP)
            except OSError as error:
                log.debug("exec %s: could not hang up pid %d: %s", self.exec_id[:12], pid, error)

    def close(self) -> None:
        """End the connection; a ``read`` blocked in another thread returns b""."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._socket.close()
        with contextlib.suppress(Exception):
            self._response.close()
