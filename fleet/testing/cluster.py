"""A local multi-host fleet in the foreground: `python -m fleet.testing.cluster up N`.

`up` starts a `HostPool` of N hosts (network namespaces, one dockerd each) and, unless
`--no-fleet`, a whole fleet on them: an etcd, one `fleet server` and one `fleet agent` per
host, with the demo image `fleet-demo/hello:v1` imported into every daemon. It keeps a JSON
state file up to date as things start, runs the optional `--on-ready` hook once every agent
is connected, and holds everything until SIGTERM/SIGINT; then it tears down in reverse
(hook, agents, server, etcd, hosts). `wait`, `status` and `down` are for
`deploy/local-cluster`, which runs `up` in the background.

Over 600 lines on purpose: one command's start-up and tear-down in reverse order,
which read best side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.errors import FleetError
from fleet.testing.certs import TestPKI
from fleet.testing.dockerhosts import HostPool, cleanup_stale
from fleet.testing.etcd import EtcdServer
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from fleet.testing.procs import (
    SYSTEM_PATH,
    ManagedProcess,
    ProcessError,
    kill_pid,
    pid_alive,
    pid_cmdline,
    pid_start_time,
    tail,
    wait_until,
)

STATE_FILE = "cluster.json"
DEFAULT_STATE_DIR = Path(".fleet/local-cluster")
DEFAULT_LISTEN = "127.0.0.1:7400"
FLEET_PREFIX = "/fleet/"
DEMO_REPOSITORY = "fleet-demo/hello"
DEMO_TAG = "v1"
DEMO_IMAGE = f"{DEMO_REPOSITORY}:{DEMO_TAG}"
ETCD_DIR = "etcd"
SERVER_LOG = "server.log"

# A hook gets the started pool and the state dict (already written to disk) and returns
# the long-running processes it started so teardown can stop them first.
OnReady = Callable[[HostPool, dict[str, Any]], Sequence[ManagedProcess]]


class ClusterError(RuntimeError):
    """The cluster cannot start for a reason the user can fix; the message says which."""


class _Stopped(Exception):
    """SIGTERM/SIGINT (or `stop_event`) arrived while the cluster was still starting."""


def state_path(state_dir: Path) -> Path:
    """The cluster's JSON state file inside `state_dir`."""
    return state_dir / STATE_FILE


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The state written by a running (or starting) `up`, or None if there is none."""
    try:
        data = json.loads(state_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def split_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` as (host, port); raise `ClusterError` if it is not one."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"listen address {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def check_listen_free(address: str) -> None:
    """Raise `ClusterError` unless something could listen on `address` right now.

    gRPC servers bind with SO_REUSEPORT, so a second `fleet server` on a taken port would
    silently share it instead of failing: this plain bind (SO_REUSEADDR only, so sockets
    in TIME_WAIT do not count) fails on any listener there.
    """
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ClusterError(f"cannot resolve listen address {address!r}: {exc}") from exc
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ClusterError(
                    f"{address} is already in use (another local cluster or `fleet server`?); "
                    "stop it (`deploy/local-cluster down`) or pick another address with --listen"
                ) from None
            raise ClusterError(f"cannot listen on {address}: {exc.strerror}") from None


def shell_hook(command: str, state_dir: Path) -> OnReady:
    """Make an `OnReady` hook that runs `command` via `sh -c` with the state file in its env.

    The command sees FLEET_CLUSTER_STATE (the JSON file), FLEET_CLUSTER_HOSTS
    (`name=docker_url` pairs) and, with a fleet, FLEET_SERVER; if it keeps running it is
    stopped before the fleet and the hosts go down.
    """

    def hook(pool: HostPool, state: dict[str, Any]) -> Sequence[ManagedProcess]:
        env = dict(os.environ)
        env["PATH"] = env.get("PATH", "") + ":" + SYSTEM_PATH
        env["FLEET_CLUSTER_STATE"] = str(state_path(state_dir).resolve())
        env["FLEET_CLUSTER_HOSTS"] = " ".join(f"{h.name}={h.docker_url}" for h in pool.hosts)
        fleet = state.get("fleet")
        if fleet:
            env["FLEET_SERVER"] = fleet["server"]["address"]
            env["FLEET_PKI_DIR"] = str((state_dir / "pki").resolve())
        proc = ManagedProcess(
            ["/bin/sh", "-c", command], state_dir / "on-ready.log", name="on-ready", env=env
        ).start()
        return [proc]

    return hook


def _process_record(proc: ManagedProcess) -> dict[str, Any]:
    """pid, start time (to tell a reused pid apart) and log of a started process."""
    pid = proc.pid if proc.running else None
    return {
        "pid": pid,
        "start_time": pid_start_time(pid) if pid is not None else None,
        "log": str(proc.log_path),
    }


@dataclass
class FleetOptions:
    """How `up` runs fleet on the hosts."""

    listen: str = DEFAULT_LISTEN
    labels: dict[str, str] = field(default_factory=dict)
    prefix: str = FLEET_PREFIX
    connect_timeout: float = 60.0


class LocalFleet:
    """etcd, one `fleet server` and one `fleet agent` per host of a started `HostPool`.

    Logs and etcd's data live in `state_dir`; etcd's data is wiped at start and at stop.
    """

    def __init__(self, pool: HostPool, state_dir: Path, options: FleetOptions) -> None:
        self.pool = pool
        self.state_dir = state_dir
        self.options = options
        self.etcd = EtcdServer(name="etcd", data_dir=state_dir / ETCD_DIR / "data")
        self.server: FleetServerProcess | None = None
        self.pki = TestPKI(state_dir / "pki")  # clients: export FLEET_PKI_DIR=<state>/pki
        self.agents: list[FleetAgentProcess] = []

    @property
    def address(self) -> str:
        """The server's gRPC address (what FLEET_SERVER should be)."""
        return self.options.listen

    def agent_labels(self, host_name: str) -> dict[str, str]:
        """The labels of one host's agent: those of `--label`, plus `host=<name>` (its own
        claims, which constraints match as ``agent.<key>``)."""
        return {**self.options.labels, "host": host_name}

    def clear_previous(self) -> None:
        """Remove the logs and etcd data a previous `up` in this state dir left."""
        shutil.rmtree(self.state_dir / ETCD_DIR, ignore_errors=True)
        for old in [self.state_dir / SERVER_LOG, *self.state_dir.glob("agent-*.log")]:
            old.unlink(missing_ok=True)

    def start(self, checkpoint: Callable[[], None]) -> None:
        """Start etcd, import the demo image, start the server and agents, and wait until
        every agent is connected; `checkpoint()` runs after each step (it records state and
        raises to abort when a stop was requested)."""
        self.clear_previous()
        self.etcd.start()
        checkpoint()
        with ThreadPoolExecutor(max_workers=len(self.pool.hosts)) as executor:
            list(
                executor.map(
                    lambda h: ensure_image(
                        h.client(), DEMO_REPOSITORY, DEMO_TAG, f"Hello from fleet on {h.name}!\n"
                    ),
                    self.pool.hosts,
                )
            )
        checkpoint()
        check_listen_free(self.address)  # again: the hosts took a while to start
        self.server = FleetServerProcess(
            self.etcd.endpoint,
            self.options.prefix,
            self.state_dir,
            self.pki,
            listen=self.address,
            log_name=SERVER_LOG,
        )
        self.server.start()
        checkpoint()
        for h in self.pool.hosts:
            agent = FleetAgentProcess(
                [self.address],
                h.name,
                h.docker_url,
                self.state_dir,
                self.pki,
                self.agent_labels(h.name),
            )
            self.agents.append(agent.start())
        checkpoint()
        self._wait_connected(checkpoint)

    def _wait_connected(self, checkpoint: Callable[[], None]) -> None:
        want = {h.name for h in self.pool.hosts}
        server = self.server
        assert server is not None
        with server.client(timeout=5) as client:

            def all_connected() -> bool:
                checkpoint()
                server.process.check_running()
                for agent in self.agents:
                    agent.process.check_running()
                return want <= {h.host_id for h in client.hosts() if h.connected}

            try:
                wait_until(
                    all_connected,
                    self.options.connect_timeout,
                    interval=0.1,
                    what=f"agents {', '.join(sorted(want))} to connect",
                    ignore=(FleetError,),
                )
            except TimeoutError as exc:
                logs = "\n".join(
                    f"--- last lines of {a.process.log_path} ---\n{a.process.log_tail(15)}"
                    for a in self.agents
                )
                raise ProcessError(f"{exc}\n{logs}") from exc

    def stop(self) -> list[str]:
        """Stop the agents, then the server, then etcd, and delete etcd's data (idempotent);
        return what failed."""
        errors: list[str] = []

        def attempt(what: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as exc:
                errors.append(f"{what}: {exc!r}")

        if self.agents:
            with ThreadPoolExecutor(max_workers=len(self.agents)) as executor:
                for agent in self.agents:
                    executor.submit(attempt, f"agent {agent.host_id}", agent.stop)
        if self.server is not None:
            attempt("fleet server", self.server.stop)
        attempt("etcd", self.etcd.stop)
        shutil.rmtree(self.etcd.data_dir, ignore_errors=True)
        return errors

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: the server, etcd and each agent with pid and log."""
        etcd_pid = self.etcd.pid
        return {
            "prefix": self.options.prefix,
            "image": DEMO_IMAGE,
            "server": {
                "address": self.address,
                **(_process_record(self.server.process) if self.server else {"pid": None}),
            },
            "etcd": {
                "endpoint": self.etcd.endpoint,
                "data_dir": str(self.etcd.data_dir),
                "pid": etcd_pid,
                "start_time": pid_start_time(etcd_pid) if etcd_pid is not None else None,
                "log": str(self.etcd.log_path),
            },
            "agents": [
                {
                    "host_id": a.host_id,
                    "labels": self.agent_labels(a.host_id),
                    **_process_record(a.process),
                }
                for a in self.agents
            ],
        }


def serve(
    count: int,
    state_dir: Path,
    *,
    prefix: str | None = None,
    insecure_registries: Sequence[str] = (),
    fleet: FleetOptions | None = None,
    on_ready: OnReady | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Start `count` hosts (and a fleet on them unless `fleet` is None), keep the state
    file current, run `on_ready`, hold until stopped, then tear everything down.

    It returns when `stop_event` is set or on SIGTERM/SIGINT (when run in the main thread),
    also while still starting; a failure to start tears down what started, then raises.
    """
    if fleet is not None:
        check_listen_free(fleet.listen)  # before anything starts
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    cleanup_stale()
    pool = HostPool(count, prefix=prefix, insecure_registries=insecure_registries)
    local = LocalFleet(pool, state_dir, fleet) if fleet is not None else None
    hooked: list[ManagedProcess] = []
    state: dict[str, Any] = {"pid": os.getpid(), "started_at": time.time(), "ready": False}
    written: list[dict[str, Any]] = []

    def record() -> None:
        state.update(pool.describe())
        state["state_dir"] = str(state_dir)
        state["fleet"] = local.describe() if local is not None else None
        state["hooks"] = [{"name": p.name, **_process_record(p)} for p in hooked]
        if written != [state]:  # a deep comparison: write only what changed
            _write_json(state_path(state_dir), state)
            written[:] = [json.loads(json.dumps(state))]

    def checkpoint() -> None:
        record()
        if stop.is_set():
            raise _Stopped

    try:
        record()
        pool.start()
        checkpoint()
        if local is not None:
            local.start(checkpoint)
        state["ready"] = True
        record()
        if on_ready is not None:
            hooked.extend(on_ready(pool, state))
            record()
        print(format_state(state), flush=True)
        stop.wait()
    except _Stopped:
        print("local-cluster: stopped while starting", flush=True)
    finally:
        errors = _teardown(pool, local, hooked)
        state_path(state_dir).unlink(missing_ok=True)
        if errors:
            print("local-cluster: teardown: " + "; ".join(errors), file=sys.stderr, flush=True)


def _teardown(
    pool: HostPool, local: LocalFleet | None, hooked: Sequence[ManagedProcess]
) -> list[str]:
    """Stop the hook's processes, the fleet (agents, server, etcd), then the hosts."""
    errors: list[str] = []
    for proc in hooked:
        try:
            _stop_group(proc)
        except Exception as exc:
            errors.append(f"{proc.name}: {exc!r}")
    if local is not None:
        errors += local.stop()
    try:
        pool.close()
    except Exception as exc:
        errors.append(repr(exc))
    return errors


def _stop_group(proc: ManagedProcess) -> None:
    """Stop a hook's shell and whatever it started: it leads its own session and group."""
    pgid = proc.pid
    if pgid is not None and proc.running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    proc.stop()
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # children that ignored SIGTERM or outlived sh


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _recorded_processes(state: dict[str, Any]) -> Iterator[tuple[str, int, int | None]]:
    """(name, pid, start time) of every process the state file says `up` started."""
    fleet = state.get("fleet") or {}
    entries: list[tuple[str, Any]] = [
        (f"agent {a.get('host_id')}", a) for a in fleet.get("agents", [])
    ]
    entries += [("fleet server", fleet.get("server")), ("etcd", fleet.get("etcd"))]
    entries = [(str(h.get("name")), h) for h in state.get("hooks", [])] + entries
    for name, entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("pid"), int):
            yield name, entry["pid"], entry.get("start_time")


