"""Docker's other container options of an app file, applied through fleet to a real
dockerd and read back from Docker (``container.attrs``) and from inside the container;
fleet's bounded log by default; ``fleet logs`` with a driver Docker reads back and with
one it cannot."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.policy import Policy
from fleet.spec import load_documents
from fleet.testing import wait_until
from fleet.testing.fleetprocs import FleetAgentProcess
from fleet.testing.procs import without_fleet_env
from tests.conftest import WEB_INDEX
from tests.integration.conftest import Fleet, wait_containers

EVERY = """\
name: every
image: {image}
entrypoint: [/bin/sh, -c]
command: ["echo started; exec sleep 3600"]
user: "1000:1000"
working_dir: /tmp
hostname: web-1
read_only: true
tmpfs: ["/run:size=8m,mode=1777"]
stop_signal: SIGINT
init: true
ulimits: {{nofile: {{soft: 512, hard: 1024}}, nproc: 300}}
dns: [10.9.9.9]
dns_search: [example.internal]
extra_hosts: ["db:10.0.0.5"]
sysctls: {{net.core.somaxconn: 321, kernel.shmmax: 65536}}
shm_size: 16Mi
cap_drop: [NET_RAW]
devices: ["/dev/zero:/dev/myzero:r"]
labels: {{team: web}}
logging: {{driver: json-file, options: {{max-size: 1m, max-file: 2}}}}
"""


def _cli(fleet: Fleet, *args: str) -> str:
    env = without_fleet_env()
    env["FLEET_PKI_DIR"] = str(fleet.pki.dir)
    fleet.pki.client()
    command = [sys.executable, "-m", "fleet", *args, "--server", fleet.server.address]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_option_reaches_docker_and_the_container(fleet: Fleet, tmp_path: Path) -> None:
    # Devices need the cluster policy and the host's agent, as privileges do.
    fleet.client.set_policy(Policy(allow_devices=["/dev/zero"]).to_proto())
    fleet.agent.stop()
    fleet.agent = FleetAgentProcess(
        [fleet.server.address],
        fleet.host.name,
        fleet.host.docker_url,
        tmp_path,
        fleet.pki,
        extra_args=["--allow-device", "/dev/zero"],
    ).start()
    fleet.client.apply(load_documents(EVERY.format(image=fleet.image), "every.yaml"))
    [container] = wait_containers(fleet, "every", 1)

    config, host = container.attrs["Config"], container.attrs["HostConfig"]
    assert config["Entrypoint"] == ["/bin/sh", "-c"]
    assert config["Cmd"] == ["echo started; exec sleep 3600"]
    assert (config["User"], config["WorkingDir"], config["Hostname"]) == (
        "1000:1000",
        "/tmp",
        "web-1",
    )
    assert config["StopSignal"] == "SIGINT"
    assert config["Labels"]["team"] == "web"
    assert host["ReadonlyRootfs"] is True and host["Init"] is True
    assert host["Tmpfs"] == {"/run": "size=8m,mode=1777"}
    assert sorted((u["Name"], u["Soft"], u["Hard"]) for u in host["Ulimits"]) == [
        ("nofile", 512, 1024),
        ("nproc", 300, 300),
    ]
    assert (host["Dns"], host["DnsSearch"]) == (["10.9.9.9"], ["example.internal"])
    assert host["ExtraHosts"] == ["db:10.0.0.5"]
    assert host["Sysctls"] == {"net.core.somaxconn": "321", "kernel.shmmax": "65536"}
    assert host["ShmSize"] == 16 << 20
    assert host["CapDrop"] == ["NET_RAW"]
    assert host["Devices"] == [
        {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/myzero", "CgroupPermissions": "r"}
    ]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}

    # And they hold inside the running container. The open-files limit is read from the
    # container's own first process, not from the exec'd shell: runc 1.1 (Debian 12's 1.1.5)
    # sometimes hands an exec'd process the wrong soft limit (opencontainers/runc#4195).
    probe = (
        "id -u; id -g; pwd; hostname; "
        "sed -n 's/^Max open files  *\\([0-9]*\\)  *\\([0-9]*\\).*/\\1 \\2/p' /proc/1/limits; "
        "cat /proc/sys/net/core/somaxconn; "
        "grep -c 'db' /etc/hosts; grep nameserver /etc/resolv.conf; test -c /dev/myzero && "
        "echo dev; touch /x 2>/dev/null || echo ro; touch /run/x && echo tmpfs; "
        "cat /proc/1/comm"
    )
    code, output = container.exec_run(["sh", "-c", probe])
    assert output.decode().split("\n")[:-1] == [
        "1000",
        "1000",
        "/tmp",
        "web-1",
        "512 1024",
        "321",
        "1",
        "nameserver 10.9.9.9",
        "dev",
        "ro",
        "tmpfs",
        "docker-init",
    ], output
    assert code == 0

    # describe shows them (the spec as stored), the default log is named when none is set.
    shown = _cli(fleet, "describe", "app", "every")
    for line in ("user: 1000:1000", "shm_size: 16Mi", "- db:10.0.0.5", "driver: json-file"):
        assert line in shown, shown

    # A changed option is a new revision, rolled out as a changed command would be.
    changed = EVERY.format(image=fleet.image).replace("nproc: 300", "nproc: 400")
    fleet.client.apply(load_documents(changed, "every.yaml"))

    def rolled() -> bool:
        # The low-level list: no inspect of a container removed meanwhile (a 404).
        found = fleet.docker.api.containers(filters={"label": "fleet.app=every"}, all=True)
        return [c["Labels"]["fleet.revision"] for c in found] == ["2"]

    wait_until(rolled, 30, what="revision 2 to replace revision 1")
    [container] = wait_containers(fleet, "every", 1)
    limits = {u["Name"]: u["Hard"] for u in container.attrs["HostConfig"]["Ulimits"]}
    assert limits == {"nofile": 1024, "nproc": 400}


def test_default_log_is_bounded_and_fleet_logs_reads_local_and_refuses_none(
    fleet: Fleet,
) -> None:
    say = "command: [sh, -c, 'echo hello from $0; exec sleep 3600', {}]\n"
    apps = {
        "plain": "",
        "local": "logging: {driver: local, options: {max-size: 5m}}\n",
        "silent": "logging: {driver: none}\n",
        # Docker keeps a local copy of other drivers' output (20.10's "dual logging")
        # that it reads back, unless told not to.
        "gelf": "logging: {driver: gelf, options: {gelf-address: 'udp://127.0.0.1:12201'}}\n",
        "nocache": "logging:\n  driver: gelf\n  options:\n"
        "    gelf-address: 'udp://127.0.0.1:12201'\n    cache-disabled: 'true'\n",
    }
    text = "---\n".join(
        f"name: {name}\nimage: {fleet.image}\n" + say.format(name) + extra
        for name, extra in apps.items()
    )
    fleet.client.apply(load_documents(text, "logs.yaml"))
    logs = {
        name: wait_containers(fleet, name, 1)[0].attrs["HostConfig"]["LogConfig"] for name in apps
    }
    assert logs == {
        "plain": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}},
        "local": {"Type": "local", "Config": {"max-size": "5m"}},
        "silent": {"Type": "none", "Config": {}},
        "gelf": {"Type": "gelf", "Config": {"gelf-address": "udp://127.0.0.1:12201"}},
        "nocache": {
            "Type": "gelf",
            "Config": {"gelf-address": "udp://127.0.0.1:12201", "cache-disabled": "true"},
        },
    }

    def read(app: str) -> str:
        return b"".join(c.data for c in fleet.client.logs(app)).decode()

    for app in ("plain", "local", "gelf"):
        wait_until(lambda a=app: f"hello from {a}" in read(a), 20, what=f"{app}'s log line")
    refusal = read("silent")
    assert "the container logs to none, which Docker cannot read back" in refusal, refusal
    assert "set the app's logging to json-file, local or journald" in refusal
    refusal = read("nocache")
    assert "the container logs to gelf, which Docker cannot read back" in refusal, refusal
    # describe names fleet's default for an app without logging.
    assert "json-file, max-size 10m, max-file 3 (fleet's default)" in _cli(
        fleet, "describe", "app", "plain"
    )


@pytest.fixture
def networks_removed(fleet: Fleet) -> Iterator[None]:
    """After the test, fleet's networks go too: the agent leaves them (empty bridges)."""
    yield
    fleet.agent.stop()
    fleet.host.remove_all_containers(label="fleet.app")
    fleet.docker.networks.prune(filters={"label": "fleet.network"})


