"""Several Docker hosts on one machine: a network namespace and a real dockerd per host.

The hosts share a private bridge (10.213.X.0/24, gateway .1 in the root namespace), and each
resource is recorded under /run/fleet-test/<prefix>/ first, so `cleanup_stale` can undo a crash.

Over 600 lines on purpose: it is one recipe (bridge, namespaces, per-host dockerd, the
records that undo them), each step leaning on the one before; split, a reader would
chase the order of a setup across files.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import docker
import docker.errors

from fleet.testing.procs import (
    SYSTEM_PATH,
    ManagedProcess,
    ProcessError,
    Service,
    kill_pid,
    pid_alive,
    pid_cmdline,
    pid_start_time,
    pid_state,
    require_binary,
    run,
    tail,
    wait_until,
)

STATE_ROOT = Path("/run/fleet-test")
SUBNET_BASE = "10.213"
DOCKER_API_VERSION = "1.41"
_PREFIX_RE = re.compile(r"^[a-z0-9]{1,8}$")
_MAX_HOSTS = 200
_prefix_counter = 0
_prefix_lock = threading.Lock()


def default_prefix() -> str:
    """A short name unique to this process and call, so concurrent runs and pools never clash."""
    global _prefix_counter
    with _prefix_lock:
        n = _prefix_counter
        _prefix_counter += 1
    return f"t{os.getpid() % 100000}{chr(ord('a') + n % 26)}"


def _ip(*args: str, check: bool = True) -> str:
    return run([require_binary("ip", "/usr/sbin/ip", "/sbin/ip"), *args], check=check)


def _iptables(*args: str, check: bool = True) -> str:
    binary = require_binary("iptables", "/usr/sbin/iptables", "/sbin/iptables")
    return run([binary, "-w", "10", *args], check=check)


def _netns_exists(name: str) -> bool:
    return Path("/var/run/netns", name).exists()


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


@contextlib.contextmanager
def _state_lock(root: Path) -> Iterator[None]:
    """Serialise subnet allocation and stale cleanup between processes on this machine."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine already has an address or a route in."""
    nets: list[ipaddress.IPv4Network] = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Network(parts[parts.index("inet") + 1], strict=False))
    route_types = {"unicast", "local", "broadcast", "multicast", "anycast", "blackhole"}
    route_types |= {"unreachable", "prohibit", "throw", "nat"}
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        parts = line.split()
        if not parts:
            continue
        dest = parts[1] if parts[0] in route_types and len(parts) > 1 else parts[0]
        if dest == "default":
            continue
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.IPv4Network(dest, strict=False))
    return nets


def _pick_subnet() -> ipaddress.IPv4Network:
    """The first 10.213.X.0/24 that overlaps no address or route on this machine."""
    used = _used_networks()
    for x in range(1, 255):
        candidate = ipaddress.IPv4Network(f"{SUBNET_BASE}.{x}.0/24")
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError(f"no free {SUBNET_BASE}.X.0/24 subnet left on this machine")


