"""The edge proxy's table and the plan that moves it: pure, no I/O and no clock.

A table is what the proxy serves: routes (an HTTP host/path or a TCP port, one backend
each) and, per backend, servers with an address, a port and an admin state (``ready``,
``drain`` or ``maint``). ``plan(current, desired)`` says how to get from the observed
table to the one an EdgeConfig asks for:

- a *reload* when the routes differ (a new app, host name, path, TCP port or check
  path): the proxy's config text changes, which the runtime API cannot do. The table
  the new config is rendered from (``EdgePlan.base``) keeps every current server of the
  backends that stay, so their states carry over, and gives new backends their ready
  servers at once;
- then *runtime actions* in a safe order: additions (and servers put back to ready)
  first, drains of others after them, maintenance after drains, deletions last, so no
  backend loses a ready server before its replacement is in.

A server that left the EdgeConfig is put in maintenance (no new requests, in-flight
ones finish) and deleted once it has no connections, or once it has waited ``bound``
seconds (its last connections are then shut). The caller passes ``now`` and when each
such server was first seen waiting.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from fleet.proto import fleet_pb2 as pb

__all__ = [
    "Action",
    "Backend",
    "EdgePlan",
    "Route",
    "Server",
    "ServerKey",
    "Table",
    "apply",
    "plan",
    "table_from_config",
]

State = Literal["ready", "drain", "maint"]
ActionKind = Literal["add", "set_addr", "ready", "drain", "maint", "shutdown", "delete"]
ServerKey = tuple[str, str]  # (backend, server)

# Names HAProxy accepts for proxies and servers; anything else becomes "_".
_NAME_BAD = re.compile(r"[^A-Za-z0-9_.:-]")
_HOST_OK = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
# URL path characters that mean nothing special in HAProxy's config syntax (no quotes,
# backslash, '#' or '$').
_PATH_OK = re.compile(r"^/[A-Za-z0-9._~!&()*+,;=:@%/-]*$")
_CHECK_OK = re.compile(r"^/[A-Za-z0-9._~!&()*+,;=:@%/?-]*$")  # may carry a query

# Order of the phases; a plan's actions are sorted by it (see the module docstring).
_PHASE: dict[str, int] = {
    "add": 0,
    "set_addr": 0,
    "ready": 0,
    "drain": 1,
    "maint": 2,
    "shutdown": 3,
    "delete": 3,
}


def haproxy_name(name: str) -> str:
    """``name`` with the characters HAProxy refuses in names replaced by ``_``."""
    return _NAME_BAD.sub("_", name) or "_"


@dataclass(frozen=True, order=True)
class Route:
    """Where requests come in: HTTP ``hosts`` + ``path`` prefix, or a TCP port."""

    app: str
    hosts: tuple[str, ...] = ()
    path: str = ""
    tcp_port: int = 0
    check_path: str = ""
    timeout: float = 0.0  # the wait for a server's answer; 0: the config's default

    @property
    def backend(self) -> str:
        """A stable backend name: the same route always gets the same one, so its
        servers (and their states) survive a reload caused by other routes. The check
        path and the timeout are left out: changing them keeps the backend."""
        key = f"{self.app}\0{','.join(self.hosts)}\0{self.path}\0{self.tcp_port}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        kind = f"tcp{self.tcp_port}" if self.tcp_port else "http"
        return f"{kind}_{haproxy_name(self.app)}_{digest}"


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int
    state: State = "ready"
    conns: int = 0  # connections now (observed tables only)


@dataclass(frozen=True)
class Backend:
    route: Route
    servers: Mapping[str, Server] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    backends: Mapping[str, Backend] = field(default_factory=dict)

    @property
    def routes(self) -> frozenset[Route]:
        return frozenset(b.route for b in self.backends.values())

    def server(self, key: ServerKey) -> Server | None:
        backend = self.backends.get(key[0])
        return None if backend is None else backend.servers.get(key[1])


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    backend: str
    server: Server

    @property
    def key(self) -> ServerKey:
        return (self.backend, self.server.name)

    def __str__(self) -> str:
        s = self.server
        return f"{self.kind} {self.backend}/{s.name} ({s.address}:{s.port})"


@dataclass(frozen=True)
class EdgePlan:
    reload: bool
    base: Table  # what the config is rendered from (== current when no reload)
    actions: tuple[Action, ...]
    waiting: frozenset[ServerKey]  # left the config, still there after the actions

    @property
    def empty(self) -> bool:
        return not self.reload and not self.actions


def table_from_config(
    config: pb.EdgeConfig, reserved: Mapping[int, str] | None = None
) -> tuple[Table, list[str]]:
    """The table an EdgeConfig asks for, and the problems found in it (each dropped
    piece is named; the rest is kept so one bad route cannot stop the edge).
    ``reserved``: ports a TCP route cannot take, and what holds them."""
    problems: list[str] = []
    backends: dict[str, Backend] = {}
    tcp_ports: dict[int, str] = dict(reserved or {})
    for r in config.routes:
        hosts = tuple(sorted({h.strip().lower().rstrip(".") for h in r.hosts if h.strip()}))
        bad = [h for h in hosts if not _HOST_OK.match(h)]
        if bad:
            problems.append(
                f"route of app {r.app!r}: host names {bad} are not valid (letters, digits, "
                "'-' and '.'; no wildcards); skipped"
            )
            continue
        path = r.path if r.path not in ("", "/") else ""
        if path and not _PATH_OK.match(path):
            problems.append(
                f"route of app {r.app!r}: path {r.path!r} must start with '/' and hold only "
                "URL path characters (no spaces, quotes, '#', '$' or backslash); skipped"
            )
            continue
        if r.tcp_port and not 0 < r.tcp_port < 65536:
            problems.append(f"route of app {r.app!r}: tcp_port {r.tcp_port} out of range")
            continue
        if r.tcp_port and r.tcp_port in tcp_ports:
            problems.append(
                f"route of app {r.app!r}: TCP port {r.tcp_port} is already taken by "
                f"{tcp_ports[r.tcp_port]!r}; skipped"
            )
            continue
        timeout = r.timeout_seconds if 0 < r.timeout_seconds <= 3600 else 0.0
        check = r.check_path
        if check and not _CHECK_OK.match(check):
            problems.append(
                f"route of app {r.app!r}: check path {check!r} must start with '/' and "
                "hold only URL path characters; checking by TCP connect instead"
            )
            check = ""
        if r.tcp_port:
            route = Route(r.app, tcp_port=r.tcp_port, check_path=check, timeout=timeout)
        else:
            route = Route(r.app, hosts, path, check_path=check, timeout=timeout)
        if route.backend in backends:
            problems.append(f"route of app {r.app!r} is listed twice; the first is kept")
            continue
        if r.tcp_port:
            tcp_ports[r.tcp_port] = f"app {r.app!r}"
        servers: dict[str, Server] = {}
        for b in r.backends:
            name = haproxy_name(b.name)
            if name in servers:
                problems.append(f"app {r.app!r}: backend {b.name!r} is listed twice")
                continue
            why = (
                f"state {b.state!r} is not ready or drain"
                if b.state not in ("ready", "drain")
                else f"port {b.port} is out of range"
                if not 0 < b.port < 65536
                else f"address {b.address!r} is not an IP address"
                if not _ip(b.address)
                else ""
            )
            if why:
                problems.append(f"app {r.app!r}: backend {b.name!r} skipped: {why}")
                continue
            state: State = "ready" if b.state == "ready" else "drain"
            servers[name] = Server(name, b.address, b.port, state)
        backends[route.backend] = Backend(route, servers)
    return Table(backends), problems


def _ip(address: str) -> bool:
    """An IP literal: dynamic servers never resolve names (``init-addr none`` in 2.6)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def plan(
    current: Table,
    desired: Table,
    *,
    now: float = 0.0,
    waiting_since: Mapping[ServerKey, float] | None = None,
    bound: float = 60.0,
) -> EdgePlan:
    """How to move the proxy from ``current`` (observed, with connection counts) to
    ``desired``; see the module docstring for the order and the rules."""
    since = waiting_since or {}
    reload = current.routes != desired.routes
    base = _reload_base(current, desired) if reload else current
    actions: list[Action] = []
    waiting: set[ServerKey] = set()
    for name, want in desired.backends.items():
        have = base.backends[name].servers if name in base.backends else {}
        for s in want.servers.values():
            c = have.get(s.name)
            if c is None:
                # A draining server that is not there needs nothing: it is leaving.
                if s.state == "ready":
                    actions.append(Action("add", name, s))
                continue
            if (c.address, c.port) != (s.address, s.port):
                actions.append(Action("set_addr", name, replace(c, address=s.address, port=s.port)))
            if c.state != s.state:
                if s.state == "ready":
                    actions.append(Action("ready", name, s))
                elif c.state == "ready":  # maint -> drain would bring it back: leave it be
                    actions.append(Action("drain", name, s))
        for c in have.values():
            if c.name in want.servers:
                continue
            if c.state != "maint":
                # deleted on a later look, once its in-flight requests are done
                actions.append(Action("maint", name, c))
                waiting.add((name, c.name))
            elif c.conns == 0:
                actions.append(Action("delete", name, c))
            elif now - since.get((name, c.name), now) >= bound:
                actions.append(Action("shutdown", name, c))
                actions.append(Action("delete", name, c))
            else:
                waiting.add((name, c.name))
    actions.sort(key=lambda a: _PHASE[a.kind])  # stable: keeps shutdown before its delete
    return EdgePlan(reload, base, tuple(actions), frozenset(waiting))


