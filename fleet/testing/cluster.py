"""A local multi-host cluster in the foreground: `python -m fleet.testing.cluster up N`.

`up` starts a `HostPool`, writes a JSON state file, runs the optional `--on-ready` hook and
holds everything until SIGTERM/SIGINT, then tears down; `wait`, `status` and `down` are for
`deploy/local-cluster`, which runs `up` in the background.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fleet.testing.dockerhosts import HostPool, cleanup_stale
from fleet.testing.procs import SYSTEM_PATH, ManagedProcess, kill_pid, pid_alive, wait_until

STATE_FILE = "cluster.json"
DEFAULT_STATE_DIR = Path(".fleet/local-cluster")

# A hook gets the started pool and the state dict (already written to disk) and returns
# the long-running processes it started (agents, ...) so teardown can stop them first.
OnReady = Callable[[HostPool, dict[str, Any]], Sequence[ManagedProcess]]


def state_path(state_dir: Path) -> Path:
    """The cluster's JSON state file inside `state_dir`."""
    return state_dir / STATE_FILE


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The state written by a running `up`, or None if there is none."""
    try:
        data = json.loads(state_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def shell_hook(command: str, state_dir: Path) -> OnReady:
    """Make an `OnReady` hook that runs `command` via `sh -c` with the state file in its env.

    The command sees FLEET_CLUSTER_STATE (the JSON file) and FLEET_CLUSTER_HOSTS
    (`name=docker_url` pairs); if it keeps running it is stopped before the hosts go down.
    """

    def hook(pool: HostPool, state: dict[str, Any]) -> Sequence[ManagedProcess]:
        env = dict(os.environ)
        env["PATH"] = env.get("PATH", "") + ":" + SYSTEM_PATH
        env["FLEET_CLUSTER_STATE"] = str(state_path(state_dir).resolve())
        env["FLEET_CLUSTER_HOSTS"] = " ".join(f"{h.name}={h.docker_url}" for h in pool.hosts)
        proc = ManagedProcess(
            ["/bin/sh", "-c", command], state_dir / "on-ready.log", name="on-ready", env=env
        ).start()
        return [proc]

    return hook


def serve(
    count: int,
    state_dir: Path,
    *,
    prefix: str | None = None,
    insecure_registries: Sequence[str] = (),
    on_ready: OnReady | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Start `count` hosts, write the state file, run `on_ready`, hold until stopped, tear down.

    It returns when `stop_event` is set or on SIGTERM/SIGINT (when run in the main thread).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    cleanup_stale()
    pool = HostPool(count, prefix=prefix, insecure_registries=insecure_registries)
    hooked: Sequence[ManagedProcess] = ()
    try:
        pool.start()
        state = {"pid": os.getpid(), "started_at": time.time(), **pool.describe()}
        _write_json(state_path(state_dir), state)
        if on_ready is not None:
            hooked = on_ready(pool, state)
        print(f"local cluster {pool.prefix} up: {count} hosts", flush=True)
        stop.wait()
    finally:
        for proc in hooked:
            proc.stop()
        state_path(state_dir).unlink(missing_ok=True)
        pool.close()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def format_state(state: dict[str, Any]) -> str:
    """One line per host: name, address, docker URL."""
    lines = [f"subnet {state['subnet']}  gateway {state['gateway']}  pid {state['pid']}"]
    for h in state["hosts"]:
        lines.append(f"{h['name']:<4} {h['address']:<15} {h['docker_url']}")
    return "\n".join(lines)


def _cmd_wait(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    log = state_dir / "cluster.log"

    def ready() -> dict[str, Any] | None:
        if args.pid and not pid_alive(args.pid):
            raise RuntimeError("the cluster process exited")
        return read_state(state_dir)

    try:
        state = wait_until(ready, args.timeout, what="the local cluster to come up")
    except (RuntimeError, TimeoutError) as exc:
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        print(f"local-cluster: {exc}\n{tail}", file=sys.stderr)
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
    if pid is None or not pid_alive(pid):
        print("local-cluster: not running")
        return 0
    kill_pid(pid, timeout=args.timeout)
    cleanup_stale()  # in case teardown had to be cut short by SIGKILL
    print(f"local-cluster: stopped (pid {pid})")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    hook = shell_hook(args.on_ready, args.state_dir) if args.on_ready else None
    serve(
        args.count,
        args.state_dir,
        prefix=args.prefix,
        insecure_registries=args.insecure_registry,
        on_ready=hook,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see `--help`."""
    parser = argparse.ArgumentParser(prog="python -m fleet.testing.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start N hosts and hold them in the foreground")
    up.add_argument("count", type=int)
    up.add_argument("--prefix", help="short [a-z0-9] name for the pool's netns/bridge")
    up.add_argument("--insecure-registry", action="append", default=[])
    up.add_argument(
        "--on-ready",
        metavar="CMD",
        help="shell command run once the hosts answer (e.g. start one agent per host); "
        "gets FLEET_CLUSTER_STATE and FLEET_CLUSTER_HOSTS, is stopped at teardown",
    )
    up.set_defaults(func=_cmd_up)
    wait = sub.add_parser("wait", help="wait for the state file of a starting `up`")
    wait.add_argument("--pid", type=int, help="pid of the `up` process, to fail fast if it dies")
    wait.add_argument("--timeout", type=float, default=180.0)
    wait.set_defaults(func=_cmd_wait)
    status = sub.add_parser("status", help="print the running cluster's hosts")
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
