"""HAProxy for the edge: its config text, rendered from a table, and an asyncio client
for its two unix sockets.

- The *admin socket* (``stats socket ... level admin``) belongs to the current worker:
  ``show servers state``/``conn`` and the runtime changes of servers (``add server``,
  ``enable health``, ``set server ... state``, ``del server``).
- The *master socket* (``-S``) belongs to the master process of master-worker mode
  (``-W``): ``show proc`` and ``reload``. A reload re-executes the master, which parses
  the new config, forks a new worker and hands it the listening sockets over their
  socketpair (``expose-fd listeners`` is set too, as the docs ask for the stats socket
  path); the old worker finishes its connections and leaves (``hard-stop-after``).

Servers keep their states across a reload: they are rendered into the config (a
dynamic server is not, by itself) and their runtime states are dumped with
``show servers state`` to the file the new worker loads (``server-state-file``,
``load-server-state-from-file global``), matched by backend and server names. A
draining server has no config keyword, so rendering states alone could not carry it.

HAProxy 2.6 quirks met here: the master socket answers only once the client closes its
side (or sends ``quit``); ``reload`` answers nothing and closes, and a failed reload
leaves the old worker serving, seen in ``show proc`` (no new worker); a dynamic server
starts in maintenance and takes no ``default-server`` settings, so each server line
spells its check settings out; errors come back as plain text, never a status.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fleet.agent.edge import Backend, Server, Table

__all__ = [
    "HAProxyError",
    "Paths",
    "ProcInfo",
    "ServerRow",
    "Sockets",
    "parse_proc",
    "parse_servers_conn",
    "parse_servers_state",
    "render",
    "split_listen",
]

# Health checks: a second line behind fleet's own (the control plane only lists
# containers it saw healthy). Down after 2 failures 1 s apart, up after 2 successes.
# No pool of idle server connections: 2.6 keeps one idle connection per configured
# server for good (its estimate of the need never falls below 1), and ``del server``
# refuses a server with one, so a removed server could never be deleted. Dynamic
# servers have no pool in 2.6 anyway; connections stay bound to client sessions.
_SERVER_OPTS = "check inter 1s fastinter 500ms downinter 2s rise 2 fall 2 pool-max-conn 0"
# Bounds an old worker's life after a reload (long downloads, websockets).
HARD_STOP_AFTER = "30s"
_NO_ROUTE = "fleet_no_route"
_TIMEOUT = 5.0  # seconds for one socket command


class HAProxyError(Exception):
    """HAProxy refused a command (``message`` is its own words) or could not be
    reached."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"haproxy: {command!r}: {message}")
        self.command = command
        self.message = message


# A unix socket's path must fit sun_path (108 bytes with its NUL), and HAProxy binds
# each one as "<path>.<pid>.tmp" first; longer paths fail its config check.
_SOCKET_PATH_MAX = 107 - len(".4194304.tmp")


@dataclass(frozen=True)
class Paths:
    """The files of one edge proxy, all in its state dir; its two sockets too, unless
    that dir's path is too long for a socket's: then in a short dir named after it
    (the same state dir always gets the same one, so a restarted agent finds them)."""

    dir: Path

    @property
    def socket_dir(self) -> Path:
        if len(str(self.dir / "master.sock")) <= _SOCKET_PATH_MAX:
            return self.dir
        digest = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"fleet-edge-{os.getuid()}-{digest}"

    @property
    def config(self) -> Path:
        return self.dir / "haproxy.cfg"

    @property
    def routes(self) -> Path:  # the routes the running config was rendered from
        return self.dir / "routes.json"

    @property
    def pidfile(self) -> Path:
        return self.dir / "haproxy.pid"

    @property
    def master(self) -> Path:
        return self.socket_dir / "master.sock"

    @property
    def admin(self) -> Path:
        return self.socket_dir / "admin.sock"

    @property
    def server_state(self) -> Path:
        return self.dir / "server-state"

    @property
    def log(self) -> Path:
        return self.dir / "haproxy.log"


