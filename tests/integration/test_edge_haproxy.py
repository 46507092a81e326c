"""The edge proxy (fleet.agent.edgeproxy) with a real HAProxy and real HTTP backends on
loopback, under a steady load of keep-alive and new-connection requests: backends are
added, drained, removed and killed, a route is added (a reload) and the proxy's owner
dies and is replaced (adoption), and not one request fails."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fleet.agent.edge import table_from_config
from fleet.agent.edgeproxy import EdgeProxy
from fleet.agent.haproxy import Paths, Sockets, render
from fleet.proto import fleet_pb2 as pb
from fleet.testing import free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(
    not Path(HAPROXY).exists(), reason="needs haproxy (scripts/bootstrap.sh installs it)"
)


class Backend:
    """An HTTP server on loopback answering its name; ``/slow`` takes ``slow`` seconds.
    ``kill`` ends it abruptly: listener closed, open connections reset."""

    def __init__(self, name: str, slow: float = 0.0) -> None:
        self.name, self.slow = name, slow
        self.hits = 0  # requests answered (health checks left out)
        self.in_flight = 0  # /slow requests being answered
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with backend.lock:
                    backend.conns.add(self.connection)

            def finish(self) -> None:
                with backend.lock:
                    backend.conns.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_GET(self) -> None:
                slow = self.path.startswith("/slow")
                with backend.lock:
                    backend.hits += self.path != "/health"  # requests, not checks
                    backend.in_flight += slow
                try:
                    if slow:
                        time.sleep(backend.slow)
                    body = backend.name.encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with backend.lock:
                        backend.in_flight -= slow

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # HAProxy resets connections it is done with (checks, retries)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def edge(self, state: str = "ready") -> pb.EdgeBackend:
        return pb.EdgeBackend(name=self.name, address="127.0.0.1", port=self.port, state=state)

    def kill(self) -> None:
        self.server.shutdown()
        self.server.socket.close()
        with self.lock:
            for conn in list(self.conns):
                conn.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
                with contextlib.suppress(OSError):
                    conn.close()


@dataclass
class Load:
    """Clients hammering the edge: keep-alive and one connection per request."""

    port: int
    host: str
    # (when it ended, how long it took, which client, the body: who answered)
    results: list[tuple[float, float, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stale: list[float] = field(default_factory=list)  # when a reused idle keep-alive
    # connection turned out closed by the proxy (the request was resent)
    stop: threading.Event = field(default_factory=threading.Event)

    def _get(self, conn: http.client.HTTPConnection, path: str) -> str:
        conn.request("GET", path, headers={"Host": self.host})
        response = conn.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise RuntimeError(f"status {response.status}: {body.strip()}")
        return body

    def keepalive(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        used = False
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                body = self._get(conn, "/")
            except (ConnectionError, http.client.RemoteDisconnected) as exc:
                # Any HTTP/1.1 client resends an idempotent request whose reused idle
                # connection the server closed meanwhile (RFC 9112 9.3.1): a leaving
                # worker closes its idle connections at a reload.
                conn.close()
                if not used:
                    self.failures.append(f"keep-alive, new connection: {exc!r}")
                    continue
                self.stale.append(time.monotonic())
                used = False
                continue
            except Exception as exc:
                self.failures.append(f"keep-alive: {exc!r}")
                conn.close()
                used = False
                continue
            used = True
            now = time.monotonic()
            self.results.append((now, now - start, "keepalive", body))
        conn.close()

    def fresh(self) -> None:
        while not self.stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            start = time.monotonic()
            try:
                body = self._get(conn, "/")
                now = time.monotonic()
                self.results.append((now, now - start, "fresh", body))
            except Exception as exc:
                self.failures.append(f"new connection: {exc!r}")
            finally:
                conn.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        threads = [threading.Thread(target=f, daemon=True) for f in (self.keepalive, self.fresh)]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in threads:
                t.join(15)

    def since(self, t: float) -> set[str]:
        return {body for when, _, _, body in list(self.results) if when >= t}

    def count_since(self, t: float) -> int:
        return sum(1 for when, *_ in list(self.results) if when >= t)

    def slowest(self, start: float, end: float) -> float:
        """The longest request that ended in [start, end] (seconds)."""
        return max(
            (took for when, took, *_ in list(self.results) if start <= when <= end), default=0
        )


async def until(predicate: Callable[[], object], within: float, what: str) -> None:
    """Wait for ``predicate`` without blocking the loop (the proxy's task runs there)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def get(port: int, host: str, path: str = "/", timeout: float = 10) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def config(version: int, *routes: pb.EdgeRoute) -> pb.EdgeConfig:
    return pb.EdgeConfig(version=version, routes=list(routes))


def web(*backends: pb.EdgeBackend) -> pb.EdgeRoute:
    return pb.EdgeRoute(app="web", hosts=["web.test"], check_path="/health", backends=backends)


async def sessions(proxy: EdgeProxy, server: str) -> int:
    """How many requests HAProxy has sent ``server`` (``stot`` of ``show stat``)."""
    stat = await proxy.sockets.admin("show stat", ok=("# pxname",))
    rows = [line.split(",") for line in stat.splitlines()[1:]]
    return sum(int(r[7]) for r in rows if len(r) > 7 and r[1] == server)


async def servers(proxy: EdgeProxy) -> dict[str, str]:
    return {r.name: r.state for r in await proxy.sockets.servers_state()}


async def test_edge_proxy_serves_through_every_change(tmp_path: Path) -> None:
    port, tcp_port = free_port(), free_port()
    state_dir = tmp_path / "edge"
    b1 = Backend("b1", slow=2.0)
    b2, b3, b4, b5, b6 = (Backend(f"b{i}") for i in range(2, 7))
    proxy = EdgeProxy(f"127.0.0.1:{port}", state_dir, haproxy=HAPROXY)
    adopted: EdgeProxy | None = None
    try:
        await proxy.start()
        assert await asyncio.to_thread(get, port, "nowhere.test") == (
            503,
            "fleet edge: no route for host 'nowhere.test' and path '/'\n",
        )
        proxy.update(config(1, web(b1.edge())))
        await until(lambda: proxy.applied_version == 1, 10, "config 1")
        assert (await asyncio.to_thread(get, port, "WEB.test:80"))[1] == "b1"

        load = Load(port, "web.test")
        with load.running():
            # (a) backends added at runtime answer
            t = time.monotonic()
            proxy.update(config(2, web(b1.edge(), b2.edge(), b3.edge(), b5.edge())))
            await until(lambda: load.since(t) >= {"b1", "b2", "b3", "b5"}, 10, "all four answer")

            # (b) a drained backend finishes its in-flight request and gets no new one
            slow = []  # /slow requests, in threads, until one is in flight on b1
            while b1.in_flight == 0:
                slow.append(asyncio.create_task(asyncio.to_thread(get, port, "web.test", "/slow")))
                await asyncio.sleep(0.05)
            proxy.update(config(3, web(b1.edge("drain"), b2.edge(), b3.edge(), b5.edge())))
            await until(lambda: proxy.applied_version == 3, 10, "config 3 (drain b1)")
            # HAProxy's own count of what it sent b1, read after the drain command: a
            # request it forwarded just before may reach b1's handler a little later.
            sent_at_drain = await sessions(proxy, "b1")
            t = time.monotonic()
            await until(lambda: load.count_since(t) > 200, 20, "traffic after the drain")
            assert await sessions(proxy, "b1") == sent_at_drain, "drained b1 got new requests"
            assert b1.hits <= sent_at_drain  # all it answered was sent before the drain
            assert (await servers(proxy))["b1"] == "drain"
            await until(lambda: b1.in_flight == 0, 10, "b1's slow requests to finish")

            # (c) a backend that left the config is set to maint and deleted once idle
            proxy.update(config(4, web(b2.edge(), b3.edge(), b5.edge("drain"))))
            await until(lambda: proxy.applied_version == 4, 10, "config 4")
            deadline = time.monotonic() + 10
            while "b1" in await servers(proxy):
                conns = await proxy.sockets.admin("show servers conn", ok=("#",))
                assert time.monotonic() < deadline, f"b1 not deleted: {conns}"
                await asyncio.sleep(0.1)

            # (d) a backend killed abruptly: retries and the health check hide it
            t = time.monotonic()
            b2.kill()
            deadline = time.monotonic() + 10
            while not any(
                r.name == "b2" and r.op_state == 0 for r in await proxy.sockets.servers_state()
            ):
                assert time.monotonic() < deadline, "b2 never marked down"
                await asyncio.sleep(0.1)
            await until(lambda: load.count_since(time.monotonic() - 0.5) > 50, 10, "traffic")
            assert load.since(t) <= {"b2", "b3"}

            # (e) a new HTTP route and a TCP route: a seamless reload
            t = time.monotonic()
            hits_b5, reloads = b5.hits, proxy.reloads
            tcp = pb.EdgeRoute(app="db", tcp_port=tcp_port, backends=[b6.edge()])
            api = pb.EdgeRoute(app="api", hosts=["api.test"], path="/v1", backends=[b4.edge()])
            # a longer prefix on web's own host wins over web's "every path"
            sub = pb.EdgeRoute(app="sub", hosts=["web.test"], path="/api/", backends=[b6.edge()])
            v5 = config(5, web(b2.edge(), b3.edge(), b5.edge("drain")), api, tcp, sub)
            baseline = load.slowest(t - 1.0, t)
            t_reload = t
            proxy.update(v5)
            await until(lambda: proxy.applied_version == 5, 15, "config 5 (reload)")
            reloaded = time.monotonic()
            assert proxy.reloads == reloads + 1
            assert (await servers(proxy))["b5"] == "drain", "the drain state was lost"
            assert await asyncio.to_thread(get, port, "api.test", "/v1/x") == (200, "b4")
            assert (await asyncio.to_thread(get, port, "api.test", "/v1x"))[0] == 503
            assert await asyncio.to_thread(get, port, "web.test", "/api/x") == (200, "b6")
            assert await asyncio.to_thread(get, port, "web.test", "/api") == (200, "b6")
            assert (await asyncio.to_thread(get, port, "web.test", "/apix"))[1] in ("b2", "b3")
            assert await asyncio.to_thread(get, tcp_port, "any") == (200, "b6")
            await until(lambda: load.count_since(time.monotonic() - 0.5) > 50, 10, "traffic")
            during = load.slowest(t, reloaded + 0.5)
            assert b5.hits == hits_b5
            assert load.since(t) <= {"b2", "b3"}

            # (f) the owner dies without a word; a new one adopts HAProxy, no reload
            master = proxy.pid
            before = await proxy.sockets.show_proc()
            assert proxy._task is not None
            proxy._task.cancel()  # what kill -9 of the agent leaves: HAProxy alone
            proxy._unwatch()
            adopted = EdgeProxy(f"127.0.0.1:{port}", state_dir, haproxy=HAPROXY)
            await adopted.start()
            assert adopted.pid == master
            t = time.monotonic()
            v6 = config(6, web(b3.edge(), b5.edge("drain"), b4.edge()), api, tcp, sub)
            adopted.update(v6)
            await until(lambda: adopted.applied_version == 6, 10, "config 6 by the adopter")
            await until(lambda: "b4" in load.since(t), 10, "b4 on web")
            assert adopted.reloads == 0
            assert (await Sockets(adopted.paths).show_proc()).reloads == before.reloads
            await until(lambda: load.count_since(time.monotonic() - 0.5) > 50, 10, "traffic")
        assert load.failures == [], load.failures[:5]
        assert len(load.results) > 1000
        print(
            f"\nrequests {len(load.results)}, failures 0, stale keep-alive resends at "
            f"{[round(w - t_reload, 2) for w in load.stale]} s from the reload, "
            f"reload {proxy.last_reload_seconds * 1000:.0f} ms, slowest "
            f"request {during * 1000:.0f} ms during it ({baseline * 1000:.0f} ms before)"
        )
        # b1's in-flight request finished during its drain
        assert {await task for task in slow} >= {(200, "b1")}
    finally:
        for p in (adopted, proxy):
            if p is not None:
                await p.close_for_good()
                break
        for b in (b1, b2, b3, b4, b5, b6):
            with contextlib.suppress(OSError):
                b.server.shutdown()
            b.server.server_close()


async def test_edge_proxy_restarts_haproxy_and_keeps_serving_through_a_refused_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="fleet.agent.edgeproxy")
    port = free_port()
    b1, b2 = Backend("b1"), Backend("b2")
    proxy = EdgeProxy(f"127.0.0.1:{port}", tmp_path / "edge", haproxy=HAPROXY)
    taken = socket.socket()  # a TCP port someone else holds: HAProxy cannot bind it
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proxy.update(config(1, web(b1.edge())))
        await proxy.start()  # the config came first: it starts with the route, no reload
        assert await asyncio.to_thread(get, port, "web.test") == (200, "b1")
        await until(lambda: proxy.applied_version == 1, 10, "config 1")
        assert proxy.reloads == 0
        served = (tmp_path / "edge" / "haproxy.cfg").read_text()

        # a reload HAProxy refuses (the port is taken): the old worker keeps serving
        bad = pb.EdgeRoute(app="db", tcp_port=taken.getsockname()[1], backends=[b1.edge()])
        proxy.update(config(2, web(b1.edge(), b2.edge()), bad))
        await until(lambda: "kept the old config" in caplog.text, 15, "the refused reload")
        # the routes that run still follow the config: b2 is added all the same
        await until(lambda: "add http_web" in caplog.text, 10, "b2 added")
        assert "b2" in await servers(proxy)
        assert "Cannot bind socket" in caplog.text or "cannot bind" in caplog.text.lower()
        assert proxy.applied_version == 1
        assert (tmp_path / "edge" / "haproxy.cfg").read_text() == served
        assert (await asyncio.to_thread(get, port, "web.test"))[0] == 200
        proxy.update(config(3, web(b1.edge())))
        await until(lambda: proxy.applied_version == 3, 15, "config 3")

        # HAProxy killed: started again, serving the same routes
        master = proxy.pid
        os.killpg(master, signal.SIGKILL)
        await until(lambda: proxy.restarts == 1 and proxy.pid != master, 15, "a restart")
        deadline = time.monotonic() + 10
        while True:  # the restart happened: it serves at once (or within its start)
            with contextlib.suppress(OSError):
                if await asyncio.to_thread(get, port, "web.test") == (200, "b1"):
                    break
            assert time.monotonic() < deadline, "the restarted haproxy does not serve"
            await asyncio.sleep(0.05)
        assert "is gone" in caplog.text
    finally:
        taken.close()
        await proxy.close_for_good()
        for b in (b1, b2):
            b.server.shutdown()
            b.server.server_close()


