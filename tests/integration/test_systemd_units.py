"""The shipped systemd units start as written: deploy/systemd's ExecStart lines run with
the config files they name, against a real etcd (with TLS, as the shipped server.toml
asks) and a real dockerd. The server says READY=1 once it serves and answers; the
agent registers and says READY=1; SIGTERM (what `systemctl stop` sends the main
process) stops both with STOPPING=1 and status 0.

What the test changes, and only that: the /etc/fleet and /var/lib/fleet path prefixes
(to a temporary directory holding the test PKI under the shipped file names), the
endpoints (etcd, listen, metrics, servers, docker), and the program path (this
checkout's `python -m fleet` for /usr/local/bin/fleet). systemd's own sandboxing is not
applied (there is no systemd here to apply it); `systemd-analyze verify` checks the
units' syntax and settings when it is installed."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.cli.agentcmd import _default_host_id
from fleet.client import FleetClient
from fleet.errors import InvalidArgument
from fleet.pki.local import EtcdPKI, ensure_etcd_pki
from fleet.secrets import ensure_key_file
from fleet.store import check_host_id
from fleet.testing import DockerHost, EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.procs import ManagedProcess, free_port
from tests.helpers import scrape

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
PROGRAM = "/usr/local/bin/fleet"
PREFIXES = ("/etc/fleet", "/var/lib/fleet")


# ------------------------------------------------------------------ the shipped files


def unit_settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's settings by section and key (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def moved(text: str, root: Path) -> str:
    """``text`` with a leading /etc/fleet or /var/lib/fleet moved under ``root``."""
    for prefix in PREFIXES:
        if text == prefix or text.startswith(prefix + "/"):
            return str(root) + text
    return text


def exec_start(unit: Path, root: Path) -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart as argv (paths moved, the program this checkout's) and the
    variables its Environment= lines set."""
    service = unit_settings(unit)["Service"]
    env: dict[str, str] = {}
    for line in service.get("Environment", []):
        for item in shlex.split(line):
            key, _, value = item.partition("=")
            env[key] = moved(value, root)
    [line] = service["ExecStart"]
    argv = [moved(os.path.expandvars(arg), root) for arg in shlex.split(line)]
    assert argv[0] == PROGRAM, f"{unit.name} runs {argv[0]}"
    return [sys.executable, "-m", "fleet", *argv[1:]], env


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def install_config(name: str, root: Path, endpoints: dict[str, Any]) -> Path:
    """The shipped config ``name`` at its place under ``root``, its paths moved there
    and its endpoints replaced by ``endpoints``; every endpoint key must be in it."""
    shipped = tomllib.loads((UNITS / name).read_text())
    missing = endpoints.keys() - shipped.keys()
    assert not missing, f"{name} sets no {sorted(missing)}"
    lines = []
    for key, value in shipped.items():
        if key in endpoints:
            value = endpoints[key]
        elif isinstance(value, str):
            value = moved(value, root)
        lines.append(f"{key} = {toml_value(value)}")
    target = Path(moved(f"/etc/fleet/{name}", root))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")
    return target


def place(source: Path, target: str, root: Path) -> None:
    """Copy ``source`` to the shipped path ``target`` under ``root`` (keys stay 0600)."""
    path = Path(moved(target, root))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    shutil.copyfile(source, path)
    path.chmod(source.stat().st_mode & 0o777)


# ------------------------------------------------------------------ etcd with TLS


class TlsEtcd(EtcdServer):
    """The test etcd with client certificates, as the shipped server.toml expects."""

    def __init__(self, pki: EtcdPKI) -> None:
        super().__init__()
        self.pki = pki

    @property
    def url(self) -> str:
        return f"https://{self.endpoint}"

    def _args(self) -> list[str]:
        member = self.pki.member
        return [
            *super()._args(),
            f"--trusted-ca-file={self.pki.ca.cert}",
            f"--cert-file={member.cert}",
            f"--key-file={member.key}",
            "--client-cert-auth",
        ]

    def healthy(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(self.pki.client.cert), str(self.pki.client.key))
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2, context=context) as r:
                return b'"true"' in r.read()
        except OSError:
            return False


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[TlsEtcd]:
    pki = ensure_etcd_pki(tmp_path / "etcd-pki", member="etcd1", member_sans=("127.0.0.1",))
    with TlsEtcd(pki) as etcd:
        yield etcd


# ------------------------------------------------------------------ sd_notify