def format_state(state: dict[str, Any]) -> str:
    """The summary: the server and FLEET_SERVER (with a fleet), then one line per host."""
    hosts = state.get("hosts") or []
    status = "up" if state.get("ready") else "starting"
    lines = [
        f"local cluster {state.get('prefix', '?')} {status}: {len(hosts)} hosts, "
        f"subnet {state.get('subnet') or '-'}, gateway {state.get('gateway') or '-'}, "
        f"pid {state['pid']}"
    ]
    fleet = state.get("fleet")
    if fleet:
        address = fleet["server"]["address"]
        lines += [
            f"fleet server {address} (etcd {fleet['etcd']['endpoint']}, image {fleet['image']})",
            f"  export FLEET_SERVER={address}",
        ]
        if state.get("state_dir"):
            pki = Path(state["state_dir"]).resolve() / "pki"
            lines.append(f"  export FLEET_PKI_DIR={pki}   # the CLI's admin certificate")
    for h in hosts:
        lines.append(f"{h['name']:<4} {h['address']:<15} {h['docker_url']}")
    if state.get("state_dir"):
        lines.append(f"logs and state in {state['state_dir']}")
    return "\n".join(lines)


def _cmd_wait(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    log = state_dir / "cluster.log"

    def ready() -> dict[str, Any] | None:
        if args.pid and not pid_alive(args.pid):
            raise RuntimeError("the cluster process exited")
        state = read_state(state_dir)
        return state if state and state.get("ready") else None

    try:
        state = wait_until(ready, args.timeout, what="the local cluster to come up")
    except (RuntimeError, TimeoutError) as exc:
        print(f"local-cluster: {exc}; last lines of {log}:", file=sys.stderr)
        print(tail(log, 30), file=sys.stderr)
        return 1
    assert state is not None  # wait_until returns only a truthy value
    print(format_state(state))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    if state is None or not pid_alive(int(state["pid"])):
        print("local-cluster: not running", file=sys.stderr)
        return 1
    print(json.dumps(state, indent=2) if args.json else format_state(state))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    pid_file = args.state_dir / "cluster.pid"
    pid: int | None = int(state["pid"]) if state else None
    if pid is None and pid_file.exists():
        pid = int(pid_file.read_text().strip() or 0) or None
    # The pid file may outlive its process; never signal a reused pid.
    running = pid is not None and pid_alive(pid) and _is_cluster_process(pid)
    if running:
        assert pid is not None
        kill_pid(pid, timeout=args.timeout)
    _sweep(args.state_dir, state)
    if running:
        print(f"local-cluster: stopped (pid {pid})")
    elif state is not None:
        print(f"local-cluster: was not running (pid {pid} is gone); removed what it left")
    else:
        print("local-cluster: not running")
    return 0


def _sweep(state_dir: Path, state: dict[str, Any] | None) -> None:
    """Remove what an `up` that died (or whose teardown was cut short by SIGKILL) left: the
    processes it recorded, its hosts (cleanup_stale only touches pools whose owner is gone),
    its state file and etcd data."""
    for _name, child, started in _recorded_processes(state or {}):
        if pid_alive(child) and (started is None or pid_start_time(child) == started):
            kill_pid(child, timeout=10)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)  # it led its own group: what it started
    cleanup_stale()
    state_path(state_dir).unlink(missing_ok=True)
    if etcd_data := ((state or {}).get("fleet") or {}).get("etcd", {}).get("data_dir"):
        shutil.rmtree(etcd_data, ignore_errors=True)


