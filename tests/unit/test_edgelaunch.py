"""Where the host has the edge state dir of an agent in a container (pure)."""

from pathlib import Path

from fleet.agent.edgelaunch import host_path

MOUNTS = [
    {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock"},
    {"Type": "bind", "Source": "/srv/fleet", "Destination": "/var/lib/fleet"},
    {
        "Type": "volume",
        "Source": "/var/lib/docker/volumes/edge/_data",
        "Destination": "/var/lib/fleet/agent/edge",
    },
]


def test_the_deepest_mount_above_the_path_gives_its_host_path() -> None:
    assert (
        host_path(MOUNTS, Path("/var/lib/fleet/agent/edge")) == "/var/lib/docker/volumes/edge/_data"
    )
    assert host_path(MOUNTS, Path("/var/lib/fleet/agent/other")) == "/srv/fleet/agent/other"
    assert host_path(MOUNTS, Path("/var/lib/fleet")) == "/srv/fleet"


def test_a_path_on_no_mount_has_no_host_path() -> None:
    assert host_path(MOUNTS, Path("/tmp/edge")) is None
    assert host_path(MOUNTS, Path("/var/lib/fleetx/edge")) is None  # a prefix, not a parent
    assert host_path([], Path("/var/lib/fleet")) is None
