"""``fleet up``: etcd, control plane and agent in one foreground process; Ctrl-C stops
all three, and a second ``fleet up`` on the same data dir finds the apps it left."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import DockerHost, ManagedProcess, free_port, wait_until
from fleet.transport import TlsFiles, Transport
from tests.conftest import ensure_image
from tests.helpers import fleet_containers


def _free_port_pair() -> int:
    """A port p with p+1 free too (fleet up's etcd uses p for clients, p+1 for peers)."""
    import socket

    def taken(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    return wait_until(
        lambda: next((p for p in [free_port()] if not taken(p + 1)), None),
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
    up = ManagedProcess(args, tmp_path / "up.log", name="fleet up")
    # fleet up makes its own PKI in the data dir; the CLI's admin certificate is there.
    admin = TlsFiles.in_dir(data_dir / "pki", "client", "admin")
    client = FleetClient([listen], Transport(admin), timeout=5)
    try:
        up.start()
        up.wait_ready(
            lambda: any(h.connected for h in client.hosts()), 60, what="the local host to join"
        )
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


def _start_up(clean_host: DockerHost, tmp_path: Path) -> tuple[ManagedProcess, FleetClient, Path]:
    data_dir = tmp_path / "data"
    listen = f"127.0.0.1:{free_port()}"
    args = [sys.executable, "-m", "fleet", "up", "--data-dir", str(data_dir), "--listen", listen]
    args += ["--etcd-port", str(_free_port_pair()), "--docker", clean_host.docker_url]
    up = ManagedProcess([*args, "--host-id", "solo"], tmp_path / "up.log", name="fleet up")
    admin = TlsFiles.in_dir(data_dir / "pki", "client", "admin")
    client = FleetClient([listen], Transport(admin), timeout=5)
    up.start()
    up.wait_ready(
        lambda: any(h.connected for h in client.hosts()), 60, what="the local host to join"
    )
    return up, client, data_dir


def test_up_lives_through_an_image_that_does_not_exist_and_names_a_part_that_dies(
    clean_host: DockerHost, tmp_path: Path
) -> None:
    """The stop-ship of issue #16: a mistyped tag ended `fleet up` (and its etcd) 1.2 s
    after the pull, and every later `fleet up` too. Now the replica says why, the rest
    keeps running; and when a part does die (etcd here), fleet up says which."""
    image = ensure_image(clean_host)
    up, client, data_dir = _start_up(clean_host, tmp_path)
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