def split_listen(listen: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[v6]:PORT``, ``:PORT`` for every address) -> (addr, port)."""
    addr, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"ingress address {listen!r} is not ADDR:PORT (e.g. 0.0.0.0:80 or [::]:80)"
        )
    return addr.strip("[]"), int(port)


def _bind(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _server_line(s: Server) -> str:
    # A server in maintenance stays so in a new worker even without a state file entry.
    disabled = " disabled" if s.state == "maint" else ""
    return f"    server {s.name} {_bind(s.address, s.port)} {_SERVER_OPTS}{disabled}"


def _http_order(b: Backend) -> tuple[int, int, str]:
    # Host-specific routes before catch-alls; longest path prefix first.
    return (0 if b.route.hosts else 1, -len(b.route.path), b.route.backend)


def render(table: Table, listen: str, paths: Paths) -> str:
    """The whole config: one HTTP frontend on ``listen`` routing by Host (port
    stripped) and path prefix, one TCP frontend per TCP route, one backend per route."""
    addr, port = split_listen(listen)
    http = sorted((b for b in table.backends.values() if not b.route.tcp_port), key=_http_order)
    tcp = sorted(
        (b for b in table.backends.values() if b.route.tcp_port), key=lambda b: b.route.tcp_port
    )
    lines = [
        "# Written by the fleet agent (fleet.agent.haproxy) for its edge proxy;",
        "# rewritten on every route change: edit the routes, not this file.",
        "global",
        f"    stats socket {paths.admin} mode 600 level admin expose-fd listeners",
        f"    server-state-file {paths.server_state}",
        f"    hard-stop-after {HARD_STOP_AFTER}",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 10s",
        "    timeout check 2s",
        "    load-server-state-from-file global",
        # Idempotent requests are retried (on another server) when a connection fails,
        # a server closes without answering or times out; the rest only when their
        # request was never sent (see disable-l7-retry below).
        "    retries 3",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response response-timeout",
        "",
        "frontend fleet_http",
        f"    bind {_bind(addr, port)}",
        "    option forwardfor",
        "    acl fleet_idempotent method GET HEAD OPTIONS PUT DELETE TRACE",
        "    http-request disable-l7-retry unless fleet_idempotent",
        "    http-request set-var(txn.fleet_host) req.hdr(host),lower,regsub(':[0-9]+$','')",
    ]
    for b in http:
        name = b.route.backend
        conds = []
        if b.route.hosts:
            lines.append(f"    acl {name}_h var(txn.fleet_host) -m str {' '.join(b.route.hosts)}")
            conds.append(f"{name}_h")
        if b.route.path:
            p = b.route.path.rstrip("/")
            lines.append(f"    acl {name}_p path -m str {p}")
            lines.append(f"    acl {name}_p path_beg {p}/")
            conds.append(f"{name}_p")
        cond = f" if {' '.join(conds)}" if conds else ""
        lines.append(f"    use_backend {name}{cond}")
    lines += [f"    default_backend {_NO_ROUTE}", ""]
    for b in http:
        lines += _backend(b, "http")
    for b in tcp:
        lines += [
            f"frontend fleet_tcp{b.route.tcp_port}",
            "    mode tcp",
            f"    bind {_bind(addr, b.route.tcp_port)}",
            f"    default_backend {b.route.backend}",
            "",
        ]
        lines += _backend(b, "tcp")
    lines += [
        f"backend {_NO_ROUTE}",
        "    http-request return status 503 content-type text/plain lf-string "
        "\"fleet edge: no route for host '%[var(txn.fleet_host)]' and path '%[path]'\\n\"",
        "",
    ]
    return "\n".join(lines)


def _backend(b: Backend, mode: str) -> list[str]:
    lines = [f"backend {b.route.backend}", f"    mode {mode}"]
    # Dynamic servers need a dynamic algorithm; leastconn suits long TCP sessions.
    lines.append("    balance roundrobin" if mode == "http" else "    balance leastconn")
    if b.route.timeout:
        lines.append(f"    timeout server {round(b.route.timeout * 1000)}ms")
    if mode == "http" and b.route.check_path:
        lines.append(f"    option httpchk GET {b.route.check_path}")
    lines += [_server_line(s) for s in sorted(b.servers.values(), key=lambda s: s.name)]
    return [*lines, ""]


@dataclass(frozen=True)
class ServerRow:
    """One line of ``show servers state``."""

    backend: str
    name: str
    address: str
    port: int
    op_state: int  # 0 down, 1 starting, 2 up, 3 stopping
    admin_state: int  # mask: 0x01|0x02|0x04|0x20|0x40 maint, 0x08|0x10 drain

    @property
    def state(self) -> str:
        if self.admin_state & 0x67:
            return "maint"
        if self.admin_state & 0x18:
            return "drain"
        return "ready"


@dataclass(frozen=True)
class ProcInfo:
    """``show proc``: the master's reload count and the current workers' pids."""

    master: int
    reloads: int
    workers: tuple[tuple[int, int], ...]  # (pid, reloads survived): 0 = the newest


class Sockets:
    """Commands on the admin and master sockets of one HAProxy."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    async def _send(self, path: Path, command: str) -> str:
        try:
            async with asyncio.timeout(_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(str(path))
                try:
                    writer.write(command.encode() + b"\n")
                    # The master CLI answers only once our side is closed (2.6).
                    writer.write_eof()
                    return (await reader.read()).decode(errors="replace")
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise HAProxyError(command, f"cannot talk to {path}: {exc!r}") from exc

    async def admin(self, command: str, ok: Iterable[str] = ("",)) -> str:
        """Run ``command`` on the current worker; an answer not starting with one of
        ``ok`` (HAProxy says nothing when a ``set`` works) is its error."""
        out = await self._send(self.paths.admin, command)
        text = out.strip()
        if not any(text.startswith(o) if o else not text for o in ok):
            raise HAProxyError(command, text or "no answer")
        return out

    async def master(self, command: str) -> str:
        return await self._send(self.paths.master, command)

    async def servers_state(self) -> list[ServerRow]:
        return parse_servers_state(await self.state_dump())

    async def servers_conns(self) -> dict[tuple[str, str], int]:
        """Connections per server (in use + idle): ``del server`` refuses both."""
        return parse_servers_conn(await self.admin("show servers conn", ok=("#",)))

    async def state_dump(self) -> str:
        return await self.admin("show servers state", ok=("1",))

    async def add_server(self, backend: str, s: Server) -> None:
        key = f"{backend}/{s.name}"
        await self.admin(
            f"add server {key} {_bind(s.address, s.port)} {_SERVER_OPTS}", ok=("New server",)
        )
        # Dynamic servers start with checks off and in maintenance.
        await self.admin(f"enable health {key}")
        await self.set_state(backend, s.name, "ready")

    async def set_state(self, backend: str, server: str, state: str) -> None:
        await self.admin(f"set server {backend}/{server} state {state}")

    async def set_addr(self, backend: str, s: Server) -> None:
        await self.admin(
            f"set server {backend}/{s.name} addr {s.address} port {s.port}",
            ok=("IP changed", "no need", "port changed"),
        )

    async def shutdown_sessions(self, backend: str, server: str) -> None:
        await self.admin(f"shutdown sessions server {backend}/{server}")

    async def del_server(self, backend: str, server: str) -> None:
        await self.admin(f"del server {backend}/{server}", ok=("Server deleted",))

    async def show_proc(self) -> ProcInfo:
        return parse_proc(await self.master("show proc"))


def parse_servers_state(text: str) -> list[ServerRow]:
    """``show servers state`` (format 1): a version line, a header, one server a line."""
    rows = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 19 or f[0].startswith("#"):
            continue
        # be_id be_name srv_id srv_name srv_addr op_state admin_state ... srv_port (19th)
        rows.append(ServerRow(f[1], f[3], f[4], int(f[18]), int(f[5]), int(f[6])))
    return rows


def parse_servers_conn(text: str) -> dict[tuple[str, str], int]:
    """``show servers conn``: used_cur + idle_cur per server. The per-thread columns at
    the end are missing on dynamic servers (2.6), so only the fixed ones are read."""
    conns = {}
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 13 or "/" not in f[0]:
            continue
        backend, _, server = f[0].partition("/")
        # bkname/svname bkid/svid addr port - purge_delay used_cur ... idle_lim idle_cur
        conns[(backend, server)] = int(f[6]) + int(f[12])
    return conns


def parse_proc(text: str) -> ProcInfo:
    """The master CLI's ``show proc``: the master line, then ``# workers`` (current and,
    after a failed reload, the one still serving), ``# old workers``, ``# programs``."""
    master, reloads, workers = 0, -1, []
    section = ""
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0].startswith("#"):
            section = line
            continue
        if len(f) >= 3 and f[1] == "master":
            master, reloads = int(f[0]), int(f[2])
        elif section.startswith("# workers") and len(f) >= 3 and f[1] == "worker":
            workers.append((int(f[0]), int(f[2])))
    if not master:
        raise HAProxyError("show proc", text.strip() or "no answer")
    return ProcInfo(master, reloads, tuple(workers))
