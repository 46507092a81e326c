"""The ingress (#20) on real components: route claims held by one app at a time in
real etcd, also under concurrent applies of two apps (one wins, the other is told
whose the route is, and nothing of it is written), and the routing table an edge
host's real agent session receives from a real ``fleet server`` while a real app runs
on the namespaced docker host."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.agent.agent import Agent
from fleet.agent.config import AgentConfig
from fleet.client import FleetClient
from fleet.errors import Conflict, SpecError
from fleet.proto import fleet_pb2 as pb
from fleet.spec import load_documents
from fleet.store import AppWrite, KeyLayout, Store
from fleet.store._etcd import Etcd
from fleet.store.records import AppRecord
from fleet.testing import EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.testing.hollow import HollowRuntime
from fleet.transport import Transport
from tests.helpers import etcd_json, etcd_prefix, http_get
from tests.integration.conftest import Fleet, fleet_cli, wait_containers


def app(name: str, ingress: str, image: str = "fleet-test/none:v1") -> str:
    return f"name: {name}\nimage: {image}\nreplicas: 0\ningress: {ingress}\n"


def routes(etcd: EtcdServer, prefix: str) -> dict[str, str]:
    """Every route claim under ``prefix``: its key's last segment -> the app holding it."""
    found = etcd_prefix(etcd, f"{prefix}routes/")
    return {key.rsplit("/", 1)[1]: json.loads(value)["app"] for key, value in found.items()}


@pytest.fixture(scope="module")
def server(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetServerProcess]:
    """One server for the claim tests (their apps and routes are apart)."""
    logs = tmp_path_factory.mktemp("ingress-server")
    started = FleetServerProcess(etcd_server.endpoint, "/t-ingress/", logs, pki).start()
    try:
        yield started
    finally:
        started.stop()
        print(started.process.log_tail(60))