def _mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below `prefix`, deepest first, read from /proc/self/mounts."""
    base = str(prefix).rstrip("/")
    found: list[str] = []
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
            if mnt == base or mnt.startswith(base + "/"):
                found.append(mnt)
    return sorted(set(found), key=len, reverse=True)


def _unmount_under(prefix: Path) -> None:
    umount = require_binary("umount", "/usr/bin/umount", "/bin/umount")
    for mnt in _mounts_under(prefix):
        run([umount, "-l", mnt], check=False)


def _cgroup_dirs(parent: str) -> list[Path]:
    """The directories of cgroup `parent` in every mounted cgroup hierarchy (v1 or v2)."""
    dirs: list[Path] = []
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] in ("cgroup", "cgroup2"):
                d = Path(parts[1]) / parent.lstrip("/")
                if d.is_dir():
                    dirs.append(d)
    return dirs


def _subdirs(root: Path) -> list[Path]:
    """Every directory under `root`, itself included. os.walk, unlike Path.rglob, shrugs
    off cgroups that the kernel removes while we walk them."""
    return [Path(top) for top, _, _ in os.walk(root)]


def _kill_cgroup(parent: str) -> None:
    """Kill every process left in cgroup `parent` (containers of a dead dockerd), remove it."""
    dirs = _cgroup_dirs(parent)

    def pids() -> set[int]:
        found: set[int] = set()
        for d in dirs:
            for procs in (sub / "cgroup.procs" for sub in _subdirs(d)):
                with contextlib.suppress(OSError, ValueError):
                    found.update(int(p) for p in procs.read_text().split())
        return found

    for pid in pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not pids(), 10, what=f"cgroup {parent} to empty")
    for d in dirs:
        for sub in sorted(_subdirs(d)[1:], key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            d.rmdir()


def _processes_mentioning(path: Path) -> list[int]:
    """Live processes whose argv names a path under `path` (dockerd, containerd, shims)."""
    needle = str(path).rstrip("/") + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        if any(needle in arg for arg in pid_cmdline(int(entry))) and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def _sigkill_processes_mentioning(path: Path) -> list[int]:
    """SIGKILL every process whose argv names a path under `path`, as a power loss
    would; the ones found (none: nothing was left)."""
    found = _processes_mentioning(path)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


def _described(pids: list[int]) -> str:
    """``pid (state) argv`` of each, for an error: a process in state D is stuck in
    the kernel, and no signal ends it until its call returns."""
    lines = [
        f"{pid} ({pid_state(pid) or 'gone'}) {' '.join(pid_cmdline(pid))[:200]}" for pid in pids
    ]
    return "; ".join(lines) or "nothing (gone since)"


def _kill_processes_mentioning(path: Path) -> None:
    """Kill processes whose argv names a path under `path` (dockerd, containerd, shims)."""
    for pid in _processes_mentioning(path):
        kill_pid(pid, timeout=10)


@dataclass(eq=False)
class DockerHost:
    """One simulated Docker host: a network namespace, its address, and its own dockerd.

    `data_dir` is the host's directory: docker's data-root is `data_dir/data`, its exec-root
    `data_dir/exec`, and its socket, pidfile and log sit beside them.
    """

    name: str
    netns: str
    address: str
    veth: str
    bip: str
    data_dir: Path
    cgroup_parent: str
    insecure_registries: list[str] = field(default_factory=list)
    storage_driver: str = "overlay2"
    start_timeout: float = 60.0
    start_seconds: float | None = None
    _proc: ManagedProcess | None = field(default=None, repr=False)
    _client: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def socket_path(self) -> Path:
        """The daemon's unix socket."""
        return self.data_dir / "docker.sock"

    @property
    def docker_url(self) -> str:
        """The daemon's URL, `unix:///run/fleet-test/<prefix>/<host>/docker.sock`."""
        return f"unix://{self.socket_path}"

    @property
    def pidfile(self) -> Path:
        """dockerd's pidfile."""
        return self.data_dir / "docker.pid"

    @property
    def log_path(self) -> Path:
        """dockerd's log (stdout and stderr)."""
        return self.data_dir / "dockerd.log"

    @property
    def daemon_pid(self) -> int | None:
        """The running dockerd's pid, None when it is stopped."""
        proc = self._proc
        return proc.pid if proc is not None and proc.running else None

    def daemon_args(self) -> list[str]:
        """The nsenter + dockerd command line (`ip netns exec` would break dockerd's cgroups)."""
        d = self.data_dir
        args = [
            require_binary("nsenter", "/usr/bin/nsenter"),
            f"--net=/var/run/netns/{self.netns}",
            "--",
            require_binary("dockerd", "/usr/sbin/dockerd"),
            "--config-file",
            str(d / "daemon.json"),
            "--data-root",
            str(d / "data"),
            "--exec-root",
            str(d / "exec"),
            "-H",
            self.docker_url,
            "--pidfile",
            str(self.pidfile),
            "--bip",
            self.bip,
            "--iptables=true",
            "--storage-driver",
            self.storage_driver,
            "--cgroup-parent",
            self.cgroup_parent,
            # Safe even if a system containerd is shared: each host keeps its own namespace.
            "--containerd-namespace",
            self.netns,
            "--containerd-plugins-namespace",
            f"{self.netns}-plugins",
        ]
        for reg in self.insecure_registries:
            args += ["--insecure-registry", reg]
        return args

    def ping(self, timeout: float = 2.0) -> bool:
        """Tell whether the daemon answers `GET /_ping` with OK.

        It speaks HTTP on the socket itself: docker-py leaks a socket (a ResourceWarning,
        an error under pytest) on every refused connection.
        """
        return _unix_ping(self.socket_path, timeout)

    def client(self) -> Any:
        """This host's `docker.DockerClient` (one per host, cached; closed at teardown)."""
        with self._lock:
            if self._client is None:
                self._client = docker.DockerClient(
                    base_url=self.docker_url, version=DOCKER_API_VERSION, timeout=120
                )
            return self._client

    def start_daemon(self, timeout: float | None = None) -> float:
        """Start dockerd (again) with the same dirs and socket; return the seconds it took.

        Falls back from overlay2 to vfs once if overlay2 does not work on this machine.
        """
        if self._proc is not None and self._proc.running:
            raise ProcessError(f"dockerd of {self.name} is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "daemon.json"
        if not config.exists():
            config.write_text("{}\n")  # never read the machine's /etc/docker/daemon.json
        with contextlib.suppress(FileNotFoundError, ValueError):
            stale = int(self.pidfile.read_text().strip() or 0)
            # Stale unless that pid is still this host's dockerd: after a power-off the
            # pid may already be another process's (a busy machine reuses pids fast),
            # and dockerd refuses to start beside a pidfile whose pid is alive.
            ours = stale and pid_alive(stale) and str(self.data_dir) in " ".join(pid_cmdline(stale))
            if not ours:
                self.pidfile.unlink()
        env = {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root")}
        began = time.monotonic()
        self._proc = ManagedProcess(
            self.daemon_args(), self.log_path, name=f"dockerd[{self.name}]", env=env
        ).start()
        try:
            self._proc.wait_ready(
                self.ping, timeout or self.start_timeout, what=f"dockerd of {self.name} to answer"
            )
        except ProcessError:
            if self.storage_driver == "overlay2" and not self._proc.running:
                # Only dockerd's own complaints: its command line (in the log) names
                # overlay2 whatever happened.
                log = self._proc.log_tail(80).lower().replace("--storage-driver overlay2", "")
                if "overlay" in log and "containerd" not in log:
                    self.storage_driver = "vfs"
                    return self.start_daemon(timeout)
            self._proc.stop(5)
            raise
        self.start_seconds = time.monotonic() - began
        return self.start_seconds

    def stop_daemon(self, timeout: float = 20.0) -> None:
        """Stop dockerd (SIGTERM, then SIGKILL after `timeout`); its containers stop with it."""
        if self._proc is not None:
            self._proc.stop(timeout)

    def power_off(self) -> None:
        """As if the machine lost power: SIGKILL dockerd, containerd and the shims, and
        every container process (nothing is stopped cleanly). ``start_daemon()`` boots it."""
        pid = self.daemon_pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        _sigkill_processes_mentioning(self.data_dir)
        _kill_cgroup(self.cgroup_parent)
        if self._proc is not None:
            self._proc.stop(1)  # reaps it
        self.close_client()
        # A containerd that outlived dockerd (or a pidfile naming a zombie nobody reaps)
        # would make the next dockerd wait for it and give up. Killed again at every
        # look: a shim caught starting a process by the first sweep leaves one it did
        # not see (a soak in CI once timed out here, not saying on what).
        try:
            wait_until(
                lambda: not _sigkill_processes_mentioning(self.data_dir),
                30,
                what=f"{self.name}'s daemons to be gone",
            )
        except TimeoutError as error:
            left = _processes_mentioning(self.data_dir)
            raise TimeoutError(f"{error}; still there: {_described(left)}") from error
        exec_root = self.data_dir / "exec"
        for pidfile in exec_root.rglob("*.pid") if exec_root.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                if not pid_alive(int(pidfile.read_text().strip() or 0)):
                    pidfile.unlink()

    def cut_network(self) -> None:
        """Take the host's veth down: the host and its daemon live on but nobody reaches them."""
        _ip("link", "set", self.veth, "down")

    def restore_network(self) -> None:
        """Bring the host's veth back up after `cut_network()`."""
        _ip("link", "set", self.veth, "up")

    def remove_all_containers(self, label: str | None = None) -> int:
        """Force-remove all containers (or those with `label`) on this host; return how many."""
        filters = {"label": label} if label else None
        client = self.client()
        containers = client.containers.list(all=True, filters=filters)

        def gone(container: Any) -> bool:
            try:
                container.reload()
            except docker.errors.NotFound:
                return True
            return False

        def remove(container: Any) -> None:
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                # An agent's own removal may still be running: wait for it to finish.
                if error.status_code != 409:
                    raise
                wait_until(lambda: gone(container), 30, what=f"{container.name} to be removed")

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(remove, containers))
        return len(containers)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of this host's dockerd log."""
        return tail(self.log_path, lines)

    def close_client(self) -> None:
        """Close the cached Docker client (its connection pool)."""
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()
                self._client = None

    def teardown(self) -> None:
        """Remove containers, stop dockerd, kill and unmount what is left, delete its dir."""
        if self.daemon_pid is not None and self.ping():
            with contextlib.suppress(Exception):
                self.remove_all_containers()
        self.close_client()
        self.stop_daemon()
        _destroy_host_dir(self.data_dir, self.cgroup_parent)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: name, address, docker URL, netns, dirs and daemon pid."""
        return {
            "name": self.name,
            "address": self.address,
            "docker_url": self.docker_url,
            "netns": self.netns,
            "veth": self.veth,
            "bip": self.bip,
            "data_dir": str(self.data_dir),
            "daemon_pid": self.daemon_pid,
            "storage_driver": self.storage_driver,
        }


def _unix_ping(path: Path, timeout: float) -> bool:
    """GET /_ping over a unix socket, closing it whatever happens."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except OSError:
        return False
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0] and body == b"OK"


