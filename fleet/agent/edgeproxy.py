"""The edge proxy of an agent started with ``--ingress ADDR:PORT``: a real HAProxy, run
as a host process in its own session or in a sibling container
(``fleet.agent.edgelaunch``), kept in line with the newest EdgeConfig by a background
task.

Each look is level-triggered: observe HAProxy (``show servers state``/``conn`` and the
routes its config was rendered from, kept in ``routes.json``), plan
(``fleet.agent.edge.plan``), then reload for a route change and apply the runtime
actions (``fleet.agent.haproxy``). HAProxy outlives the agent: ``stop`` leaves it
serving, and the next ``start`` on the same state dir adopts it (pidfile + master
socket) and carries on from what it serves, without a reload when the routes did not
change. A HAProxy that dies is started again, with a backoff when it keeps dying.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from fleet.agent.edge import (
    Action,
    Backend,
    EdgePlan,
    Route,
    Server,
    ServerKey,
    Table,
    plan,
    table_from_config,
)
from fleet.agent.edgelaunch import Launcher, ProcessLauncher
from fleet.agent.haproxy import HAProxyError, Paths, Sockets, render, split_listen
from fleet.proto import fleet_pb2 as pb

__all__ = ["EdgeProxy"]

log = logging.getLogger(__name__)

_WAITING_LOOK = 0.5  # seconds between looks while a removed server still has connections
_IDLE_LOOK = 10.0  # seconds between looks otherwise (drift repair; death wakes us at once)
_REMOVE_BOUND = 60.0  # seconds a removed server may keep connections before they are shut
_START_TIMEOUT = 10.0  # seconds for HAProxy to start or reload
_BACKOFF_MAX = 30.0


class EdgeProxy:
    """HAProxy on ``listen`` for this edge host, its files in ``state_dir``."""

    def __init__(
        self,
        listen: str,
        state_dir: Path,
        haproxy: str = "haproxy",
        launcher: Launcher | None = None,
    ) -> None:
        self.listen = listen
        self.launcher: Launcher = launcher or ProcessLauncher()
        self._listen_port = split_listen(listen)[1]  # ValueError names a bad address
        self.paths = Paths(Path(state_dir))
        # Debian puts it in /usr/sbin, which a user's PATH may lack.
        self.haproxy = shutil.which(haproxy) or shutil.which(haproxy, path="/usr/sbin") or haproxy
        self.sockets = Sockets(self.paths)
        self.applied_version = 0  # the EdgeConfig version HAProxy serves
        self.reloads = 0
        self.last_reload_seconds = 0.0  # from "reload" to the new worker answering
        self.restarts = 0
        self._desired: Table | None = None
        self._version = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pid = 0
        self._child = False  # started by this object: it reaps the process
        self._pidfd = -1
        self._pid_gone = 0  # our child, reaped: its pid may be anyone's now
        self._exit = "not our child: exit status unknown"
        self._routes: frozenset[Route] | None = None  # of the running config; None: unknown
        self._waiting_since: dict[ServerKey, float] = {}
        self._started_at = 0.0
        self._restart_backoff = 0.0

    @property
    def pid(self) -> int:
        """The HAProxy master's pid (0 before start)."""
        return self._pid

    async def start(self) -> None:
        """Adopt the HAProxy this state dir's pidfile names, or start one; then keep it
        in line with ``update`` in the background. Raises ``HAProxyError`` when a new
        one cannot start (its log says why: a taken port, a missing binary)."""
        self.paths.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.paths.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not await self._adopt():
            await self._spawn(self._desired or Table())
        self._task = asyncio.create_task(self._run(), name="edge-proxy")

    def update(self, config: pb.EdgeConfig) -> None:
        """Take ``config`` if it is newer than the last one; applied in the background."""
        if config.version <= self._version:
            log.debug("edge: config %d ignored (have %d)", config.version, self._version)
            return
        table, problems = table_from_config(
            config, reserved={self._listen_port: "the HTTP ingress"}
        )
        for problem in problems:
            log.warning("edge: config %d: %s", config.version, problem)
        self._desired, self._version = table, config.version
        self._wake.set()

    async def stop(self) -> None:
        """Stop the background task; HAProxy keeps running (and serving)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._unwatch()

    async def close_for_good(self) -> None:
        """Stop the task and HAProxy too (tests, an agent whose ``--ingress`` went)."""
        await self.stop()
        if self._pid and self._alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGTERM)  # the master stops its workers
            await self._exited(5.0)
            if self._alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._pid, signal.SIGKILL)
        await self.launcher.forget()
        for path in (self.paths.pidfile, self.paths.routes, self.paths.server_state):
            path.unlink(missing_ok=True)
        log.info("edge: haproxy (pid %d) stopped for good", self._pid)

    # -- the process ---------------------------------------------------------------

    async def _adopt(self) -> bool:
        try:
            pid = int(self.paths.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        self._pid, self._child = pid, False
        if not self._alive():
            log.info("edge: haproxy of pidfile (pid %d) is gone; starting a new one", pid)
            return False
        try:
            proc = await self.sockets.show_proc()
        except HAProxyError as exc:
            log.warning("edge: pid %d does not answer as haproxy (%s); starting anew", pid, exc)
            return False
        if proc.master != pid:
            return False
        self._routes = self._load_routes()
        self._watch()
        log.info(
            "edge: adopted running haproxy (master pid %d, workers %s, %s routes known)",
            pid,
            [w for w, _ in proc.workers],
            "no" if self._routes is None else len(self._routes),
        )
        return True

    def _load_routes(self) -> frozenset[Route] | None:
        try:
            data = json.loads(self.paths.routes.read_text())
            if data["listen"] != self.listen:
                log.info(
                    "edge: haproxy listens on %s, not %s: reloading", data["listen"], self.listen
                )
                return None
            return frozenset(
                Route(
                    r["app"],
                    tuple(r["hosts"]),
                    r["path"],
                    r["tcp_port"],
                    r["check_path"],
                    float(r.get("timeout", 0.0)),  # not in the files of earlier agents
                )
                for r in data["routes"]
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unknown: the next look reloads with the desired routes

    def _save_routes(self, routes: frozenset[Route]) -> None:
        data = {
            "listen": self.listen,
            "routes": [
                {
                    "app": r.app,
                    "hosts": list(r.hosts),
                    "path": r.path,
                    "tcp_port": r.tcp_port,
                    "check_path": r.check_path,
                    "timeout": r.timeout,
                }
                for r in sorted(routes)
            ],
        }
        _write(self.paths.routes, json.dumps(data, indent=1))
        self._routes = routes

    async def _spawn(self, desired: Table) -> None:
        base = plan(Table(), desired).base  # a new backend's ready servers, in the config
        text = render(base, self.listen, self.paths)
        await self._check(text)
        _write(self.paths.config, text)
        # A fresh start begins from the config: an old state file would be stale.
        for path in (self.paths.server_state, self.paths.master, self.paths.admin):
            path.unlink(missing_ok=True)
        self._pid, self._child = await self.launcher.spawn(self.haproxy, self.paths)
        self._started_at = time.monotonic()
        self._watch()
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if not self._alive():
                raise HAProxyError("start", f"haproxy exited at start: {self._log_tail()}")
            try:
                proc = await self.sockets.show_proc()
                if proc.workers:
                    break
            except HAProxyError:
                pass
            if time.monotonic() > deadline:
                raise HAProxyError("start", f"haproxy did not start: {self._log_tail()}")
            await asyncio.sleep(0.05)  # no event tells when its socket is bound
        self._save_routes(base.routes)
        log.info("edge: started haproxy (master pid %d) on %s", self._pid, self.listen)

    async def _check(self, text: str) -> None:
        """``haproxy -c`` on ``text``: a config error stops here, not in a reload."""
        candidate = self.paths.dir / "haproxy.cfg.new"
        _write(candidate, text)
        proc = await asyncio.create_subprocess_exec(
            self.haproxy,
            "-c",
            "-f",
            str(candidate),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        candidate.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise HAProxyError("check config", out.decode(errors="replace").strip())

    def _alive(self) -> bool:
        if not self._pid:
            return False
        if self._child:
            try:
                done, status = os.waitpid(self._pid, os.WNOHANG)
            except ChildProcessError:
                self._child = False
            else:
                if done:
                    self._child = False
                    code = os.waitstatus_to_exitcode(status)
                    self._exit = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                    self._pid_gone = self._pid
                return not done
        if self._pid == self._pid_gone:
            return False
        try:
            with open(f"/proc/{self._pid}/stat") as f:
                return f.read().rpartition(")")[2].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    def _watch(self) -> None:
        """Wake the task the moment HAProxy's master exits (a pidfd is readable then)."""
        self._unwatch()
        try:
            self._pidfd = os.pidfd_open(self._pid)
        except OSError:
            return  # gone already: the next look sees it
        asyncio.get_running_loop().add_reader(self._pidfd, self._wake.set)

    def _unwatch(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    async def _exited(self, within: float) -> None:
        """Wait (up to ``within`` seconds) for the master to exit; reaped if ours."""
        try:
            fd = os.pidfd_open(self._pid)
        except OSError:
            return  # already gone
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()
        loop.add_reader(fd, gone.set)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), within)
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        self._alive()  # reaps our child

    def _log_tail(self) -> str:
        try:
            lines = self.paths.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        # The alerts of its last start say why; notices only pad the message.
        alerts = [line for line in lines[-20:] if "[ALERT]" in line]
        return " | ".join(alerts[-3:] or lines[-3:]) or "(empty log)"

    # -- the loop --------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            self._wake.clear()
            try:
                waiting = await self._look()
                backoff = 0.5
            except (HAProxyError, OSError) as exc:
                log.warning("edge: %s; looking again in %.1fs", exc, backoff)
                waiting = await self._backoff(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            except Exception:  # a bug must not leave the edge unattended
                log.exception("edge: unexpected error; looking again in %.1fs", backoff)
                waiting = await self._backoff(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _WAITING_LOOK if waiting else _IDLE_LOOK)

    async def _backoff(self, seconds: float) -> bool:
        await asyncio.sleep(seconds)
        return True

    async def _look(self) -> bool:
        """One pass: HAProxy running, then on the desired table. True while servers
        wait to be deleted (look again soon)."""
        if not self._alive():
            await self._restart()
        desired = self._desired
        if desired is None:
            return False  # nothing asked yet: keep serving what runs
        version = self._version
        current = await self._observe()
        now = time.monotonic()
        p = plan(current, desired, now=now, waiting_since=self._waiting_since, bound=_REMOVE_BOUND)
        if p.reload:
            try:
                await self._reload(p.base)
            except HAProxyError:
                # One route HAProxy refuses must not freeze the others: their servers
                # still follow the config, through the runtime API.
                await self._apply(plan(current, _same_routes(current, desired), now=now))
                raise
        await self._apply(p, now)
        if self.applied_version != version:
            self.applied_version = version
            log.info("edge: config %d applied", version)
        return bool(p.waiting)

    async def _apply(self, p: EdgePlan, now: float | None = None) -> None:
        for action in p.actions:
            await self._do(action)
        if now is not None:
            self._waiting_since = {k: self._waiting_since.get(k, now) for k in p.waiting}

    async def _restart(self) -> None:
        self._unwatch()
        # Quick deaths in a row back off (1 s, 2 s, ... 30 s); a long run resets it.
        quick = time.monotonic() - self._started_at < 30
        self._restart_backoff = (
            min(max(1.0, self._restart_backoff * 2), _BACKOFF_MAX) if quick else 0
        )
        log.warning(
            "edge: haproxy (pid %d) is gone (%s); starting it again in %.0fs",
            self._pid,
            self._exit,
            self._restart_backoff,
        )
        await asyncio.sleep(self._restart_backoff)
        self.restarts += 1
        self._routes = None
        await self._spawn(self._desired or Table())

    async def _observe(self) -> Table:
        if self._routes is None:
            return Table()  # routes unknown: the plan reloads to the desired ones
        rows = await self.sockets.servers_state()
        conns = await self.sockets.servers_conns()
        servers: dict[str, dict[str, Server]] = {r.backend: {} for r in self._routes}
        for row in rows:
            if row.backend in servers:
                servers[row.backend][row.name] = Server(
                    row.name,
                    row.address,
                    row.port,
                    row.state,  # type: ignore[arg-type]
                    conns.get((row.backend, row.name), 0),
                )
        return Table({r.backend: Backend(r, servers[r.backend]) for r in self._routes})

    async def _reload(self, base: Table) -> None:
        text = render(base, self.listen, self.paths)
        await self._check(text)
        before = await self.sockets.show_proc()
        # The new worker loads these states: draining stays draining.
        _write(self.paths.server_state, await self.sockets.state_dump())
        previous = self.paths.config.read_text()
        _write(self.paths.config, text)
        started = time.monotonic()
        await self.sockets.master("reload")
        deadline = started + _START_TIMEOUT
        while True:
            await asyncio.sleep(0.02)  # the master re-executes itself; nothing to await
            with contextlib.suppress(HAProxyError):
                proc = await self.sockets.show_proc()
                if proc.reloads > before.reloads:
                    break
            if time.monotonic() > deadline:
                raise HAProxyError("reload", f"the master did not come back: {self._log_tail()}")
        new = [pid for pid, survived in proc.workers if survived == 0]
        if not new:
            _write(self.paths.config, previous)  # a restart must not meet the bad one
            raise HAProxyError("reload", f"haproxy kept the old config: {self._log_tail()}")
        await self._until_admin_is(new[0], deadline)
        self._save_routes(base.routes)
        self.reloads += 1
        self.last_reload_seconds = time.monotonic() - started
        log.info(
            "edge: reloaded haproxy in %.0f ms for new routes (worker %d): %s",
            self.last_reload_seconds * 1000,
            new[0],
            ", ".join(sorted(r.backend for r in base.routes)) or "none",
        )

    async def _until_admin_is(self, worker: int, deadline: float) -> None:
        """Runtime commands must reach the new worker, not the leaving one."""
        while True:
            with contextlib.suppress(HAProxyError):
                info = await self.sockets.admin("show info", ok=("Name:",))
                if f"\nPid: {worker}\n" in info:
                    return
            if time.monotonic() > deadline:
                raise HAProxyError("reload", f"worker {worker} does not answer its socket")
            await asyncio.sleep(0.02)

    async def _do(self, action: Action) -> None:
        backend, s = action.backend, action.server
        if action.kind == "add":
            await self.sockets.add_server(backend, s)
        elif action.kind == "set_addr":
            await self.sockets.set_addr(backend, s)
        elif action.kind == "shutdown":
            await self.sockets.shutdown_sessions(backend, s.name)
        elif action.kind == "delete":
            await self.sockets.del_server(backend, s.name)
        else:
            await self.sockets.set_state(backend, s.name, action.kind)
        log.info("edge: %s", action)


def _same_routes(current: Table, desired: Table) -> Table:
    """``desired``'s servers on ``current``'s routes: what can change without a reload."""
    return Table(
        {
            name: Backend(b.route, desired.backends[name].servers)
            if name in desired.backends
            else b
            for name, b in current.backends.items()
        }
    )


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole: a crash leaves the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
