"""Tests of the STATUS and REASON ``fleet ps`` says of a replica: one word for one
thing (unplaced, placed but not started, starting), and a replacement told apart."""

from __future__ import annotations

from typing import Any

from fleet.cli.tables import container_status, replica_name
from fleet.proto import fleet_pb2 as pb


def info(
    host: str = "h1", pending: str = "", replacement: bool = False, **status: Any
) -> pb.ContainerInfo:
    found = pb.ContainerInfo(
        app="web", slot=0, host=host, revision=2, desired="running", pending=pending
    )
    found.replacement = replacement
    if status:
        found.status.CopyFrom(pb.ContainerStatus(**status))
    return found


def test_pending_assigned_and_starting_are_three_words() -> None:
    assert container_status(info(host="", pending="0/3 hosts fit: memory")) == (
        "pending",
        "0/3 hosts fit: memory",
    )
    assert container_status(info())[0] == "assigned"
    assert container_status(info(state="created"))[0] == "starting"
    assert container_status(info(state="running", health="starting"))[0] == "starting"
    assert container_status(info(state="running", health="healthy"))[0] == "running"


def test_trouble_words() -> None:
    looping = info(state="exited", exit_code=1, restarts=5)
    assert container_status(looping)[0] == "crash-looping (exit 1, 5 restarts)"
    restarted = info(state="running", exit_code=0, restarts=4)  # Docker cleared the code
    assert container_status(restarted)[0] == "crash-looping (4 restarts)"
    sick = info(state="running", health="unhealthy", message="connect refused :8080")
    assert container_status(sick) == ("unhealthy", "connect refused :8080")
    pull = info(state="pull-failed", reason="image-not-found", message="image x not found")
    assert container_status(pull) == ("image-not-found", "image x not found")
    assert container_status(info(state="exited", exit_code=3))[0] == "exited (3)"


def test_a_replacement_is_told_apart() -> None:
    assert replica_name(info()) == "web.0"
    assert replica_name(info(replacement=True)) == "web.0+"
