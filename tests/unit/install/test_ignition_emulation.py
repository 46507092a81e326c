"""fleet.testing.ignition, the first boot the e2e test of deploy/fcos plays: Ignition's
files under a root directory, and a unit's [Service] lines run as systemd runs them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.install.butane import render
from fleet.testing.ignition import (
    IgnitionError,
    apply_ignition,
    docker_paths_in_root,
    read_service,
    start_service,
    stop_service,
)

BUTANE = """
variant: fcos
version: 1.4.0
storage:
  directories:
    - path: /var/lib/thing
      mode: 0700
  files:
    - path: /etc/thing/big.conf
      contents:
        inline: "%s"
    - path: /etc/thing/secret
      mode: 0600
      user: {id: 4321}
      contents:
        inline: "s3cret\\n"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are set by chown, as root")
def test_files_directories_and_links_land_under_the_root(tmp_path: Path) -> None:
    big = "x = 1\\n" * 200  # long and repetitive: butane gzips it
    config = render(BUTANE % big)
    assert config["storage"]["files"][0]["contents"]["compression"] == "gzip"
    config["storage"]["links"] = [{"path": "/etc/thing/link", "target": "/etc/thing/secret"}]
    root = tmp_path / "root"

    written = apply_ignition(config, root)

    assert (root / "etc/thing/big.conf").read_text() == "x = 1\n" * 200
    assert (root / "etc/thing/big.conf").stat().st_mode & 0o777 == 0o644  # Ignition's default
    secret = (root / "etc/thing/secret").stat()
    assert (secret.st_mode & 0o777, secret.st_uid) == (0o600, 4321)
    assert (root / "var/lib/thing").stat().st_mode & 0o777 == 0o700
    assert os.readlink(root / "etc/thing/link") == "/etc/thing/secret"
    assert root / "etc/thing/secret" in written


def test_what_ignition_would_refuse_or_this_does_not_play_is_an_error(tmp_path: Path) -> None:
    file = {"path": "/etc/a", "contents": {"source": "data:,1"}}
    apply_ignition({"storage": {"files": [file]}}, tmp_path)
    with pytest.raises(IgnitionError, match="overwrite is not set"):
        apply_ignition({"storage": {"files": [file]}}, tmp_path)
    apply_ignition({"storage": {"files": [{**file, "overwrite": True}]}}, tmp_path)
    with pytest.raises(IgnitionError, match="only data URLs"):
        apply_ignition(
            {"storage": {"files": [{"path": "/b", "contents": {"source": "https://x"}}]}}, tmp_path
        )
    with pytest.raises(IgnitionError, match="by name"):
        apply_ignition({"storage": {"files": [{"path": "/c", "user": {"name": "core"}}]}}, tmp_path)
    with pytest.raises(IgnitionError, match=r"storage\.disks is not emulated"):
        apply_ignition({"storage": {"disks": []}}, tmp_path)
    with pytest.raises(IgnitionError, match="absolute"):
        apply_ignition({"storage": {"directories": [{"path": "etc"}]}}, tmp_path)


UNIT = """[Unit]
Description=x

[Service]
Environment="GREETING=hello world" IMAGE=from-environment
EnvironmentFile=/etc/svc.env
EnvironmentFile=-/etc/missing.env
ExecStartPre=-/bin/false
ExecStartPre=/bin/sh -c 'echo ${GREETING} > %s'
ExecStart=/usr/bin/docker run -v /etc/svc:/etc/svc:ro \\
  -v /sys/fs/cgroup:/sys/fs/cgroup:ro ${IMAGE} $WORDS cost=$$5
ExecStop=/bin/true
"""


def test_a_service_reads_as_systemd_reads_it(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/svc.env").write_text('# the image\nIMAGE="registry/x:1"\nWORDS=a  b\n')
    service = read_service(UNIT % "/dev/null", tmp_path)
    # the env file wins over Environment=
    assert service.environment == {
        "GREETING": "hello world",
        "IMAGE": "registry/x:1",
        "WORDS": "a  b",
    }
    assert [(c.argv[0], c.ignore_failure) for c in service.start_pre] == [
        ("/bin/false", True),
        ("/bin/sh", False),
    ]
    assert service.start_pre[1].argv[2] == "echo hello world > /dev/null"  # ${} in quotes too
    # ${IMAGE}: one word; $WORDS alone: split at whitespace; $$: a literal $
    assert service.start.argv[-5:] == [
        "/sys/fs/cgroup:/sys/fs/cgroup:ro",
        "registry/x:1",
        "a",
        "b",
        "cost=$5",
    ]

    with pytest.raises(IgnitionError, match=r"EnvironmentFile=/etc/svc\.env is missing"):
        read_service(UNIT, tmp_path / "elsewhere")
    with pytest.raises(IgnitionError, match="exec prefix '@'"):
        read_service("[Service]\nExecStart=@/bin/true x\n", tmp_path)
    with pytest.raises(IgnitionError, match="specifiers"):
        read_service("[Service]\nExecStart=/bin/echo %n\n", tmp_path)
    with pytest.raises(IgnitionError, match="exactly one ExecStart"):
        read_service("[Service]\nExecStop=/bin/true\n", tmp_path)


def test_docker_reads_the_roots_host_paths(tmp_path: Path) -> None:
    (tmp_path / "etc/fleet").mkdir(parents=True)
    (tmp_path / "env").write_text("A=1\n")
    argv = ["docker", "run", "-v", "/etc/fleet:/etc/fleet:ro", "--volume=/sys/fs/cgroup:/c"]
    argv += ["--env-file", "/env", "-v", "named:/data", "image", "--config", "/etc/fleet"]
    assert docker_paths_in_root(argv, tmp_path) == [
        *("docker", "run", "-v", f"{tmp_path}/etc/fleet:/etc/fleet:ro"),
        "--volume=/sys/fs/cgroup:/c",  # not in the root: the machine's
        *("--env-file", f"{tmp_path}/env", "-v", "named:/data"),
        *("image", "--config", "/etc/fleet"),  # the container's own paths
    ]
    with pytest.raises(IgnitionError, match="--mount"):
        docker_paths_in_root(["docker", "run", "--mount", "type=bind"], tmp_path)


def test_start_runs_the_pre_lines_then_the_main_process_and_stop_ends_it(
    tmp_path: Path,
) -> None:
    said = tmp_path / "said"
    unit = f"""[Service]
Environment=WORD=started
ExecStartPre=-/bin/false
ExecStartPre=/bin/sh -c 'echo ${{WORD}} $EXTRA > {said}'
ExecStart=/bin/sleep 60
ExecStop=/bin/sh -c 'echo stopping'
"""
    service = read_service(unit, tmp_path)
    with (tmp_path / "journal").open("wb") as journal:
        main = start_service(service, {"EXTRA": "here"}, journal)
        assert said.read_text() == "started here\n"
        assert main.poll() is None
        assert stop_service(service, main, {}, journal) == -15  # SIGTERM after ExecStop
        failing = "[Service]\nExecStartPre=/bin/false\nExecStart=/bin/true\n"
        with pytest.raises(IgnitionError, match="/bin/false exited with 1"):
            start_service(read_service(failing, tmp_path), {}, journal)
    assert (tmp_path / "journal").read_text() == "stopping\n"