def test_apps_on_one_network_reach_each_other_by_name(fleet: Fleet, networks_removed: None) -> None:
    text = "---\n".join(
        f"name: {name}\nimage: {fleet.image}\n{extra}"
        for name, extra in {
            "db": "networks: [backend]\n",
            "api": "networks: {backend: , front: }\n",
            "outsider": "",
        }.items()
    )
    fleet.client.apply(load_documents(text, "net.yaml"))
    containers = {name: wait_containers(fleet, name, 1)[0] for name in ("db", "api", "outsider")}
    attached = containers["api"].attrs["NetworkSettings"]["Networks"]
    assert sorted(attached) == ["fleet-backend", "fleet-front"]
    assert "api" in attached["fleet-backend"]["Aliases"]
    network = fleet.docker.networks.get("fleet-backend")
    assert network.attrs["Driver"] == "bridge"
    assert network.attrs["Labels"] == {"fleet.network": "backend"}

    # Docker's DNS on the network answers the app's name (busybox's own resolver: the
    # static busybox's wget cannot resolve names itself, so it is given the address).
    code, output = containers["api"].exec_run(["nslookup", "db"])
    assert code == 0, output
    address = output.decode().split("Address: ")[-1].split()[0]
    db_backend = containers["db"].attrs["NetworkSettings"]["Networks"]["fleet-backend"]
    assert address == db_backend["IPAddress"]
    fetch = ["wget", "-qO-", f"http://{address}:8080/index.html"]
    code, output = containers["api"].exec_run(fetch)
    assert code == 0 and output.decode() == WEB_INDEX, output
    # An app on none of db's networks cannot reach it there (Docker isolates bridges);
    # nc, as this busybox's wget -T crashes.
    code, output = containers["outsider"].exec_run(["nc", "-w", "2", address, "8080"])
    assert code != 0 and b"timed out" in output, output
