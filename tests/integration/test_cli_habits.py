"""kubectl's and docker's daily habits through the real CLI against a real control plane
and agent: -l selectors, -o name, --no-headers, ps -q, -w watches, logs --since and
--previous, rollout resume --wait and shell completion."""

from __future__ import annotations

import subprocess

from fleet.spec import load_documents
from tests.integration.conftest import Fleet, fleet_cli, wait_containers


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet_cli(*args, server=fleet.server.address, pki=fleet.pki)


def _apply(fleet: Fleet, text: str) -> None:
    fleet.client.apply(load_documents(text))


def _app(name: str, image: str, team: str, replicas: int = 1) -> str:
    return f"name: {name}\nimage: {image}\nreplicas: {replicas}\nlabels: {{team: {team}}}\n"


def test_selectors_and_output_shapes(fleet: Fleet) -> None:
    _apply(
        fleet,
        "\n---\n".join(
            [_app("wa", fleet.image, "web"), _app("wb", fleet.image, "web"),
             _app("ba", fleet.image, "batch")]
        ),
    )  # fmt: skip
    for name in ("wa", "wb", "ba"):
        wait_containers(fleet, name, 1)

    names = _cli(fleet, "get", "apps", "-l", "team=web", "-o", "name")
    assert names.returncode == 0, names.stderr
    assert names.stdout.split() == ["app/wa", "app/wb"]
    others = _cli(fleet, "get", "apps", "-l", "team!=web,team", "-o", "name")
    assert others.stdout.split() == ["app/ba"]
    bare = _cli(fleet, "get", "apps", "-l", "team=web", "--no-headers")
    assert [line.split()[0] for line in bare.stdout.splitlines()] == ["wa", "wb"]
    none = _cli(fleet, "get", "apps", "-l", "team=ops")
    assert none.returncode == 0 and none.stdout == ""
    assert "No resources found" in none.stderr
    bad = _cli(fleet, "get", "apps", "-l", "team==x")
    assert bad.returncode == 2 and "bad term" in bad.stderr

    # Hosts: admin labels and agent.* as constraints see them; -o name.
    assert _cli(fleet, "label", "host", fleet.host.name, "rack=r9").returncode == 0
    hosts = _cli(fleet, "get", "hosts", "-l", "rack=r9", "-o", "name")
    assert hosts.stdout.split() == [f"host/{fleet.host.name}"]
    assert _cli(fleet, "get", "hosts", "-l", "rack=r1", "-o", "name").stdout == ""

    # Containers and ps: by their app's labels; -q gives the ids Docker has.
    ids = _cli(fleet, "ps", "-q", "-l", "team=web")
    docker_ids = {
        c["Id"][:12]
        for name in ("wa", "wb")
        for c in fleet.docker.api.containers(filters={"label": f"fleet.app={name}"})
    }
    assert ids.returncode == 0 and set(ids.stdout.split()) == docker_ids
    table = _cli(fleet, "get", "containers", "-l", "team=batch", "--no-headers")
    assert [line.split()[0] for line in table.stdout.splitlines()] == ["ba.0"]
    assert _cli(fleet, "ps", "-l", "team=web", "-o", "name").stdout.split() == [
        "container/wa.0",
        "container/wb.0",
    ]

    # scale and delete take -l; selecting nothing is an error there.
    scaled = _cli(fleet, "scale", "-l", "team=web", "2")
    assert scaled.returncode == 0, scaled.stderr
    assert {a.name: a.desired for a in fleet.client.apps()} == {"wa": 2, "wb": 2, "ba": 1}
    assert _cli(fleet, "scale", "-l", "team=ops", "2").returncode == 1
    nothing = _cli(fleet, "delete", "app", "-l", "team=ops")
    assert nothing.returncode == 1 and "no app matches" in nothing.stderr
    gone = _cli(fleet, "delete", "app", "-l", "team=web")
    assert gone.returncode == 0, gone.stderr
    assert "app/wa deleted" in gone.stdout and "app/wb deleted" in gone.stdout
    assert [a.name for a in fleet.client.apps()] == ["ba"]

    # cordon takes -l too (the admin label set above).
    cordoned = _cli(fleet, "cordon", "-l", "rack=r9")
    assert cordoned.returncode == 0 and f"host/{fleet.host.name} cordoned" in cordoned.stdout
    assert _cli(fleet, "cordon", "-l", "rack=r1").returncode == 1