def test_the_rendered_config_passes_haproxys_own_check(tmp_path: Path) -> None:
    """Every shape of route, on IPv4 and IPv6, is a config HAProxy accepts."""
    table, problems = table_from_config(
        config(
            1,
            web(pb.EdgeBackend(name="web-0-r1-h.1", address="10.0.0.1", port=80, state="ready")),
            pb.EdgeRoute(app="catch_all", path="/static/", check_path="/up?x=1"),
            pb.EdgeRoute(
                app="v6",
                hosts=["six.test"],
                backends=[pb.EdgeBackend(name="v6-0", address="fd00::1", port=8080, state="drain")],
            ),
            pb.EdgeRoute(
                app="db",
                tcp_port=15432,
                backends=[
                    pb.EdgeBackend(name="db-0", address="10.0.0.2", port=5432, state="ready")
                ],
            ),
            pb.EdgeRoute(app="bad", hosts=["*.test"]),
            pb.EdgeRoute(app="bad", path="/a b#c"),
            pb.EdgeRoute(
                app="bad",
                hosts=["x.test"],
                backends=[pb.EdgeBackend(name="x", address="db.internal", port=1, state="ready")],
            ),
        )
    )
    assert len(problems) == 3, problems
    for listen in ("127.0.0.1:8080", "[::1]:8080", ":8080"):
        path = tmp_path / "haproxy.cfg"
        path.write_text(render(table, listen, Paths(tmp_path)))
        check = subprocess.run(
            [HAPROXY, "-c", "-q", "-f", str(path)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