def _reload_base(current: Table, desired: Table) -> Table:
    """The table a reload's config renders: desired routes; the current servers (and
    states) of backends that stay; the ready servers of new backends."""
    backends: dict[str, Backend] = {}
    for name, want in desired.backends.items():
        if name in current.backends:
            servers = current.backends[name].servers
        else:
            servers = {n: s for n, s in want.servers.items() if s.state == "ready"}
        backends[name] = Backend(want.route, dict(servers))
    return Table(backends)


def apply(table: Table, actions: Iterable[Action]) -> Table:
    """``table`` after ``actions``, as the proxy would do them (the plan's meaning)."""
    backends = {n: dict(b.servers) for n, b in table.backends.items()}
    for a in actions:
        servers = backends[a.backend]
        s = a.server
        if a.kind == "add":
            if s.name in servers:
                raise ValueError(f"{a}: the server exists")
            servers[s.name] = replace(s, state="ready", conns=0)
        elif a.kind == "delete":
            if servers[s.name].state != "maint":
                raise ValueError(f"{a}: only a server in maintenance can be deleted")
            del servers[s.name]
        elif a.kind == "shutdown":
            servers[s.name] = replace(servers[s.name], conns=0)
        elif a.kind == "set_addr":
            servers[s.name] = replace(servers[s.name], address=s.address, port=s.port)
        else:
            servers[s.name] = replace(servers[s.name], state=a.kind)
    return Table({n: Backend(b.route, backends[n]) for n, b in table.backends.items()})
