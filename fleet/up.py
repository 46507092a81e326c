"""``fleet up``: the whole system on one machine, in the foreground.

It starts a single-member etcd (the ``etcd`` binary, data under ``--data-dir``), the
control plane and an agent for the local Docker daemon in this process, and stops all
three on Ctrl-C or SIGTERM. The data dir outlives it, so a later ``fleet up`` finds the
apps it left (and the agent adopts the containers still running).

If a part fails, ``fleet up`` says which and why: the agent is started again (after a
pause that grows while it keeps failing), as systemd would restart it; a control plane
or etcd that ends stops everything, with a message naming it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fleet.agent import Agent, AgentConfig, DockerRuntime
from fleet.contexts import Context, Contexts
from fleet.controlplane import ControlPlane, ServerConfig
from fleet.errors import FailedPrecondition, FleetError, Unavailable
from fleet.pki.files import CertPaths
from fleet.pki.local import EtcdPKI, LocalPKI, ensure_etcd_pki, ensure_local_pki
from fleet.pki.subjects import Kind
from fleet.transport import TlsFiles, Transport, listen_problem

__all__ = ["UpConfig", "run_up"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpConfig:
    data_dir: Path
    listen: str = "127.0.0.1:7400"
    etcd_port: int = 7479
    host_id: str | None = None
    docker_url: str | None = None
    dashboard_listen: str | None = None  # None: no dashboard


def _dashboard_listen(listen: str | None) -> str | None:
    """``listen``, or another free port on its address when it is taken (a second
    `fleet up` on this machine still gets a dashboard; its URL is printed)."""
    if listen is None or listen_problem(listen) is None:
        return listen
    host = listen.rpartition(":")[0]
    log.warning("the dashboard's %s is taken: serving it on another free port", listen)
    return f"{host}:0"


def _default_host_id() -> str:
    name = socket.gethostname().lower().split(".")[0]
    cleaned = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name).strip("-")
    return cleaned[:63] or "local"


def _etcd_healthy(url: str, tls: TlsFiles) -> bool:
    context = ssl.create_default_context(cafile=str(tls.ca))
    context.load_cert_chain(str(tls.cert), str(tls.key))
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1, context=context) as response:
            return b"true" in response.read()
    except (urllib.error.URLError, OSError):
        return False


def _start_etcd(
    data_dir: Path, port: int, member: TlsFiles, client: TlsFiles
) -> subprocess.Popen[bytes]:
    """Start etcd with TLS for clients and peers, and wait (blocking, up to 30 s) until
    it reports healthy. It trusts etcd's own CA, not fleet's: only the control plane's
    etcd client certificate (and a member's, on the peer port) opens it."""
    binary = shutil.which("etcd")
    if binary is None:
        raise Unavailable("the etcd binary is not installed (Debian: apt-get install etcd-server)")
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"https://127.0.0.1:{port}"
    peer = f"https://127.0.0.1:{port + 1}"
    log_file = (data_dir / "etcd.log").open("ab")
    tls = [
        f"--trusted-ca-file={member.ca}",
        f"--cert-file={member.cert}",
        f"--key-file={member.key}",
    ]
    peer_tls = [
        f"--peer-trusted-ca-file={member.ca}",
        f"--peer-cert-file={member.cert}",
        f"--peer-key-file={member.key}",
        "--peer-client-cert-auth",
    ]
    process = subprocess.Popen(
        [
            binary,
            "--name=fleet-up",
            f"--data-dir={data_dir / 'etcd'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=fleet-up={peer}",
            "--client-cert-auth",
            *tls,
            *peer_tls,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us, and we stop etcd in order
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            why = _etcd_fatal_line(data_dir / "etcd.log")
            raise Unavailable(
                f"etcd exited at start{f': {why}' if why else ''}; see {data_dir / 'etcd.log'}"
                + (f" (is --etcd-port {port} or {port + 1} in use?)" if "in use" in why else "")
            )
        if _etcd_healthy(url, client):
            return process
        time.sleep(0.1)  # etcd's health is polled until it answers, within the deadline
    process.terminate()
    raise Unavailable(f"etcd did not become healthy in 30 s; see {data_dir / 'etcd.log'}")


def _etcd_fatal_line(log_path: Path) -> str:
    """The reason etcd gave for stopping: its last critical or error line (capnslog's
    ``C |``/``E |`` levels, or zap's JSON ``fatal``/``error``), else ""."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-50:]
    except OSError:
        return ""
    for line in reversed(lines):
        for mark in (" C | ", " E | "):
            if mark in line:
                return line.split(mark, 1)[1].strip()
        if '"level":"fatal"' in line or '"level":"error"' in line:
            return line.strip()
    return ""


async def _keep_running(name: str, make: Callable[[], Awaitable[None]]) -> None:
    """Run ``make()`` for good: whenever it ends or fails, say so (with the traceback)
    and start it again, after 1 s doubling to 30 s (back to 1 s after a minute's run)."""
    delay = 1.0
    while True:
        began = time.monotonic()
        try:
            await make()
            log.error("the %s stopped; starting it again in %gs", name, delay)
        except Exception as error:
            log.error("the %s failed; starting it again in %gs", name, delay, exc_info=error)
        if time.monotonic() - began > 60:
            delay = 1.0
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


def _why_ended(task: asyncio.Task[object], name: str) -> str:
    if task.cancelled():
        return f"the {name} was cancelled"
    error = task.exception()
    if error is None:
        return f"the {name} stopped"
    return f"the {name} failed: {type(error).__name__}: {error}"


def _local_pki(directory: Path, host_id: str) -> tuple[LocalPKI, EtcdPKI]:
    """fleet up's own CA and certificates, and etcd's own CA in ``etcd/`` beside them
    (made once, reused): a fleet certificate never opens etcd."""
    pki = ensure_local_pki(directory, host_id=host_id)
    etcd = ensure_etcd_pki(directory / "etcd", member="fleet-up", member_sans=("127.0.0.1",))
    # Before etcd had a CA of its own, its client certificate came from fleet's CA.
    old = CertPaths.for_leaf(directory, Kind.client, "controlplane-etcd")
    for path in (old.cert, old.key):
        path.unlink(missing_ok=True)
    return pki, etcd


def _remember_context(data_dir: Path, listen: str) -> str:
    """Save context ``local`` for this pool (its server and the admin certificate in
    the data dir), current unless another is; say how to connect."""
    pki = data_dir / "pki"
    try:
        contexts = Contexts.load()
        contexts.put(
            Context(
                "local",
                listen,
                str(pki / "ca.crt"),
                str(pki / "client-admin.crt"),
                str(pki / "client-admin.key"),
            )
        )
        contexts.current = contexts.current or "local"
        contexts.save()
    except (FleetError, OSError) as error:  # a read-only home: the flags still work
        return (
            f"connect with: fleet --server {listen} --tls-ca {pki}/ca.crt --tls-cert "
            f"{pki}/client-admin.crt --tls-key {pki}/client-admin.key get hosts "
            f"(no context saved: {error})"
        )
    if contexts.current == "local":
        return f"the CLI connects to it as context 'local' ({contexts.path}): fleet get hosts"
    return (
        f"saved as context 'local' ({contexts.path}); the current one is "
        f"{contexts.current!r}: fleet --context local get hosts, or fleet context use local"
    )


def _lock_data_dir(data_dir: Path) -> int:
    """Hold ``data_dir``'s lock for as long as this process lives; FailedPrecondition
    when another ``fleet up`` holds it (two would share one etcd data dir)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "up.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise FailedPrecondition(
            f"another `fleet up` (pid {holder}) runs on {data_dir}: stop it first, or give "
            "this one another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


async def run_up(config: UpConfig) -> None:
    runtime = DockerRuntime(config.docker_url)
    try:
        await asyncio.to_thread(runtime.ping)
    except FleetError as error:
        raise Unavailable(
            f"no Docker daemon answers ({error}); start dockerd or pass --docker URL"
        ) from error
    data_dir = config.data_dir.resolve()
    _lock_data_dir(data_dir)  # its fd stays open (and locked) until this process exits
    host_id = config.host_id or _default_host_id()
    pki, etcd_pki = await asyncio.to_thread(_local_pki, data_dir / "pki", host_id)
    server_tls = TlsFiles(pki.ca.cert, pki.server.cert, pki.server.key)
    member = TlsFiles(etcd_pki.ca.cert, etcd_pki.member.cert, etcd_pki.member.key)
    etcd_client = TlsFiles(etcd_pki.ca.cert, etcd_pki.client.cert, etcd_pki.client.key)
    etcd = await asyncio.to_thread(_start_etcd, data_dir, config.etcd_port, member, etcd_client)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        plane = ControlPlane(
            ServerConfig(
                etcd=[f"127.0.0.1:{config.etcd_port}"],
                etcd_tls=etcd_client,
                transport=Transport(server_tls),
                listen=config.listen,
                # Made at the first start: this is the pool's first (and only) replica.
                secrets_key=data_dir / "secrets.key",
                dashboard_listen=_dashboard_listen(config.dashboard_listen),
            )
        )
        await plane.start()
        agent_tls = TlsFiles(pki.ca.cert, pki.agent.cert, pki.agent.key)
        agent_config = AgentConfig(
            servers=[config.listen],
            host_id=host_id,
            transport=Transport(agent_tls),
            state_dir=data_dir / "agent",
        )
        agent_task = asyncio.create_task(
            _keep_running("agent", lambda: Agent(agent_config, runtime).run())
        )
        plane_task = asyncio.create_task(plane.wait())
        etcd_task = asyncio.create_task(asyncio.to_thread(etcd.wait))
        log.info(
            "fleet is up: control plane on %s, etcd on 127.0.0.1:%d",
            config.listen,
            config.etcd_port,
        )
        log.info("%s", _remember_context(data_dir, config.listen))
        if plane.dashboard_port:
            host = (config.dashboard_listen or "").rpartition(":")[0].strip("[]")
            host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
            log.info(
                "dashboard: https://%s:%d/ (its certificate is of %s; sign in with a token: "
                "fleet tokens create NAME --role viewer|deployer|admin)",
                host,
                plane.dashboard_port,
                data_dir / "pki" / "ca.crt",
            )
        stopper = asyncio.create_task(stop.wait())
        tasks = {agent_task, plane_task, etcd_task, stopper}
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        failure = None
        if plane_task.done():
            failure = _why_ended(plane_task, "control plane")
            if plane_task.exception() is not None:
                log.error("%s", failure, exc_info=plane_task.exception())
        elif etcd_task.done():
            failure = f"etcd exited with code {etcd.returncode}; see {data_dir / 'etcd.log'}"
        elif agent_task.done():  # _keep_running never ends by itself: a bug
            failure = _why_ended(agent_task, "agent supervisor")
        if failure is not None:
            log.error("stopping everything: %s", failure)
        else:
            log.info("stopping")
        for task in tasks:
            task.cancel()
        # Bounded: whatever a task is doing when it is cancelled, etcd below is stopped.
        _, late = await asyncio.wait(tasks, timeout=15)
        if late:
            log.warning("%d task(s) did not stop in 15 s; stopping anyway", len(late))
        try:
            await asyncio.wait_for(plane.stop(), 15)
        except TimeoutError:
            log.warning("the control plane did not stop in 15 s; stopping anyway")
        if failure is not None:
            raise Unavailable(f"fleet up stopped: {failure}")
    finally:
        etcd.terminate()
        try:
            await asyncio.to_thread(etcd.wait, 10)
        except subprocess.TimeoutExpired:
            etcd.kill()
