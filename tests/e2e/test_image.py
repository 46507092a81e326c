"""fleet's image, built from this repository (scripts/image.sh, as `make image` does)
on the local Debian base inside a namespaced dockerd, and checked from the outside:
its version, its user, no compilers, both daemons' commands, no numpy on the agent's
side, and its size (printed; a generous ceiling catches a regression)."""

from __future__ import annotations

from typing import Any

from fleet import __version__
from fleet.testing import HostPool
from fleet.testing.fleetimage import build_fleet_image
from tests.conftest import ImageLoader

# About 240 MB today (numpy is 75 MB of it); a new heavy dependency shows here.
SIZE_CEILING = 350_000_000

# What the agent imports to run, then whether numpy came along, and whether the
# server's side still has it (the image installs the server extra).
_IMPORTS = (
    "import sys; from fleet.cli.main import app; from fleet.agent import Agent;"
    " print('agent-numpy', 'numpy' in sys.modules);"
    " import fleet.controlplane.server; print('server-numpy', 'numpy' in sys.modules)"
)
# One shell in the image answers the rest: who runs, which tools are (not) there.
_INSPECT = f"""
echo "uid $(id -u) $(id -un)"
for tool in gcc cc c++ g++ x86_64-linux-gnu-gcc clang tcc make; do
    command -v "$tool" >/dev/null && echo "compiler $tool"
done
echo "nsenter $(command -v nsenter)"
/opt/fleet/bin/python -m pip --version >/dev/null 2>&1 && echo "has pip"
/opt/fleet/bin/python -c "{_IMPORTS}"
"""


def _run(client: Any, image: str, command: list[str], **kwargs: Any) -> str:
    out: bytes = client.containers.run(image, command, remove=True, stderr=True, **kwargs)
    return out.decode()


def test_the_image_builds_from_the_repo_and_runs_fleet(
    host_pool: HostPool, fleet_image: ImageLoader
) -> None:
    host = host_pool.hosts[0]
    image = fleet_image(host)  # the fixture's timeout allows for a first build
    built = build_fleet_image(host.docker_url)
    print(f"\n{built.report}\nfleet image: {built.size / 1e6:.0f} MB, {built.seconds:.0f}s")
    assert image == f"fleet:{__version__}"
    # A fresh dockerd has no python:3.11-slim: the build took the local Debian base.
    assert "base fleet-base:bookworm-2" in built.report

    client = host.client()
    attrs = client.images.get(image).attrs
    assert attrs["Config"]["Labels"]["org.opencontainers.image.version"] == __version__
    assert attrs["Config"]["Entrypoint"] == ["/opt/fleet/bin/fleet"]
    assert attrs["Config"]["User"] == "fleet"
    assert client.images.get("fleet:latest").id == attrs["Id"]
    assert built.size < SIZE_CEILING, f"the image grew to {built.size / 1e6:.0f} MB"

    assert _run(client, image, ["--version"]) == f"fleet {__version__}\n"
    assert "Usage: fleet server" in _run(client, image, ["server", "--help"])
    assert "Usage: fleet agent" in _run(client, image, ["agent", "--help"])

    found = _run(client, image, ["-c", _INSPECT], entrypoint=["/bin/sh"]).splitlines()
    assert "uid 10001 fleet" in found
    assert not [line for line in found if line.startswith("compiler ")], found
    assert "nsenter /usr/bin/nsenter" in found
    assert "has pip" not in found
    assert "agent-numpy False" in found
    assert "server-numpy True" in found


def test_the_image_is_copied_into_another_host(
    host_pool: HostPool, fleet_image: ImageLoader
) -> None:
    """A pool needs one build: another daemon gets the same image by save | load."""
    first, second = host_pool.hosts[0], host_pool.hosts[1]
    image = fleet_image(first)
    assert fleet_image(second) == image
    client = second.client()
    assert client.images.get(image).id == first.client().images.get(image).id
    assert client.images.get("fleet:latest").id == client.images.get(image).id
    assert _run(client, image, ["--version"]) == f"fleet {__version__}\n"
