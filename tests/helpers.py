"""Small helpers shared by the tests: read etcd back over its JSON gateway (independent of
fleet's own store code), fetch over HTTP, and list fleet containers through the Docker SDK."""

from __future__ import annotations

import asyncio
import base64
import http.client
import inspect
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker.errors

from fleet.testing import EtcdServer, wait_until
from fleet.transport import TlsFiles


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float = 10.0, what: str = "it"
) -> float:
    """Wait in a coroutine until ``check()`` (sync or async) is true; the seconds it
    took. Fails after ``within`` seconds (the asyncio ``wait_until``)."""
    began = time.monotonic()
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return time.monotonic() - began
        assert time.monotonic() - began < within, f"{what}: not so after {within}s"
        await asyncio.sleep(0.02)


@contextmanager
def hollow_hosts(
    server: str, count: int, name: str, log: Path, cpus: float, memory: int
) -> Iterator[subprocess.Popen[bytes]]:
    """``count`` hollow hosts (``fleet.testing.hollow``) named NAME-00000... in one
    process, connected over 2 s, each of ``cpus`` and ``memory`` bytes; stopped at the
    end (a process stopped with SIGSTOP is woken to be)."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet.testing.hollow",
                *("--server", server, "--hosts", str(count), "--name", name, "--insecure"),
                *("--cpus", str(cpus), "--memory-gib", str(memory >> 30), "--spread", "2"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
            proc.wait(30)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def etcd_post(server: EtcdServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5, context=server.ssl_context()) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def etcd_prefix(server: EtcdServer, prefix: str) -> dict[str, bytes]:
    """Every key under ``prefix`` and its raw value, read straight from etcd."""
    key = prefix.encode()
    result = etcd_post(server, "/v3/kv/range", {"key": b64(key), "range_end": b64(prefix_end(key))})
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
        for kv in result.get("kvs") or []
    }


def etcd_json(server: EtcdServer, key: str) -> dict[str, Any] | None:
    found = etcd_prefix(server, key).get(key)
    return json.loads(found) if found is not None else None


def tcp_peers(pid: int) -> set[tuple[str, int]]:
    """The (IPv4 address, port) of every established TCP connection process ``pid``
    holds, from /proc (its socket inodes, found in its namespace's TCP tables; gRPC's
    sockets are IPv6 ones with IPv4-mapped addresses)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    peers = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state != "01" or inode not in inodes:  # 01: ESTABLISHED
                continue
            address, port = remote.split(":")
            # The last 32 bits are the IPv4 address (as is, or mapped), in host order.
            ip = ".".join(str(b) for b in reversed(bytes.fromhex(address[-8:])))
            peers.add((ip, int(port, 16)))
    return peers


def http_get(address: str, port: int, timeout: float = 2.0) -> str:
    """The body at ``/``. An answer cut off (a container stopping mid-answer: http.client's
    IncompleteRead, which is no OSError) raises ConnectionError, as a refused one does."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=timeout) as response:
            body: bytes = response.read()
            return body.decode()
    except http.client.HTTPException as error:
        raise ConnectionError(f"{address}:{port}: the answer was cut off: {error!r}") from error


def wait_http(address: str, port: int, expected: str, timeout: float = 20.0) -> str:
    def serves() -> str | None:
        body = http_get(address, port)
        return body if expected in body else None

    return wait_until(
        serves,
        timeout,
        what=f"http://{address}:{port}/ to answer {expected!r}",
        ignore=(urllib.error.URLError, OSError),
    )


def scrape(
    address: str,
    *,
    ca: Path | None = None,
    cert: TlsFiles | None = None,
    token: str | None = None,
    timeout: float = 5.0,
    path: str = "/metrics",
) -> tuple[int, str, dict[str, str]]:
    """GET ``path`` (/metrics) at ``address`` as Prometheus would: over HTTPS checked against
    ``ca`` (plain HTTP without one), with the client certificate ``cert`` and/or
    ``Authorization: Bearer token``; the status, body and headers, whatever the status."""
    context = None
    if ca is not None:
        context = ssl.create_default_context(cafile=ca)
        if cert is not None:
            context.load_cert_chain(cert.cert, cert.key)
    scheme = "https" if context is not None else "http"
    request = urllib.request.Request(f"{scheme}://{address}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


def fleet_containers(docker_client: Any, app: str | None = None, *, all: bool = False) -> list[Any]:
    """fleet's containers on one daemon, read through the Docker SDK (a container
    removed between the list and its inspect is left out)."""
    label = f"fleet.app={app}" if app else "fleet.app"
    found = []
    for summary in docker_client.api.containers(all=all, filters={"label": label}):
        try:
            found.append(docker_client.containers.get(summary["Id"]))
        except docker.errors.NotFound:
            continue
    return found


class EndpointProber:
    """Polls ``fleet endpoints APP`` and every endpoint it lists, every 100 ms, in a
    thread: ``samples`` holds (time, endpoints that answered, failures), ``bodies`` what
    they served."""

    def __init__(self, client: Any, app: str = "web") -> None:
        self._client, self._app = client, app
        self._stop = threading.Event()
        self.samples: list[tuple[float, int, list[str]]] = []
        self.bodies: set[str] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EndpointProber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            healthy, failures = 0, []
            for endpoint in self._client.endpoints(self._app):
                where = f"{endpoint.host} {endpoint.address}:{endpoint.host_port}"
                try:
                    self.bodies.add(http_get(endpoint.address, endpoint.host_port, 1.0).strip())
                    healthy += 1
                except (urllib.error.URLError, OSError) as error:
                    failures.append(f"{where} (revision {endpoint.revision}): {error}")
            self.samples.append((time.time(), healthy, failures))
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - began)))

    def check(self, at_least: int) -> None:
        """Never fewer than ``at_least`` answered, and every listed endpoint answered."""
        assert len(self.samples) > 5, "the prober barely ran"
        low = [(t, n) for t, n, _ in self.samples if n < at_least]
        assert not low, f"fewer than {at_least} healthy endpoints at {low[:5]}"
        failed = [f for _, _, fs in self.samples for f in fs]
        assert not failed, f"listed endpoints that did not answer: {failed[:5]}"


JSON_DOC = Path(__file__).resolve().parents[1] / "docs" / "cli-json.md"
_HEADING = re.compile(r"^### `(fleet [^`]+)`\s*$")


def documented_json() -> dict[str, tuple[str, set[str]]]:
    """command -> ("list" | "lines" | "object", its keys), from the document."""
    found: dict[str, tuple[str, set[str]]] = {}
    command = ""
    for line in JSON_DOC.read_text().splitlines():
        heading = _HEADING.match(line)
        if heading:
            command = heading.group(1)
            continue
        if command and line.strip():
            shape = "lines" if "per line" in line else "list" if line.startswith("A list") else ""
            shape = shape or ("object" if line.startswith("An object") else "")
            assert shape, f"{command}: the paragraph must start with 'A list' or 'An object'"
            keys = set(re.findall(r"`([a-z_]+)`", line.partition(":")[2]))
            found[command] = (shape, keys)
            command = ""
    return found