def _destroy_host_dir(data_dir: Path, cgroup_parent: str) -> None:
    """Kill leftover containers and daemons of a host, unmount under its dir, delete the dir."""
    # Containers first: dockerd would otherwise wait 10 s for each one ignoring SIGTERM.
    _kill_cgroup(cgroup_parent)
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(data_dir.joinpath("docker.pid").read_text().strip())
        if any(str(data_dir) in arg for arg in pid_cmdline(pid)):
            kill_pid(pid, timeout=20)
    _kill_processes_mentioning(data_dir)
    _kill_cgroup(cgroup_parent)  # again, in case a dying shim left something behind
    _unmount_under(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


class HostPool(Service):
    """`count` Docker hosts (h1, h2, ...) on one private bridge, each with its own dockerd.

    `gateway` is the root namespace's bridge address, where a registry for the hosts must
    listen; every host trusts plain-HTTP registries in the pool's subnet.
    """

    def __init__(
        self,
        count: int,
        *,
        prefix: str | None = None,
        insecure_registries: Sequence[str] = (),
        storage_driver: str = "overlay2",
        root_dir: Path = STATE_ROOT,
        start_timeout: float = 60.0,
    ) -> None:
        if not 1 <= count <= _MAX_HOSTS:
            raise ValueError(f"count must be between 1 and {_MAX_HOSTS}, not {count}")
        self.prefix = prefix or default_prefix()
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix must match {_PREFIX_RE.pattern} (names <= 15 chars)")
        self.count = count
        self.extra_insecure_registries = list(insecure_registries)
        self.storage_driver = storage_driver
        self.root_dir = root_dir
        self.state_dir = root_dir / self.prefix
        self.bridge = f"flb{self.prefix}"
        self.iptables_comment = f"fleet-test:{self.prefix}"
        self.subnet = ""
        self.gateway = ""
        self.hosts: list[DockerHost] = []
        self.start_timeout = start_timeout
        self.start_seconds: float | None = None
        self._started = False
        self._closed = False

    @property
    def manifest_path(self) -> Path:
        """Where the pool records what it created (read by `cleanup_stale`)."""
        return self.state_dir / "pool.json"

    def host(self, name: str) -> DockerHost:
        """The host called `name` ("h1", "h2", ...)."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def _iptables_rule(self) -> list[str]:
        match = ["-i", self.bridge, "-o", self.bridge]
        return [
            "FORWARD",
            *match,
            "-m",
            "comment",
            "--comment",
            self.iptables_comment,
            "-j",
            "ACCEPT",
        ]

    def _write_manifest(self) -> None:
        owner = os.getpid()
        manifest = {
            "owner_pid": owner,
            "owner_start": pid_start_time(owner),
            "prefix": self.prefix,
            "bridge": self.bridge,
            "subnet": self.subnet,
            "iptables_rule": self._iptables_rule(),
            "hosts": [
                {"name": h.name, "netns": h.netns, "veth": h.veth, "data_dir": str(h.data_dir)}
                | {"cgroup_parent": h.cgroup_parent}
                for h in self.hosts
            ],
        }
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.replace(self.manifest_path)

    def start(self) -> Self:
        """Create bridge, namespaces, veths and start every dockerd (concurrently)."""
        if self._started:
            return self
        if os.geteuid() != 0:
            raise PermissionError("HostPool needs root (network namespaces, bridges, dockerd)")
        for binary in ("dockerd", "nsenter", "ip", "iptables", "containerd", "runc"):
            require_binary(binary)
        self._started = True
        began = time.monotonic()
        try:
            with _state_lock(self.root_dir):
                self._allocate()
            for h in self.hosts:
                self._create_netns(h)
            with ThreadPoolExecutor(max_workers=self.count) as pool:
                list(pool.map(lambda h: h.start_daemon(), self.hosts))
        except BaseException:
            with contextlib.suppress(Exception):
                self.close()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _allocate(self) -> None:
        if self.state_dir.exists() or _link_exists(self.bridge):
            raise RuntimeError(
                f"pool prefix {self.prefix!r} is in use ({self.state_dir} or bridge "
                f"{self.bridge}); pick another prefix or run cleanup_stale()"
            )
        net = _pick_subnet()
        self.subnet = str(net)
        self.gateway = str(net.network_address + 1)
        insecure = [self.subnet, *self.extra_insecure_registries]
        self.state_dir.mkdir(parents=True)
        for i in range(1, self.count + 1):
            netns = f"fleet-{self.prefix}-h{i}"
            if _netns_exists(netns):
                raise RuntimeError(f"network namespace {netns} exists; run cleanup_stale()")
            self.hosts.append(
                DockerHost(
                    name=f"h{i}",
                    netns=netns,
                    address=str(net.network_address + 9 + i),
                    veth=f"flv{self.prefix}h{i}",
                    bip=f"172.31.{i}.1/24",
                    data_dir=self.state_dir / f"h{i}",
                    cgroup_parent=f"/{netns}",
                    insecure_registries=list(insecure),
                    storage_driver=self.storage_driver,
                    start_timeout=self.start_timeout,
                )
            )
        # Record everything before creating anything, so a crash leaves a complete manifest.
        self._write_manifest()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{net.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        _iptables("-I", *self._iptables_rule())

    def _create_netns(self, h: DockerHost) -> None:
        prefixlen = ipaddress.IPv4Network(self.subnet).prefixlen
        _ip("netns", "add", h.netns)
        _ip("link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
        _ip("link", "set", h.veth, "master", self.bridge, "up")
        _ip("-n", h.netns, "addr", "add", f"{h.address}/{prefixlen}", "dev", "eth0")
        _ip("-n", h.netns, "link", "set", "lo", "up")
        _ip("-n", h.netns, "link", "set", "eth0", "up")
        _ip("-n", h.netns, "route", "add", "default", "via", self.gateway)

    def close(self) -> None:
        """Tear everything down (idempotent); raise at the end if some step failed."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []

        def down(h: DockerHost) -> None:
            try:
                h.teardown()
            except Exception as exc:
                errors.append(f"{h.name}: {exc!r}")

        if self.hosts:
            with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
                list(pool.map(down, self.hosts))
        errors += _remove_network(
            [h.netns for h in self.hosts],
            [h.veth for h in self.hosts],
            self.bridge,
            self._iptables_rule() if self.subnet else None,
        )
        if errors:
            raise RuntimeError(f"HostPool {self.prefix} teardown: " + "; ".join(errors))
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary of the pool and its hosts."""
        return {
            "prefix": self.prefix,
            "subnet": self.subnet,
            "gateway": self.gateway,
            "bridge": self.bridge,
            "hosts": [h.describe() for h in self.hosts],
        }

    def __repr__(self) -> str:
        return f"HostPool(prefix={self.prefix!r}, subnet={self.subnet!r}, hosts={self.count})"


def _remove_network(
    netns: list[str], veths: list[str], bridge: str, iptables_rule: list[str] | None
) -> list[str]:
    """Delete namespaces, veths, the bridge and the FORWARD rule; return what failed."""
    errors: list[str] = []
    for name in netns:
        if _netns_exists(name):
            try:
                _ip("netns", "del", name)
            except ProcessError as exc:
                errors.append(str(exc))
    for link in [*veths, bridge]:
        if _link_exists(link):
            try:
                _ip("link", "del", link)
            except ProcessError as exc:
                # Deleting a namespace destroys its veth pair asynchronously: the link
                # may vanish between the check and the delete, which is what we wanted.
                if _link_exists(link):
                    errors.append(str(exc))
    if iptables_rule is not None:
        # -I may have run twice on a retry; delete until the rule is gone.
        for _ in range(10):
            if not _rule_present(iptables_rule):
                break
            try:
                _iptables("-D", *iptables_rule)
            except ProcessError as exc:
                errors.append(str(exc))
                break
    return errors


def _rule_present(rule: list[str]) -> bool:
    binary = require_binary("iptables", "/usr/sbin/iptables", "/sbin/iptables")
    proc = subprocess.run(
        [binary, "-w", "10", "-C", *rule], capture_output=True, check=False, timeout=30
    )
    return proc.returncode == 0


def _owner_alive(manifest: dict[str, Any]) -> bool:
    pid = manifest.get("owner_pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    return pid_start_time(pid) == manifest.get("owner_start")


def cleanup_stale(prefix_glob: str = "*", root_dir: Path = STATE_ROOT) -> list[str]:
    """Remove what crashed earlier runs left behind; return the prefixes cleaned.

    Only pools whose owning process is gone are touched (a concurrent live run is safe):
    their dockerds, containerds and containers, mounts, namespaces, veths, bridge and
    FORWARD rule, found through the manifest under `root_dir/<prefix>/`.
    """
    if os.geteuid() != 0 or not root_dir.is_dir():
        return []
    cleaned: list[str] = []
    with _state_lock(root_dir):
        for state_dir in sorted(root_dir.glob(prefix_glob)):
            if not state_dir.is_dir():
                continue
            manifest_path = state_dir / "pool.json"
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                manifest = {}
            if manifest and _owner_alive(manifest):
                continue
            hosts = manifest.get("hosts", [])
            prefix = manifest.get("prefix", state_dir.name)
            for h in hosts:
                _destroy_host_dir(Path(h["data_dir"]), h["cgroup_parent"])
            # A dir without a manifest: kill and unmount whatever still refers to it.
            _kill_processes_mentioning(state_dir)
            _unmount_under(state_dir)
            errors = _remove_network(
                [h["netns"] for h in hosts],
                [h["veth"] for h in hosts],
                manifest.get("bridge", f"flb{prefix}"),
                manifest.get("iptables_rule"),
            )
            if not errors:
                shutil.rmtree(state_dir, ignore_errors=True)
            cleaned.append(prefix)
    return cleaned


__all__ = ["STATE_ROOT", "DockerHost", "HostPool", "cleanup_stale", "default_prefix"]
