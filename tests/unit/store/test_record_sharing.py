"""Records share what they repeat (their set of given fields, app names, host ids, an
app's reservations) without any record seeing another's change."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
from pydantic import ValidationError

from fleet.controlplane.reports import container_report
from fleet.proto import fleet_pb2 as pb
from fleet.store.keys import KeyLayout
from fleet.store.records import (
    ContainerReport,
    ReplicaRecord,
    ReplicaTarget,
    ResourceAmounts,
    StatusRecord,
)


def replica(slot: int, **fields: object) -> ReplicaRecord:
    raw = {
        "app": "web",
        "slot": slot,
        "revision": 1,
        "host": "h1",
        "resources": {"cpu": 0.5, "memory": 64 << 20},
        **fields,
    }
    # Decoded the way the informer decodes them: each from its own JSON.
    return ReplicaRecord.model_validate_json(ReplicaRecord.model_validate(raw).dump())


def test_decoded_records_share_their_fields_set_names_and_reservations() -> None:
    one, two = replica(0), replica(1)
    assert one.resources is two.resources
    assert replica(700).slot is replica(700).slot  # past CPython's own small ints
    assert one.app is two.app and one.host is two.host
    assert one.host is sys.intern("h1")
    assert one.host_ports == [] and one.host_ports is two.host_ports  # empty: one list
    with_ports = replica(2, host_ports=["8080/tcp"])
    assert with_ports.host_ports == ["8080/tcp"] and one.host_ports == []


def test_a_copy_with_an_update_leaves_the_shared_set_alone() -> None:
    def status(host: str) -> StatusRecord:
        return StatusRecord(
            host_id=host, reported_at="t", applied_version=1, usage=ResourceAmounts(cpu=1)
        )

    one, two = status("h1"), status("h2")
    shared = one.__pydantic_fields_set__
    assert two.__pydantic_fields_set__ is shared and "containers" not in shared
    report = ContainerReport(
        app="web", slot=0, revision=1, spec_hash="x", container_id="c", name="n", state="running"
    )
    filled = one.model_copy(update={"containers": [report]})
    assert "containers" in filled.model_fields_set
    assert "containers" not in one.model_fields_set and "containers" not in two.model_fields_set
    assert filled.containers == [report] and one.containers == []
    # Copies given the same fields share one set too (the informer's statuses are copies).
    also_filled = two.model_copy(update={"containers": [report]})
    assert also_filled.__pydantic_fields_set__ is filled.__pydantic_fields_set__


def test_shared_values_keep_each_records_own_value() -> None:
    small, large = replica(0), replica(1, resources={"cpu": 2.0, "memory": 1 << 30})
    assert small.resources == ResourceAmounts(cpu=0.5, memory=64 << 20)
    assert large.resources == ResourceAmounts(cpu=2.0, memory=1 << 30)
    assert replica(0) == small and replica(0) != large


def test_reports_share_their_app_revision_hash_and_state() -> None:
    def report(slot: int, state: str) -> ContainerReport:
        raw = {
            "app": "web",
            "slot": slot,
            "revision": 3,
            "spec_hash": "0123abcd" * 2,
            "container_id": f"{slot:064x}",
            "name": f"web.{slot}.3",
            "state": state,
        }
        return ContainerReport.model_validate_json(ContainerReport.model_validate(raw).dump())

    one, two, exited = report(0, "running"), report(1, "running"), report(2, "exited")
    assert one.spec_hash is two.spec_hash and one.state is two.state
    assert exited.state == "exited" and one.state == "running"
    assert one.container_id != two.container_id


def test_reports_made_from_agents_messages_share_equal_times() -> None:
    """A host's containers start in the same millisecond, and ready_since is started_at
    for a container without a check: a report made from an agent's message (not decoded,
    where pydantic's string cache shares them) held two strings of its own."""

    def status(slot: int, ready_since: str) -> pb.ContainerStatus:
        # Each time built anew, as protobuf hands out a new string at every read.
        started = "".join(["2026-12-07T12:28:02", ".786Z"])
        return pb.ContainerStatus(
            app="web",
            slot=slot,
            revision=1,
            spec_hash="0123abcd" * 2,
            container_id=f"{slot:064x}",
            name=f"web.{slot}.1",
            state="running",
            started_at=started,
            ready_since=ready_since or started,
        )

    one, two = container_report(status(0, "")), container_report(status(1, ""))
    assert one.started_at is two.started_at is one.ready_since is two.ready_since
    later = container_report(status(2, "2026-12-07T12:28:09.001Z"))
    assert later.started_at is one.started_at
    assert later.ready_since == "2026-12-07T12:28:09.001Z" != later.started_at
    decoded = ContainerReport.model_validate_json(one.dump())
    assert decoded == one and decoded.started_at is one.started_at