def test_a_route_is_held_by_one_app_and_given_up_by_a_change_or_a_delete(
    server: FleetServerProcess, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    client = server.client()
    prefix = "/t-ingress/"
    client.apply(load_documents(app("shop", "{port: 80, host: [shop.example, www.example]}")))
    client.apply(load_documents(app("db", "{port: 5432, tcp: 15432}")))
    assert routes(etcd_server, prefix) == {
        "http:shop.example%2F": "shop",
        "http:www.example%2F": "shop",
        "tcp:15432": "db",
    }
    # Another app claiming one of them is refused whole, naming the holder.
    with pytest.raises(SpecError) as info:
        client.apply(load_documents(app("blog", "{port: 80, host: [blog.example, www.example]}")))
    [problem] = info.value.problems
    assert (problem.document, problem.path) == (1, "ingress.host")
    assert "host www.example path / is already claimed by app 'shop'" in problem.message
    assert "choose another host name or path" in problem.message
    assert etcd_json(etcd_server, f"{prefix}apps/blog") is None
    assert "http:blog.example%2F" not in routes(etcd_server, prefix)
    taken = "tcp port 15432 of the edges is already claimed by app 'db'"
    with pytest.raises(SpecError, match=taken):
        client.apply(load_documents(app("cache", "{port: 6379, tcp: 15432}")))
    # The user sees it at its line in the file, with the way out.
    path = tmp_path / "blog.yaml"
    path.write_text(app("blog", "\n  port: 80\n  host: www.example"))
    result = fleet_cli("apply", "-f", str(path), server=server.address, pki=pki)
    assert result.returncode != 0
    assert f"{path}:6" in result.stderr + result.stdout, result.stderr
    assert "already claimed by app 'shop'" in result.stderr + result.stdout
    # Another path of the same host is another route.
    client.apply(load_documents(app("blog", "{port: 80, host: www.example, path: /blog}")))
    # shop gives www.example up by changing its ingress; blog may then take it.
    client.apply(load_documents(app("shop", "{port: 80, host: shop.example}")))
    client.apply(load_documents(app("api", "{port: 80, host: www.example}")))
    assert routes(etcd_server, prefix) == {
        "http:shop.example%2F": "shop",
        "http:www.example%2F": "api",
        "http:www.example%2Fblog": "blog",
        "tcp:15432": "db",
    }
    # A delete gives its routes up.
    client.delete_app("db")
    client.apply(load_documents(app("cache", "{port: 6379, tcp: 15432}")))
    assert routes(etcd_server, prefix)["tcp:15432"] == "cache"
    client.close()


def race(clients: list[FleetClient], names: list[str], host: str) -> list[Any]:
    """Both clients apply their app claiming ``host`` at the same instant: what each got
    back (its changes, or the error)."""
    barrier = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def one(i: int) -> None:
        spec = load_documents(app(names[i], f"{{port: 80, host: {host}}}"))
        barrier.wait()
        try:
            outcomes[i] = clients[i].apply(spec)
        except (SpecError, Conflict) as error:
            outcomes[i] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_concurrent_applies_of_one_route_have_exactly_one_winner(
    server: FleetServerProcess, etcd_server: EtcdServer, pki: TestPKI
) -> None:
    """Two clients apply two apps claiming one route at the same instant, many times:
    each time exactly one is stored with the route, and the other is refused with the
    winner's name and has nothing stored."""
    prefix = "/t-ingress/"
    clients = [server.client(), server.client()]
    for round_ in range(12):
        host, names = f"r{round_}.example", [f"a{round_}", f"b{round_}"]
        outcomes = race(clients, names, host)
        won = [i for i in (0, 1) if isinstance(outcomes[i], list)]
        assert len(won) == 1, outcomes
        winner, loser = names[won[0]], names[1 - won[0]]
        error = outcomes[1 - won[0]]
        assert isinstance(error, SpecError), error
        assert f"already claimed by app {winner!r}" in str(error)
        assert routes(etcd_server, prefix)[f"http:{host}%2F"] == winner
        assert etcd_json(etcd_server, f"{prefix}apps/{loser}") is None
        assert not etcd_prefix(etcd_server, f"{prefix}revisions/{loser}/")
    for client in clients:
        client.close()
    # Most rounds raced past the server's own check (both planned on a free route) and
    # were decided by etcd's transaction; the loser re-read and named the winner.
    assert "lost a race" in server.process.log_tail(2000)


async def test_the_claim_is_part_of_the_transaction_so_a_stale_plan_loses(
    etcd_server: EtcdServer,
) -> None:
    """Below the API: two apps planned on the same state (where the route is free)
    write at once; the route's create-if-absent guard lets exactly one through, and
    the other writes nothing at all."""
    layout = KeyLayout("/t-ingress-store/")
    async with Etcd([etcd_server.endpoint]) as etcd:
        store = Store(etcd, layout)
        writes = []
        for name in ("left", "right"):
            [spec] = load_documents(app(name, "{port: 80, host: same.example}"))
            record = AppRecord(spec=spec, generation=1, revision=1, created_at="t", updated_at="t")
            writes.append(AppWrite(record, 0, routes=(("http:same.example/", 0),)))
        results = await asyncio.gather(
            *(store.write_apps([write]) for write in writes), return_exceptions=True
        )
        assert sorted(type(r).__name__ for r in results) == ["Conflict", "int"]
        winner = "left" if isinstance(results[0], int) else "right"
        loser = "right" if winner == "left" else "left"
        claim = await etcd.get(layout.route("http:same.example/"))
        assert claim is not None and json.loads(claim.value) == {"app": winner}
        assert await etcd.get(layout.app(winner)) is not None
        assert await etcd.get(layout.app(loser)) is None


class EdgeAgent:
    """A real agent (over a hollow runtime, so it runs nothing) on an edge host: its
    session hands each routing table it is pushed to ``on_edge``, kept here."""

    def __init__(self, server: str, pki: TestPKI, tmp_path: Path) -> None:
        self.configs: list[pb.EdgeConfig] = []
        config = AgentConfig(
            servers=[server],
            host_id="edge1",
            transport=Transport(pki.agent("edge1")),
            labels={"edge": "yes"},
            address="127.0.0.1",
            ingress="127.0.0.1:18080",
            state_dir=tmp_path / "edge1",
        )
        self._runtime = HollowRuntime(host_id="edge1")
        self._agent = Agent(config, self._runtime, on_edge=self.configs.append)
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._runtime.bind(self._loop)
        self._loop.run_until_complete(self._agent.run_until(self._stop))
        self._loop.close()

    def route(self, app: str) -> pb.EdgeRoute | None:
        """``app``'s route in the newest table."""
        last = self.configs[-1] if self.configs else None
        found = [r for r in last.routes if r.app == app] if last else []
        return found[0] if found else None

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


def web(image: str, replicas: int) -> str:
    return f"""\
name: web
image: {image}
replicas: {replicas}
command: [httpd, -f, -p, "8080", -h, /www]
constraints: [agent.edge!=yes]
health: {{http: "http://:8080/", interval: 500ms}}
shutdown_delay: 3s
stop_grace_period: 1s
ingress: {{port: 8080, host: web.example.com}}
"""


def host_port(container: Any) -> int:
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])


