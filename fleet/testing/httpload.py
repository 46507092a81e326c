"""A client that hammers an HTTP entry point and records every request's outcome, for
tests that must count failed requests (not only successes) through an event; and what
an edge's HAProxy serves, read from its admin socket."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fleet.agent.haproxy import ServerRow, parse_servers_state
from fleet.testing.procs import wait_until

__all__ = ["Event", "Hammer", "Result", "edge_server_rows", "get"]


@dataclass(frozen=True)
class Result:
    began: float  # monotonic
    ended: float
    ok: bool
    text: str  # the body of a 200, else what went wrong


@dataclass
class Event:
    name: str
    began: float
    first: int  # index of the first result completed during the event
    last: int = -1

    def results(self, hammer: Hammer) -> list[Result]:
        with hammer.lock:
            return hammer.results[self.first : self.last]


@dataclass
class Hammer:
    """Clients sending GETs to the edge without pause, in threads: half on one kept-alive
    connection each (reopened only after an answer says close), half on a new connection
    per request. Every request is recorded with its status; any but a 200 is a failure.
    ``event(name)`` brackets what completes during one step of the test."""

    address: tuple[str, int]
    host_name: str
    threads: int = 4
    timeout: float = 10.0  # well above the route's timeout: a retried request is slow, not lost
    results: list[Result] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Hammer:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    @property
    def total(self) -> int:
        with self.lock:
            return len(self.results)

    def more(self, count: int, within: float = 30, what: str = "requests") -> None:
        """Wait until ``count`` more requests have completed."""
        target = self.total + count
        wait_until(lambda: self.total >= target, within, what=f"{count} {what}")

    @contextlib.contextmanager
    def event(self, name: str) -> Iterator[Event]:
        with self.lock:
            event = Event(name, time.monotonic(), len(self.results))
        try:
            yield event
        finally:
            with self.lock:
                event.last = len(self.results)
            self.events.append(event)

    def _run(self, keep_alive: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(*self.address, timeout=self.timeout)
            began = time.monotonic()
            try:
                connection.request("GET", "/", headers={"Host": self.host_name})
                response = connection.getresponse()
                body = response.read().decode(errors="replace").strip()
                closing = response.will_close or not keep_alive
                ok = response.status == 200
                text = body if ok else f"HTTP {response.status}: {body[:80]}"
            except (OSError, http.client.HTTPException) as error:
                closing, ok, text = True, False, f"{type(error).__name__}: {error}"
            with self.lock:
                self.results.append(Result(began, time.monotonic(), ok, text))
            if closing:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()


def get(address: tuple[str, int], host: str, path: str = "/") -> tuple[int, str]:
    connection = http.client.HTTPConnection(*address, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace").strip()
    finally:
        connection.close()


def edge_server_rows(admin: Path) -> list[ServerRow]:
    """``show servers state`` of the edge HAProxy whose admin socket is ``admin``. A
    path too long for a socket's address is reached through its directory's fd."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        directory = os.open(admin.parent, os.O_PATH)
        try:
            sock.connect(f"/proc/self/fd/{directory}/{admin.name}")
        finally:
            os.close(directory)
        sock.sendall(b"show servers state\n")
        text = b""
        while chunk := sock.recv(65536):
            text += chunk
    return parse_servers_state(text.decode())
