"""The test harness itself, proven on real components: etcd, dockerds in namespaces, registry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from fleet.testing import (
    HTTP_PORT,
    DockerHost,
    EtcdServer,
    HostPool,
    Registry,
    cleanup_stale,
    ensure_image,
    push_image,
)
from fleet.testing.dockerhosts import STATE_ROOT
from fleet.testing.procs import pid_alive
from tests.helpers import b64, etcd_post, etcd_prefix, http_get, wait_http

APP = {"fleet.app": "harness-test"}


def _etcd_get(server: EtcdServer, key: str) -> str | None:
    value = etcd_prefix(server, key).get(key)
    return value.decode() if value is not None else None


def _run_web(host: DockerHost, image: str) -> tuple[Any, int]:
    """Run the web image on `host` with 8080 published on a random port; return it and the port."""
    container = host.client().containers.run(
        image, detach=True, ports={f"{HTTP_PORT}/tcp": None}, labels=APP
    )
    container.reload()
    bindings = container.ports[f"{HTTP_PORT}/tcp"]
    port = next(int(b["HostPort"]) for b in bindings if b["HostIp"] in ("0.0.0.0", ""))
    return container, port


def test_etcd_put_get_survives_restart(etcd_server: EtcdServer) -> None:
    etcd_post(etcd_server, "/v3/kv/put", {"key": b64(b"/harness/k"), "value": b64(b"v1")})
    assert _etcd_get(etcd_server, "/harness/k") == "v1"
    old_pid = etcd_server.pid

    etcd_server.restart()

    assert etcd_server.pid != old_pid
    assert etcd_server.healthy()
    assert _etcd_get(etcd_server, "/harness/k") == "v1"


def test_single_host_serves_http_at_namespace_address(
    clean_host: DockerHost, busybox_image: Any
) -> None:
    image = busybox_image(clean_host)
    _container, port = _run_web(clean_host, image)

    assert wait_http(clean_host.address, port, "hello from v1") == "hello from v1\n"


def test_dockerd_restart_in_place_keeps_images(clean_host: DockerHost, busybox_image: Any) -> None:
    image = busybox_image(clean_host)
    old_pid = clean_host.daemon_pid

    clean_host.stop_daemon()
    assert clean_host.daemon_pid is None
    assert not clean_host.ping()
    clean_host.start_daemon()

    assert clean_host.daemon_pid not in (None, old_pid)
    assert clean_host.client().images.get(image).tags == [image]
    _container, port = _run_web(clean_host, image)
    assert wait_http(clean_host.address, port, "hello from v1") == "hello from v1\n"


def test_container_on_h1_reaches_web_on_h2(clean_pool: HostPool, busybox_image: Any) -> None:
    h1, h2 = clean_pool.hosts
    image = busybox_image(h1)
    assert busybox_image(h2) == image
    _web, port = _run_web(h2, image)
    wait_http(h2.address, port, "hello from v1")

    # busybox 1.35's `wget -T` dies with SIGSEGV (exit 139) here: bound it with `timeout`.
    out = h1.client().containers.run(
        image,
        ["timeout", "10", "wget", "-qO-", f"http://{h2.address}:{port}/"],
        labels=APP,
        remove=True,
    )

    assert out.decode() == "hello from v1\n"


def test_cut_network_partitions_a_host(clean_pool: HostPool, busybox_image: Any) -> None:
    h2 = clean_pool.hosts[1]
    _web, port = _run_web(h2, busybox_image(h2))
    wait_http(h2.address, port, "hello from v1")

    h2.cut_network()
    with pytest.raises(OSError):
        http_get(h2.address, port, timeout=0.5)
    assert h2.ping()  # the host lives on; only its network is gone

    h2.restore_network()
    assert wait_http(h2.address, port, "hello from v1") == "hello from v1\n"


def test_image_pushed_from_h1_is_pulled_and_run_on_both_hosts(
    clean_pool: HostPool, registry: Registry
) -> None:
    h1, h2 = clean_pool.hosts
    ensure_image(h1.client(), "fleet-test/web", "v2", "hello from v2\n")
    remote = push_image(h1.client(), "fleet-test/web:v2", registry.address, "fleet-test/web", "v2")
    assert remote == f"{clean_pool.gateway}:{registry.port}/fleet-test/web:v2"
    assert "fleet-test/web" in registry.catalog()
    for ref in (remote, "fleet-test/web:v2"):
        h1.client().images.remove(ref)
    for host in (h1, h2):
        with pytest.raises(docker.errors.ImageNotFound):
            host.client().images.get(remote)

    for host in (h1, h2):
        host.client().images.pull(remote)
        _container, port = _run_web(host, remote)
        assert wait_http(host.address, port, "hello from v2") == "hello from v2\n"


def test_cleanup_stale_removes_what_a_killed_run_left() -> None:
    if os.geteuid() != 0:
        pytest.skip("docker hosts need root")
    prefix = f"k{os.getpid() % 100000}"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys\n"
            "from fleet.testing import HostPool, ensure_image\n"
            f"pool = HostPool(1, prefix={prefix!r}).start()\n"
            "h = pool.hosts[0]\n"
            "ensure_image(h.client(), 'fleet-test/web', 'v1')\n"
            "h.client().containers.run('fleet-test/web:v1', detach=True)\n"
            "print(h.daemon_pid, flush=True)\n"
            "signal.pause()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        daemon_pid = int(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)  # a crash: no teardown at all
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    netns = f"fleet-{prefix}-h1"
    assert Path("/var/run/netns", netns).exists()
    assert pid_alive(daemon_pid)

    assert cleanup_stale(prefix) == [prefix]

    assert not Path("/var/run/netns", netns).exists()
    assert not Path("/sys/class/net", f"flb{prefix}").exists()
    assert not (STATE_ROOT / prefix).exists()
    assert not pid_alive(daemon_pid)
    mounts = Path("/proc/self/mounts").read_text()
    assert str(STATE_ROOT / prefix) not in mounts
    assert not Path(f"/sys/fs/cgroup/pids/{netns}").exists()