def backends(edge: EdgeAgent) -> list[tuple[str, str, int, str]] | None:
    route = edge.route("web")
    return None if route is None else [(b.name, b.address, b.port, b.state) for b in route.backends]


def test_an_edge_host_is_pushed_the_backends_of_a_real_app(fleet: Fleet, tmp_path: Path) -> None:
    edge = EdgeAgent(fleet.server.address, fleet.pki, tmp_path)
    try:
        # The edge's listen address is in its host record, and shown with the host.
        info = wait_until(
            lambda: [h for h in fleet.client.hosts() if h.host_id == "edge1" and h.connected],
            20,
            what="the edge to register",
        )
        assert info[0].ingress == "127.0.0.1:18080"
        # Connected, it has the table at once: no app has an ingress yet.
        wait_until(lambda: edge.configs, 10, what="the first table")
        assert list(edge.configs[0].routes) == []

        fleet.client.apply(load_documents(web(fleet.image, 2)))
        containers = wait_containers(fleet, "web", 2)
        # The address the host registered (an agent outside the host's network namespace
        # names its own address towards the server; a real edge reaches the host there).
        [address] = [h.address for h in fleet.client.hosts() if h.host_id == fleet.host.name]
        expected = sorted(
            (f"web-{c.labels['fleet.slot']}-r1-{fleet.host.name}", address, host_port(c), "ready")
            for c in containers
        )
        # fleet published the ingress port itself (the spec has no `ports`).
        wait_until(lambda: backends(edge) == expected, 30, what=f"backends {expected}")
        route = edge.route("web")
        assert route is not None
        assert (list(route.hosts), route.path, route.check_path) == (["web.example.com"], "/", "/")
        for _, _, port, _ in expected:
            assert http_get(fleet.host.address, port)  # the published ports really answer
        # What users see of it.
        cli = {"server": fleet.server.address, "pki": fleet.pki}
        described = fleet_cli("describe", "app", "web", **cli).stdout  # type: ignore[arg-type]
        assert "ingress web.example.com/ -> :8080" in described
        assert "served by edges: edge1 at 127.0.0.1:18080" in described
        for name, backend_address, port, _ in expected:
            assert re.search(rf"{name}\s+{backend_address}:{port}\s+ready", described), described
        wide = fleet_cli("get", "apps", "-o", "wide", **cli).stdout  # type: ignore[arg-type]
        assert "INGRESS" in wide and "web.example.com/ -> :8080" in wide
        wide = fleet_cli("get", "hosts", "-o", "wide", **cli).stdout  # type: ignore[arg-type]
        assert "INGRESS" in wide and "127.0.0.1:18080" in wide

        # Scaled down: the removed replica drains for its shutdown delay, then goes.
        fleet.client.scale("web", 1)
        removed = next(b for b in expected if b[0].startswith("web-1-"))
        kept = [b for b in expected if b is not removed]
        draining = (*removed[:3], "drain")
        wait_until(lambda: backends(edge) == sorted([*kept, draining]), 20, what="a drain")
        wait_until(lambda: backends(edge) == kept, 20, what="the drained backend removed")
        versions = [c.version for c in edge.configs]
        assert versions == sorted(set(versions)), versions  # each table newer than the last
    finally:
        edge.close()