class NotifySocket:
    """A datagram socket listening as systemd's $NOTIFY_SOCKET does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.heard: list[dict[str, str]] = []

    def poll(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except BlockingIOError:
                return self.heard
            self.heard.append(dict(line.split("=", 1) for line in data.splitlines()))

    def said(self, field: str) -> dict[str, str] | None:
        return next((m for m in self.poll() if field in m), None)

    def close(self) -> None:
        self.sock.close()


def wait_notified(notify: NotifySocket, process: ManagedProcess, field: str) -> dict[str, str]:
    found: list[dict[str, str]] = []

    def heard() -> bool:
        message = notify.said(field)
        found[:] = [message] if message else []
        return message is not None

    process.wait_ready(heard, 30, what=f"{process.name} to notify {field}")
    return found[0]


# ------------------------------------------------------------------ the test


def test_the_shipped_units_start_as_written(
    tls_etcd: TlsEtcd, clean_host: DockerHost, pki: TestPKI, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    # The agent's host id is the machine's short host name, as on a real host (its
    # certificate names it), unless that is no host id: then FLEET_HOST_ID names one.
    host_id, agent_env = _default_host_id(), {}
    try:
        check_host_id(host_id)
    except InvalidArgument:
        host_id = clean_host.name
        agent_env["FLEET_HOST_ID"] = host_id
    # What the operator puts in place before the first start (the units' comments).
    server_tls, agent_tls = pki.server(), pki.agent(host_id)
    place(server_tls.ca, "/etc/fleet/pki/ca.crt", root)
    place(server_tls.cert, "/etc/fleet/pki/server.crt", root)
    place(server_tls.key, "/etc/fleet/pki/server.key", root)
    place(agent_tls.cert, "/etc/fleet/pki/agent.crt", root)
    place(agent_tls.key, "/etc/fleet/pki/agent.key", root)
    place(tls_etcd.pki.ca.cert, "/etc/fleet/etcd/ca.crt", root)
    place(tls_etcd.pki.client.cert, "/etc/fleet/etcd/client.crt", root)
    place(tls_etcd.pki.client.key, "/etc/fleet/etcd/client.key", root)
    ensure_key_file(Path(moved("/etc/fleet/secrets.key", root)))
    # What systemd makes for the agent (StateDirectory=fleet/agent).
    [state] = unit_settings(UNITS / "fleet-agent.service")["Service"]["StateDirectory"]
    Path(moved(f"/var/lib/{state}", root)).mkdir(parents=True, mode=0o700)

    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    install_config(
        "server.toml",
        root,
        {"etcd": [tls_etcd.endpoint], "listen": listen, "metrics-listen": metrics},
    )
    install_config("agent.toml", root, {"server": [listen], "docker": clean_host.docker_url})
    server_argv, server_vars = exec_start(UNITS / "fleet-server.service", root)
    agent_argv, agent_vars = exec_start(UNITS / "fleet-agent.service", root)

    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "JOURNAL_"))}
    server_notify = NotifySocket(tmp_path / "server.notify")
    agent_notify = NotifySocket(tmp_path / "agent.notify")
    server = ManagedProcess(
        server_argv,
        tmp_path / "server.log",
        name="fleet-server.service",
        env={**base, **server_vars, "NOTIFY_SOCKET": str(server_notify.path)},
        cwd=Path("/"),
    )
    # The agent's stderr is "the journal": JOURNAL_STREAM names that file, as systemd
    # names the stream it connects, and --log-format auto must see it.
    agent_log = tmp_path / "agent.log"
    agent_log.touch()
    status = agent_log.stat()
    agent = ManagedProcess(
        agent_argv,
        agent_log,
        name="fleet-agent.service",
        env={
            **base,
            **agent_vars,
            **agent_env,
            "NOTIFY_SOCKET": str(agent_notify.path),
            "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}",
        },
        cwd=Path("/"),
    )
    client = FleetClient([listen], pki.client_transport(), timeout=3)
    try:
        server.start()
        ready = wait_notified(server_notify, server, "READY")
        assert ready.get("STATUS") == f"serving on {listen}"
        assert client.hosts() == []  # the API answers, with a client certificate
        code, body, _ = scrape(metrics, ca=server_tls.ca, cert=pki.client())
        assert code == 200 and "fleet_" in body

        agent.start()
        ready = wait_notified(agent_notify, agent, "READY")
        assert ready.get("STATUS") == f"registered as {host_id}"
        [host] = client.hosts()
        assert (host.host_id, host.connected) == (host_id, True)
        journal = agent_log.read_text().splitlines()
        assert f"<6>fleet.agent.session: registered with {listen} as {host_id}" in journal

        # `systemctl stop`: SIGTERM to the main process (KillMode=process for the agent).
        for unit, process, notify in (
            (agent, agent, agent_notify),
            (server, server, server_notify),
        ):
            assert unit.pid is not None
            os.kill(unit.pid, 15)
            wait_until(lambda p=process: not p.running, 20, what=f"{process.name} to stop")
            assert process.returncode == 0, process.log_tail()
            assert notify.said("STOPPING") is not None
    finally:
        client.close()
        agent.stop()
        server.stop()
        server_notify.close()
        agent_notify.close()
        print(server.log_tail(30))
        print(agent.log_tail(30))


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    # verify checks that the program exists: this checkout's stands in for it.
    program = shutil.which("fleet") or sys.executable
    for unit in sorted(UNITS.glob("*.service")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(PROGRAM, program))
    result = subprocess.run(
        [analyze, "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Warnings (an unknown key, a bad value) go to stderr with status 0: none allowed.
    assert result.returncode == 0 and result.stderr == "", result.stderr
