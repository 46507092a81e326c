"""deploy/fcos and deploy/flatcar: the four Butane configs, rendered with certificates
`fleet certs` made, pass Debian's ignition-validate, and say what the docs say.

No Fedora CoreOS or Flatcar machine boots here: this proves the Ignition JSON is valid
for Ignition 3.3.0 and holds the documented files, modes and units, not that the hosts
come up (deploy/fcos/README.md says so too).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from fleet.cli import daemons
from fleet.install.butane import render_file
from fleet.testing.ignition import decode_contents, unit_directives

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMS = ("fcos", "flatcar")
FLEET_UID = 10001  # the image's user, as which fleet server runs


# The agent's documented run line (the shared contract of issue 19's image and agent).
def documented_agent_run() -> str:
    """The run line README.md documents (its block under "The agent as a container"):
    read from there, so the units cannot drift from what users are told."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### The agent as a container") :]
    match = re.search(r"```sh\n(docker run .*?)\n```", section, re.S)
    assert match, "README.md has no docker run block under 'The agent as a container'"
    return match.group(1).replace("\\\n", " ")  # its continued lines, joined


def fleet_cli(*args: str | Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "fleet", *map(str, args)], check=True, capture_output=True
    )


@pytest.fixture(scope="module")
def files_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The files dirs the READMEs have operators make, from certificates `fleet certs`
    issued: node1's for agent.bu, cp1's for controlplane.bu."""
    root = tmp_path_factory.mktemp("coreos")
    pki, etcd = root / "pki", root / "etcd-pki"
    fleet_cli("certs", "init", "--dir", pki)
    fleet_cli("certs", "issue", "agent", "node1", "--dir", pki)
    fleet_cli("certs", "issue", "server", "cp1", "--dir", pki, "--san", "10.0.0.11")
    fleet_cli("certs", "init", "--etcd", "--dir", etcd)
    fleet_cli("certs", "issue", "etcd-member", "etcd1", "--dir", etcd, "--san", "10.0.0.11")
    fleet_cli("certs", "issue", "etcd-client", "controlplane", "--dir", etcd)
    layout = {
        "agent": {
            "pki/ca.crt": pki / "ca.crt",
            "pki/agent.crt": pki / "agent-node1.crt",
            "pki/agent.key": pki / "agent-node1.key",
        },
        "controlplane": {
            "pki/ca.crt": pki / "ca.crt",
            "pki/server.crt": pki / "server-cp1.crt",
            "pki/server.key": pki / "server-cp1.key",
            "etcd/ca.crt": etcd / "ca.crt",
            "etcd/member.crt": etcd / "etcd-member-etcd1.crt",
            "etcd/member.key": etcd / "etcd-member-etcd1.key",
            "etcd/client.crt": etcd / "etcd-client-controlplane.crt",
            "etcd/client.key": etcd / "etcd-client-controlplane.key",
        },
    }
    dirs = {}
    for config, files in layout.items():
        target = root / config
        for name, source in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target / name)
        dirs[config] = target
    # the shared secrets key: 32 random bytes, base64, as `fleet server` makes one
    (dirs["controlplane"] / "secrets.key").write_text(base64.b64encode(bytes(32)).decode() + "\n")
    return dirs


@dataclass(frozen=True)
class File:
    mode: int | None
    uid: int | None
    data: bytes


@dataclass(frozen=True)
class Rendered:
    path: Path  # the .ign file
    config: dict[str, Any]

    @property
    def files(self) -> dict[str, File]:
        return {
            f["path"]: File(
                f.get("mode"), f.get("user", {}).get("id"), decode_contents(f["contents"])
            )
            for f in self.config["storage"]["files"]
        }

    @property
    def directories(self) -> dict[str, int]:
        return {d["path"]: d["mode"] for d in self.config["storage"]["directories"]}

    @property
    def units(self) -> dict[str, dict[str, Any]]:
        return {u["name"]: u for u in self.config["systemd"]["units"]}


def render(system: str, config: str, files_dirs: dict[str, Path], out: Path) -> Rendered:
    rendered = render_file(DEPLOY / system / f"{config}.bu", files_dir=files_dirs[config])
    path = out / f"{system}-{config}.ign"
    path.write_text(json.dumps(rendered, indent=2))
    return Rendered(path, rendered)


def ignition_validate(path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("ignition-validate") is None:  # a missing validator fails, never skips
        pytest.fail("ignition-validate is missing: install Debian's ignition (bootstrap.sh does)")
    return subprocess.run(
        ["ignition-validate", str(path)], capture_output=True, text=True, timeout=60
    )


def option_names(command: Any) -> set[str]:
    """The long options of a fleet command, from its typer annotations."""
    names = set()
    for hint in typing.get_type_hints(command, include_extras=True).values():
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, typer.models.OptionInfo):
                decls = [meta.default, *meta.param_decls]
                names |= {d[2:] for d in decls if isinstance(d, str) and d.startswith("--")}
    return names


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("config", ["agent", "controlplane"])
def test_each_config_renders_to_ignition_the_validator_accepts(
    system: str, config: str, files_dirs: dict[str, Path], tmp_path: Path
) -> None:
    rendered = render(system, config, files_dirs, tmp_path)
    assert rendered.config["ignition"] == {"version": "3.3.0"}
    result = ignition_validate(rendered.path)
    # ignition-validate exits 0 on warnings; like butane --strict, none is accepted
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_validator_refuses_a_broken_config(files_dirs: dict[str, Path], tmp_path: Path) -> None:
    """So the test above can fail: ignition-validate does check what it is given."""
    rendered = render("fcos", "agent", files_dirs, tmp_path)
    broken = json.loads(rendered.path.read_text())
    broken["storage"]["files"][0]["path"] = "etc/hostname"
    broken["systemd"]["units"][0]["name"] = "fleet-agent"
    rendered.path.write_text(json.dumps(broken))
    result = ignition_validate(rendered.path)
    assert result.returncode != 0
    assert "path not absolute" in result.stdout + result.stderr
    assert "invalid systemd unit extension" in result.stdout + result.stderr


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_agent_host_config(system: str, files_dirs: dict[str, Path], tmp_path: Path) -> None:
    rendered = render(system, "agent", files_dirs, tmp_path)
    files = rendered.files
    certs = files_dirs["agent"] / "pki"

    # agent.toml names the documented keys, each an option of `fleet agent`
    agent_toml = files["/etc/fleet/agent.toml"]
    settings = tomllib.loads(agent_toml.data.decode())
    assert settings == {
        "server": "10.0.0.11:7400,10.0.0.12:7400,10.0.0.13:7400",
        "host-id": "node1",
        "tls-ca": "/etc/fleet/pki/ca.crt",
        "tls-cert": "/etc/fleet/pki/agent.crt",
        "tls-key": "/etc/fleet/pki/agent.key",
        "state-dir": "/var/lib/fleet/agent",
        "allow-host-commands": False,
    }
    assert set(settings) <= option_names(daemons.agent)
    assert agent_toml.mode == 0o644
    assert files["/etc/hostname"].data == b"node1"  # the host id is the host's name

    # the certificates `fleet certs` issued, at the paths agent.toml names; the key 0600
    for name in ("ca.crt", "agent.crt", "agent.key"):
        installed = files[f"/etc/fleet/pki/{name}"]
        assert installed.data == (certs / name).read_bytes()
        assert installed.mode == (0o600 if name.endswith(".key") else 0o644)
        assert installed.uid is None  # root's: the agent runs as root
    assert rendered.directories["/var/lib/fleet/agent"] == 0o700

    # the unit: the documented run line under systemd
    unit = rendered.units["fleet-agent.service"]
    assert unit["enabled"] is True
    service = unit_directives(unit["contents"])
    assert service["Unit.Requires"] == ["docker.service"]
    assert "docker.service" in service["Unit.After"][0].split()
    assert service["Service.Restart"] == ["always"]
    assert service["Service.ExecStartPre"][0] == "-/usr/bin/docker rm -f fleet-agent"
    assert service["Install.WantedBy"] == ["multi-user.target"]
    assert shlex.split(service["Service.ExecStart"][0]) == expected_agent_run()
    # FLEET_IMAGE, which that line runs, comes from the env file the config writes
    assert service["Service.EnvironmentFile"] == ["/etc/fleet/images.env"]
    images = files["/etc/fleet/images.env"].data.decode()
    assert images.startswith("FLEET_IMAGE=") and ":" in images.split("=", 1)[1]


def expected_agent_run() -> list[str]:
    """The documented line as a unit runs it: in the foreground (no -d), restarted by
    systemd (no --restart), the image from FLEET_IMAGE, its log lines for the journal
    (which --log-format auto cannot see from inside the container)."""
    args = shlex.split(documented_agent_run())
    args.remove("-d")
    at = args.index("--restart")
    del args[at : at + 2]
    args[args.index("fleet:VERSION")] = "${FLEET_IMAGE}"
    return ["/usr/bin/docker", *args[1:], "--log-format", "journal"]


@pytest.mark.parametrize("system", SYSTEMS)
def test_the_control_plane_config(system: str, files_dirs: dict[str, Path], tmp_path: Path) -> None:
    rendered = render(system, "controlplane", files_dirs, tmp_path)
    files = rendered.files
    source = files_dirs["controlplane"]

    settings = tomllib.loads(files["/etc/fleet/server.toml"].data.decode())
    assert set(settings) <= option_names(daemons.server)
    assert settings["listen"].endswith(":7400") and settings["metrics-listen"].endswith(":7401")
    assert settings["etcd"] == "10.0.0.11:2379,10.0.0.12:2379,10.0.0.13:2379"
    assert settings["secrets-key-file"] == "/etc/fleet/secrets.key"
    # every file server.toml names is installed; keys 0600 and the server's own (uid 10001)
    for option in ("tls-ca", "tls-cert", "tls-key", "etcd-cacert", "etcd-cert", "etcd-key"):
        assert settings[option] in files, option
    for key in (
        "/etc/fleet/pki/server.key",
        "/etc/fleet/etcd/client.key",
        "/etc/fleet/secrets.key",
    ):
        assert (files[key].mode, files[key].uid) == (0o600, FLEET_UID), key
    assert files["/etc/fleet/secrets.key"].data == (source / "secrets.key").read_bytes()
    assert files["/etc/fleet/pki/server.crt"].data == (source / "pki/server.crt").read_bytes()
    assert files["/etc/fleet/etcd/ca.crt"].data == files["/etc/etcd/pki/ca.crt"].data

    # etcd: TLS for clients and peers, with the certificates installed beside it
    etcd_env = dict(
        line.split("=", 1)
        for line in files["/etc/etcd/etcd.env"].data.decode().splitlines()
        if line and not line.startswith("#")
    )
    assert etcd_env["ETCD_CLIENT_CERT_AUTH"] == etcd_env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    assert etcd_env["ETCD_ADVERTISE_CLIENT_URLS"] == "https://10.0.0.11:2379"
    assert etcd_env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == "https://10.0.0.11:2380"
    assert etcd_env["ETCD_INITIAL_CLUSTER"].count("https://") == 3
    assert not any('"' in value for value in etcd_env.values())  # docker --env-file keeps quotes
    for var in ("ETCD_TRUSTED_CA_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_PEER_KEY_FILE"):
        assert etcd_env[var] in files, var
    assert files["/etc/etcd/pki/member.key"].mode == 0o600
    assert rendered.directories["/var/lib/etcd"] == 0o700

    units = rendered.units
    etcd = unit_directives(units["fleet-etcd.service"]["contents"])
    etcd_run = shlex.split(etcd["Service.ExecStart"][0])
    assert etcd_run[:4] == ["/usr/bin/docker", "run", "--name", "fleet-etcd"]
    assert etcd_run[6:8] == ["--env-file", "/etc/etcd/etcd.env"]
    assert "/var/lib/etcd:/var/lib/etcd:Z" in etcd_run
    server = unit_directives(units["fleet-server.service"]["contents"])
    server_run = shlex.split(server["Service.ExecStart"][0])
    assert server_run[-4:] == ["${FLEET_IMAGE}", "server", "--config", "/etc/fleet/server.toml"]
    assert "--user" not in server_run  # the image's non-root user
    assert "/etc/fleet:/etc/fleet:ro,z" in server_run
    for service, name in ((etcd, "fleet-etcd"), (server, "fleet-server")):
        assert service["Unit.Requires"] == ["docker.service"]
        assert service["Service.Restart"] == ["always"]
        assert service["Service.ExecStartPre"][0] == f"-/usr/bin/docker rm -f {name}"
    images = files["/etc/fleet/images.env"].data.decode()
    assert "ETCD_IMAGE=quay.io/coreos/etcd:v3" in images and "FLEET_IMAGE=" in images


# Flatcar's agent hosts reboot through fleet-lock (FleetLock's client, as Zincati is
# Fedora CoreOS's): its script, its settings and its units are Flatcar's own.
FLATCAR_LOCK_FILES = {"/opt/bin/fleet-lock", "/etc/fleet/fleet-lock.env"}
FLATCAR_LOCK_UNITS = {
    "fleet-lock-steady.service",
    "fleet-lock-reboot.service",
    "fleet-lock-reboot.timer",
}


def test_both_systems_run_the_same_units(files_dirs: dict[str, Path], tmp_path: Path) -> None:
    """The units are one text for both systems but Flatcar's fleet-lock ones; the files
    differ only in the update strategy (and a comment)."""
    for config in ("agent", "controlplane"):
        fcos = render("fcos", config, files_dirs, tmp_path)
        flatcar = render("flatcar", config, files_dirs, tmp_path)
        flatcar_units = flatcar.config["systemd"]["units"]
        lock_units = {u["name"] for u in flatcar_units} - {
            u["name"] for u in fcos.config["systemd"]["units"]
        }
        assert lock_units == (FLATCAR_LOCK_UNITS if config == "agent" else set())
        shared = [u for u in flatcar_units if u["name"] not in lock_units]
        assert fcos.config["systemd"]["units"] == shared
        assert fcos.config["passwd"] == flatcar.config["passwd"]
        only_fcos = set(fcos.files) - set(flatcar.files)
        only_flatcar = set(flatcar.files) - set(fcos.files)
        update_conf = "/etc/flatcar/update.conf"
        assert only_flatcar == {update_conf} | (FLATCAR_LOCK_FILES if config == "agent" else set())
        if config == "agent":
            # Agent hosts reboot through FleetLock: fleet drains each first.
            lock = "/etc/zincati/config.d/55-fleet-lock.toml"
            assert only_fcos == {lock, "/etc/pki/ca-trust/source/anchors/fleet-ca.crt"}
            zincati = tomllib.loads(fcos.files[lock].data.decode())
            assert zincati["updates"]["strategy"] == "fleet_lock"
            assert zincati["updates"]["fleet_lock"]["base_url"].startswith("https://default:")
            assert flatcar.files["/opt/bin/fleet-lock"].mode == 0o755
            assert flatcar.files["/etc/fleet/fleet-lock.env"].mode == 0o600
        else:
            assert only_fcos == {"/etc/zincati/config.d/90-fleet-updates.toml"}
            assert b"enabled = false" in fcos.files[only_fcos.pop()].data
        assert flatcar.files[update_conf].data == b"REBOOT_STRATEGY=off\n"
        for path in set(fcos.files) & set(flatcar.files):
            if path == "/etc/fleet/agent.toml":  # its comment's upgrade command differs
                same = tomllib.loads(fcos.files[path].data.decode()) == tomllib.loads(
                    flatcar.files[path].data.decode()
                )
            else:
                same = fcos.files[path] == flatcar.files[path]
            assert same, path
