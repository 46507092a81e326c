"""The runtime seam: the labels every fleet container carries are built by one function
and read back by both runtimes (Docker's from a container's inspect, the hollow one from
its records), and each runtime says how it is called and how its events arrive."""

from __future__ import annotations

from typing import Any

from fleet.agent.dockerruntime import DockerRuntime, _observe
from fleet.agent.runtime import FollowedEvents, PushedEvents, container_labels
from fleet.proto import fleet_pb2 as pb
from fleet.testing.hollow import HollowRuntime


def _spec() -> pb.ContainerSpec:
    spec = pb.ContainerSpec(
        app="web",
        slot=3,
        revision=7,
        spec_hash="1a2b3c4d5e6f",
        restart="on-failure:2",
        stop_grace_seconds=2.5,
        shutdown_delay_seconds=1.5,
        image="img:v1",
    )
    spec.labels["team"] = "ops"
    spec.health.CopyFrom(pb.HealthCheck(kind="http", port=80, path="/ok", retries=3))
    return spec


def _inspect(labels: dict[str, str]) -> dict[str, Any]:
    """What dockerd's inspect says of a created container with ``labels``."""
    return {
        "Id": "c" * 64,
        "Name": "/web.3.1a2b3c4d",
        "Config": {"Labels": labels},
        "State": {"Status": "created", "ExitCode": 0, "StartedAt": "0001-01-01T00:00:00Z"},
        "NetworkSettings": {"Ports": {}},
    }


def test_the_labels_carry_the_replica_and_the_users_own() -> None:
    labels = container_labels(_spec())
    assert labels["team"] == "ops"
    assert {k: v for k, v in labels.items() if k != "fleet.health"} == {
        "team": "ops",
        "fleet.app": "web",
        "fleet.slot": "3",
        "fleet.revision": "7",
        "fleet.spec-hash": "1a2b3c4d5e6f",
        "fleet.restart": "on-failure:2",
        "fleet.stop-grace": "2.5",
        "fleet.shutdown-delay": "1.5",
    }
    plain = pb.ContainerSpec(app="web", slot=0, revision=1, spec_hash="h", restart="always")
    assert "fleet.shutdown-delay" not in container_labels(plain)
    assert "fleet.health" not in container_labels(plain)


def test_docker_reads_back_what_the_labels_say() -> None:
    spec = _spec()
    observed = _observe(_inspect(container_labels(spec)))
    assert (observed.app, observed.slot, observed.revision, observed.spec_hash) == (
        "web",
        3,
        7,
        "1a2b3c4d5e6f",
    )
    assert (observed.restart, observed.stop_grace, observed.shutdown_delay) == (
        "on-failure:2",
        2.5,
        1.5,
    )
    assert observed.health_check == spec.health


def test_the_hollow_runtime_labels_as_docker_does() -> None:
    runtime = HollowRuntime(start_delay=0.0)
    spec = _spec()
    container_id = runtime.create(spec)
    [observed] = runtime.list_containers()
    assert observed.container_id == container_id and observed.name == "web.3.1a2b3c4d"
    assert (observed.app, observed.slot, observed.revision, observed.spec_hash) == (
        "web",
        3,
        7,
        "1a2b3c4d5e6f",
    )
    assert (observed.restart, observed.stop_grace) == ("on-failure:2", 2.5)
    assert runtime.images_in_use() == {"img:v1"}


def test_each_runtime_says_how_it_is_called_and_how_events_arrive() -> None:
    docker_runtime, hollow = DockerRuntime("unix:///nowhere"), HollowRuntime()
    assert docker_runtime.blocking and not hollow.blocking
    assert isinstance(docker_runtime, FollowedEvents)
    assert not isinstance(docker_runtime, PushedEvents)
    assert isinstance(hollow, PushedEvents) and not isinstance(hollow, FollowedEvents)
