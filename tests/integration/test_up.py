"""``fleet up``: etcd, control plane and agent in one foreground process; Ctrl-C stops
all three, and a second ``fleet up`` on the same data dir finds the apps it left."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleet.client import FleetClient
from fleet.contexts import Contexts
from fleet.errors import FleetError
from fleet.pki.issuing import issue
from fleet.pki.subjects import Kind, Role
from fleet.spec import load_documents
from fleet.testing import DockerHost, ManagedProcess, free_port, wait_until
from fleet.testing.procs import without_fleet_env
from fleet.transport import TlsFiles, Transport
from tests.conftest import ensure_image
from tests.helpers import fleet_containers


def _free_port_pair() -> int:
    """A port p with p+1 free too (fleet up's etcd uses p for clients, p+1 for peers),
    picked below the kernel's ephemeral range: a port from that range can be taken
    by any outgoing connection of a parallel test between our check and etcd's bind."""
    import random
    import socket

    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return wait_until(
        lambda: next(
            (p for p in [random.randrange(10000, low - 2)] if free(p) and free(p + 1)), None
        ),
        10,
        what="two adjacent free ports",
    )


def _etcd_running(data_dir: Path) -> bool:
    # "--": the pattern starts with dashes, which pgrep would take for options.
    found = subprocess.run(["pgrep", "-f", "--", f"--data-dir={data_dir}"], capture_output=True)
    return found.returncode == 0


def test_up_runs_everything_and_a_second_up_finds_the_apps(
    clean_host: DockerHost, tmp_path: Path
) -> None:
    image = ensure_image(clean_host)
    data_dir = tmp_path / "data"
    listen = f"127.0.0.1:{free_port()}"
    args = [
        sys.executable,
        "-m",
        "fleet",
        "up",
        "--data-dir",
        str(data_dir),
        "--listen",
        listen,
        "--etcd-port",
        str(_free_port_pair()),
        "--docker",
        clean_host.docker_url,
        "--host-id",
        "solo",
    ]
    dashboard = f"127.0.0.1:{free_port()}"
    up = ManagedProcess(
        [*args, "--dashboard-listen", dashboard], tmp_path / "up.log", name="fleet up"
    )
    # fleet up makes its own PKI in the data dir; the CLI's admin certificate is there.
    admin = TlsFiles.in_dir(data_dir / "pki", "client", "admin")
    client = FleetClient([listen], Transport(admin), timeout=5)
    try:
        up.start()
        up.wait_ready(
            lambda: any(h.connected for h in client.hosts()), 60, what="the local host to join"
        )
        # It saved how to connect as context "local": a CLI with no flag connects.
        local = Contexts.load().items["local"]
        assert (local.server, local.tls_cert) == (listen, str(admin.cert))
        bare = subprocess.run(
            [sys.executable, "-m", "fleet", "--context", "local", "get", "hosts", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=without_fleet_env(),
        )
        assert bare.returncode == 0, bare.stderr
        assert [h["host_id"] for h in json.loads(bare.stdout)] == ["solo"]
        # It serves the web dashboard, over HTTPS with its own CA, and says where.
        said = wait_until(
            lambda: f"dashboard: https://{dashboard}/" in (tmp_path / "up.log").read_text(),
            30,
            what="the dashboard's URL in the log",
        )
        assert said
        context = ssl.create_default_context(cafile=str(data_dir / "pki" / "ca.crt"))
        with urllib.request.urlopen(
            f"https://{dashboard}/signin", context=context, timeout=10
        ) as page:
            assert page.status == 200 and b"API token" in page.read()
        # A second copy on the same data dir is refused before it touches anything.
        other_ports = ["--listen", f"127.0.0.1:{free_port()}", "--etcd-port", "20000"]
        second = subprocess.run(
            [*args[:6], *other_ports, "--docker", clean_host.docker_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second.stderr
        assert f"another `fleet up` (pid {up.pid}) runs on {data_dir}" in second.stderr
        spec = load_documents(f"name: solo-web\nimage: {image}\nreplicas: 2\n", "app.yaml")[0]
        client.apply([spec])

        def two_running() -> set[str] | None:
            found = fleet_containers(clean_host.client(), "solo-web")
            ids = {c.id for c in found if c.status == "running"}
            return ids if len(found) == 2 and len(ids) == 2 else None

        ids = wait_until(two_running, 60, what="2 running replicas")

        # Ctrl-C: the process and its etcd stop; the containers keep running, as Docker's do.
        assert up.pid is not None
        up_pid = up.pid
        import os

        os.kill(up_pid, signal.SIGINT)
        wait_until(lambda: not up.running, 30, what="fleet up to exit on SIGINT")
        assert up.returncode == 0, up.log_tail()
        wait_until(lambda: not _etcd_running(data_dir), 10, what="etcd to stop with fleet up")
        assert two_running() == ids

        # A second `fleet up` on the same data dir has the app and adopts its containers.
        up.start()
        up.wait_ready(
            lambda: any(h.connected for h in client.hosts()), 60, what="the host to rejoin"
        )
        assert [a.name for a in client.apps()] == ["solo-web"]

        def reported() -> bool:
            return sorted(c.status.container_id for c in client.containers("solo-web")) == sorted(
                ids
            )

        wait_until(reported, 30, what="the restarted agent to report the adopted containers")
        assert two_running() == ids
    finally:
        client.close()
        up.stop()
        print(up.log_tail(60))  # shown only when the test failed


@dataclass
class Up:
    process: ManagedProcess
    client: FleetClient
    data_dir: Path
    etcd_port: int  # clients; peers on the next port


def _start_up(clean_host: DockerHost, tmp_path: Path) -> Up:
    data_dir = tmp_path / "data"
    listen = f"127.0.0.1:{free_port()}"
    etcd_port = _free_port_pair()
    args = [sys.executable, "-m", "fleet", "up", "--data-dir", str(data_dir), "--listen", listen]
    args += ["--etcd-port", str(etcd_port), "--docker", clean_host.docker_url]
    up = ManagedProcess([*args, "--host-id", "solo"], tmp_path / "up.log", name="fleet up")
    admin = TlsFiles.in_dir(data_dir / "pki", "client", "admin")
    client = FleetClient([listen], Transport(admin), timeout=5)
    up.start()
    up.wait_ready(
        lambda: any(h.connected for h in client.hosts()), 60, what="the local host to join"
    )
    return Up(up, client, data_dir, etcd_port)


def test_up_lives_through_an_image_that_does_not_exist_and_names_a_part_that_dies(
    clean_host: DockerHost, tmp_path: Path
) -> None:
    """The stop-ship of issue #16: a mistyped tag ended `fleet up` (and its etcd) 1.2 s
    after the pull, and every later `fleet up` too. Now the replica says why, the rest
    keeps running; and when a part does die (etcd here), fleet up says which."""
    image = ensure_image(clean_host)
    started = _start_up(clean_host, tmp_path)
    up, client, data_dir = started.process, started.client, started.data_dir
    try:
        text = f"name: solo-api\nimage: {image}\nreplicas: 1\nupdate: {{progress_deadline: 5m}}\n"
        client.apply(load_documents(text, "app.yaml"))
        wait_until(
            lambda: [c.status.state for c in client.containers("solo-api")] == ["running"],
            60,
            what="the first revision to run",
        )
        missing = "127.0.0.1:1/nope/solo-api:v9-nope"  # no registry answers there
        client.apply(load_documents(text.replace(image, missing), "app.yaml"))

        def said_why() -> str | None:
            found = client.apps("solo-api")[0]
            return found.message if found.reason else None

        why = wait_until(said_why, 30, what="get apps to say why")
        assert "127.0.0.1:1" in why, why
        # Rolled back at once (auto_rollback), not at the 5 minute progress deadline.
        wait_until(
            lambda: client.rollout_status("solo-api").failure.startswith("revision 2 failed"),
            30,
            what="the rollout to fail",
        )
        assert up.running, up.log_tail()
        assert all(h.connected for h in client.hosts())
        assert fleet_containers(clean_host.client(), "solo-api")[0].status == "running"

        # etcd killed under it: fleet up stops everything and names the part.
        subprocess.run(["pkill", "-9", "-f", "--", f"--data-dir={data_dir}"], check=True)
        wait_until(lambda: not up.running, 40, what="fleet up to stop without its etcd")
        assert up.returncode == 1
        assert "etcd exited" in up.log_tail(20), up.log_tail(20)
    finally:
        client.close()
        up.stop()
        print(up.log_tail(60))


def _etcd_answers(url: str, ca: Path, cert: Path | None, key: Path | None) -> bool:
    """Whether etcd answers over TLS as the holder of ``cert``: a read through its JSON
    gateway on the client port, its member list on the peer port (``/members``). False
    when the handshake or the request is refused."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the member's certificate names 127.0.0.1, not a host
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    if url.endswith("/members"):
        request = urllib.request.Request(url)
    else:
        body = json.dumps({"key": "Lw=="}).encode()
        request = urllib.request.Request(f"{url}/v3/kv/range", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status == 200 and bool(json.loads(response.read()))
    except (OSError, ssl.SSLError, urllib.error.URLError, ValueError):
        return False


def test_etcd_opens_only_to_the_control_planes_certificate(
    clean_host: DockerHost, tmp_path: Path
) -> None:
    """Issue #17 (1): etcd trusted fleet's CA, so every agent, viewer or deployer
    certificate was a read-write etcd credential. Now etcd has a CA of its own and only
    the control plane holds a client certificate from it: every other certificate of the
    pool is refused on etcd's client port and on its peer port."""
    started = _start_up(clean_host, tmp_path)
    up, client, pki_dir = started.process, started.client, started.data_dir / "pki"
    try:
        for kind, name, role in (
            (Kind.client, "vera", Role.viewer),
            (Kind.client, "dora", Role.deployer),
            (Kind.server, "cp2", None),
        ):
            issue(pki_dir, kind, name, role=role)
        fleet_certs = sorted(pki_dir.glob("*.crt"))  # the CA, the server, agent and clients
        assert {p.stem for p in fleet_certs} >= {"agent-solo", "client-admin", "client-vera"}
        etcd_pki = pki_dir / "etcd"
        port = started.etcd_port
        client_url = f"https://127.0.0.1:{port}"
        peer_url = f"https://127.0.0.1:{port + 1}/members"
        etcd_ca = etcd_pki / "ca.crt"
        # The control plane's certificate opens the client port, a member's the peer
        # port: the checks can succeed.
        own = etcd_pki / "etcd-client-controlplane"
        assert _etcd_answers(client_url, etcd_ca, own.with_suffix(".crt"), own.with_suffix(".key"))
        member = etcd_pki / "etcd-member-fleet-up"
        crt, key = member.with_suffix(".crt"), member.with_suffix(".key")
        assert _etcd_answers(peer_url, etcd_ca, crt, key)
        for url in (client_url, peer_url):
            assert not _etcd_answers(url, etcd_ca, None, None), f"{url} without a certificate"
            for cert in fleet_certs:
                if cert.stem == "ca":
                    continue
                key = cert.with_suffix(".key")
                assert not _etcd_answers(url, etcd_ca, cert, key), f"{url} opened to {cert.name}"
        # A fleet CA never signs an etcd certificate, nor etcd's CA a fleet one.
        with pytest.raises(FleetError, match="etcd's own CA"):
            issue(pki_dir, Kind.etcd_client, "sneaky")
        with pytest.raises(FleetError, match="etcd's own"):
            issue(etcd_pki, Kind.client, "sneaky", role=Role.admin)
        assert up.running
    finally:
        client.close()
        up.stop()
        print(up.log_tail(60))


def test_up_says_why_etcd_could_not_start(clean_host: DockerHost, tmp_path: Path) -> None:
    """A taken etcd port: fleet up quotes etcd's own reason and names the flag."""
    import socket

    port = _free_port_pair()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port + 1))  # the peer port
        squatter.listen()
        args = ["up", "--data-dir", str(tmp_path / "data"), "--etcd-port", str(port)]
        args += ["--listen", f"127.0.0.1:{free_port()}", "--docker", clean_host.docker_url]
        done = subprocess.run(
            [sys.executable, "-m", "fleet", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"127.0.0.1:{port + 1}: bind: address already in use" in done.stderr, done.stderr
    assert f"is --etcd-port {port} or {port + 1} in use?" in done.stderr, done.stderr
