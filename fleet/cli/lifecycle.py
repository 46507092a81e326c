"""How ``fleet server`` and ``fleet agent`` run under a service manager: SIGTERM or
SIGINT asks for a clean stop (exit status 0), and systemd hears ``READY=1`` once the
daemon does its job and ``STOPPING=1`` when it begins to stop (``Type=notify``).

The notification is the sd-daemon protocol written out (one datagram to the unix socket
in ``$NOTIFY_SOCKET``), so no library is needed; without the variable it does nothing.
The variable is taken out of the environment at start, as ``sd_notify`` does when asked:
what the daemon starts (an agent's host commands) must not speak for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from fleet.errors import FleetError

__all__ = ["Lifecycle", "notify", "run_daemon"]

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def notify(address: str | None, *fields: str) -> bool:
    """Send ``fields`` (``READY=1``, ``STATUS=...``) to the service manager listening on
    ``address`` (``$NOTIFY_SOCKET``: a path, or ``@name`` in the abstract namespace);
    False when there is none or it cannot be reached (a warning says why)."""
    if not address or address[0] not in "/@":  # vsock addresses are for VMs: not ours
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(target)
            sock.sendall("\n".join(fields).encode())
    except OSError as error:
        log.warning("could not notify the service manager at %s: %s", address, error)
        return False
    return True


class Lifecycle:
    """What a daemon's main coroutine is handed: ``ready()`` once it serves, and
    ``stopping``, set when a stop signal came."""

    def __init__(self, notify_socket: str | None) -> None:
        self._socket = notify_socket
        self.stopping = asyncio.Event()
        self.signal: str | None = None  # the name of the signal that asked for the stop

    def ready(self, status: str = "") -> None:
        """Tell the service manager the daemon is up (``systemctl start`` returns)."""
        self._notify("READY=1", *([f"STATUS={status}"] if status else []))

    def _notify(self, *fields: str) -> None:
        if self._socket:
            notify(self._socket, *fields)

    def stop(self, name: str) -> None:
        """A stop signal came: say so to the service manager, and set ``stopping``."""
        if self.stopping.is_set():
            return
        self.signal = name
        log.info("%s: stopping", name)
        self._notify("STOPPING=1", f"STATUS=stopping ({name})")
        self.stopping.set()


Main = Callable[[Lifecycle], Coroutine[Any, Any, None]]


def run_daemon(main: Main, *, log_errors: bool = False) -> None:
    """Run ``main`` until it returns; the first SIGTERM or SIGINT sets its lifecycle's
    ``stopping`` (the daemon stops cleanly and this returns: exit status 0), a second
    one cancels it outright. A fleet error is raised for the CLI to print (logged
    instead with ``log_errors``, when the logs are journal or JSON lines, so it has a
    priority there too); any other error is logged (one entry, with its traceback).
    Either way the exit status is 1."""
    try:
        asyncio.run(_run(main, os.environ.pop("NOTIFY_SOCKET", None)))
    except FleetError as error:
        if not log_errors:
            raise  # the CLI says it in one line, and exits 1
        log.error("%s", error)
        raise SystemExit(1) from None
    except Exception:
        # Logged, not printed by Python: in the journal a traceback must be one entry.
        log.critical("stopped by an unexpected error", exc_info=True)
        raise SystemExit(1) from None


async def _run(main: Main, notify_socket: str | None) -> None:
    life = Lifecycle(notify_socket)
    task = asyncio.create_task(main(life))
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if life.stopping.is_set():
            log.warning("%s again: stopping at once", signum.name)
            task.cancel()
        else:
            life.stop(signum.name)

    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await task
    except asyncio.CancelledError:
        if not life.stopping.is_set():
            raise
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