def _is_cluster_process(pid: int) -> bool:
    return any("fleet.testing.cluster" in arg for arg in pid_cmdline(pid))


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--label {value!r} must be KEY=VALUE")
    return key, val


def _cmd_up(args: argparse.Namespace) -> int:
    previous = read_state(args.state_dir)
    if previous is not None:
        if pid_alive(int(previous["pid"])) and _is_cluster_process(int(previous["pid"])):
            print(f"local-cluster: already running (pid {previous['pid']})", file=sys.stderr)
            return 1
        _sweep(args.state_dir, previous)
    hook = shell_hook(args.on_ready, args.state_dir) if args.on_ready else None
    fleet = None
    if not args.no_fleet:
        fleet = FleetOptions(listen=args.listen, labels=dict(args.label))
    try:
        serve(
            args.count,
            args.state_dir,
            prefix=args.prefix,
            insecure_registries=args.insecure_registry,
            fleet=fleet,
            on_ready=hook,
        )
    except (ClusterError, ProcessError, TimeoutError) as exc:
        print(f"local-cluster: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see `--help`."""
    parser = argparse.ArgumentParser(prog="python -m fleet.testing.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start N hosts and a fleet on them, hold in the foreground")
    up.add_argument("count", type=int)
    up.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"the fleet server's address (default {DEFAULT_LISTEN})",
    )
    up.add_argument(
        "--label",
        action="append",
        type=_label,
        default=[],
        metavar="KEY=VALUE",
        help="a label for every host's agent (repeat); each also gets host=<name> "
        "(constraints match these as agent.<key>)",
    )
    up.add_argument(
        "--no-fleet",
        action="store_true",
        help="start only the hosts (no etcd, server, agents or demo image)",
    )
    up.add_argument("--prefix", help="short [a-z0-9] name for the pool's netns/bridge")
    up.add_argument("--insecure-registry", action="append", default=[])
    up.add_argument(
        "--on-ready",
        metavar="CMD",
        help="shell command run once everything is up; gets FLEET_CLUSTER_STATE, "
        "FLEET_CLUSTER_HOSTS and (with a fleet) FLEET_SERVER, is stopped at teardown",
    )
    up.set_defaults(func=_cmd_up)
    wait = sub.add_parser("wait", help="wait until a starting `up` is ready")
    wait.add_argument("--pid", type=int, help="pid of the `up` process, to fail fast if it dies")
    wait.add_argument("--timeout", type=float, default=180.0)
    wait.set_defaults(func=_cmd_wait)
    status = sub.add_parser("status", help="print the running cluster's server and hosts")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)
    down = sub.add_parser("down", help="stop a running `up` (SIGTERM) and wait")
    down.add_argument("--timeout", type=float, default=120.0)
    down.set_defaults(func=_cmd_down)
    for p in (up, wait, status, down):
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