def test_reports_are_slotted_records_that_act_as_records() -> None:
    raw = {
        "app": "web",
        "slot": 7,
        "revision": 3,
        "spec_hash": "0123abcd" * 2,
        "container_id": "c" * 64,
        "name": "web.7.3",
        "state": "running",
        "ports": [{"host_port": 8080, "container_port": 80, "protocol": "tcp"}],
    }
    reports = [ContainerReport.model_validate_json(json.dumps(raw)) for _ in range(3)]
    report = reports[-1]
    # Read, compared, dumped and copied as any record.
    assert report.slot == 7 and report.ports[0].host_port == 8080
    assert report == reports[0] == ContainerReport.model_validate(raw)
    assert json.loads(report.dump()) == ContainerReport.model_validate(raw).model_dump(mode="json")
    exited = report.model_copy(update={"state": "exited", "exit_code": 1})
    assert (exited.state, exited.exit_code, report.state, report.exit_code) == (
        "exited",
        1,
        "running",
        0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.state = "exited"  # type: ignore[misc]  # frozen, as every record
    assert report.state == "running"
    with pytest.raises(ValidationError, match="surprise"):
        ContainerReport.model_validate_json(json.dumps({**raw, "surprise": 1}))
    with pytest.raises(ValidationError):
        report.model_copy(update={"slot": "seven"})  # a copy is validated
    # No dict of its own: the fields are slots; numbers all reports hold alike, shared.
    assert not hasattr(report, "__dict__")
    assert report.slot is reports[0].slot and report.cpu is reports[0].cpu
    big = [ContainerReport.model_validate({**raw, "slot": 70_000}) for _ in range(2)]
    assert big[0].slot is big[1].slot and big[0].ports == report.ports


def test_replicas_are_slotted_records_that_act_as_records() -> None:
    raw = {"app": "web", "slot": 7, "revision": 3, "host": "h1", "resources": {"cpu": 0.5}}
    replicas = [ReplicaRecord.model_validate_json(json.dumps(raw)) for _ in range(3)]
    replica = replicas[-1]
    assert replica == replicas[0] == ReplicaRecord.model_validate(raw)
    assert (replica.slot, replica.host, replica.resources.cpu) == (7, "h1", 0.5)
    assert json.loads(replica.dump()) == ReplicaRecord.model_validate(raw).model_dump(mode="json")
    moved = replica.model_copy(update={"host": "h2"})
    assert (moved.host, replica.host) == ("h2", "h1")
    starting = replica.model_copy(
        update={"next": ReplicaTarget(revision=4, host="h3", resources=replica.resources)}
    )
    assert starting.next is not None and replica.next is None
    assert [c.host for c in starting.containers()] == ["h1", "h3"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        replica.host = "h3"  # type: ignore[misc]
    assert not hasattr(replica, "__dict__")


def test_parsed_keys_share_app_names_and_host_ids() -> None:
    layout = KeyLayout("/p/")
    report = layout.parse(layout.report("host-1", "web", 12, 3)).parts
    replica = layout.parse(layout.replica("web", 12)).parts
    status = layout.parse(layout.status("host-1")).parts
    assert report == ("host-1", "web", 12, 3)
    assert report[0] is status[0] and report[1] is replica[0]


def test_parsed_keys_share_their_numbers() -> None:
    layout = KeyLayout("/p/")
    one = layout.parse(layout.report("host-1", "web", 4_000, 1_000)).parts
    two = layout.parse(layout.replica("web", 4_000)).parts
    three = layout.parse(layout.report("host-2", "web", 4_000, 1_000)).parts
    assert one[2] == 4_000 and one[2] is two[1] is three[2] and one[3] is three[3]
    assert layout.parse(layout.replica("web", 4_001)).parts[1] == 4_001


def test_shared_numbers_keep_their_type() -> None:
    # 0, 0.0 and False are equal: a report's slot 0 must not hand its cpu an int 0.
    raw = {
        "app": "web",
        "slot": 0,
        "revision": 1,
        "spec_hash": "0123abcd",
        "container_id": "c" * 64,
        "name": "web.0.1",
        "state": "running",
        "cpu": 0.0,
        "memory_limit": 1,
    }
    first = ContainerReport.model_validate(raw)
    second = ContainerReport.model_validate({**raw, "slot": 1, "cpu": 1.0})
    assert type(first.cpu) is float and type(second.cpu) is float
    assert type(second.slot) is int and type(first.memory_limit) is int
    assert json.loads(second.dump())["cpu"] == 1.0 and '"cpu":0.0' in first.dump().decode()
