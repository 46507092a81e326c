"""Records share what they repeat (their set of given fields, app names, host ids, an
app's reservations) without any record seeing another's change."""

from __future__ import annotations

import json
import platform
import sys

import pytest
from pydantic import ValidationError

from fleet.store.keys import KeyLayout
from fleet.store.records import ContainerReport, ReplicaRecord, ReplicaTarget, ResourceAmounts


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
    assert one.__pydantic_fields_set__ is two.__pydantic_fields_set__
    assert one.resources is two.resources
    assert one.app is two.app and one.host is two.host
    assert one.host is sys.intern("h1")
    assert one.host_ports == [] and one.host_ports is two.host_ports  # empty: one list
    with_ports = replica(2, host_ports=["8080/tcp"])
    assert with_ports.host_ports == ["8080/tcp"] and one.host_ports == []


def test_a_copy_with_an_update_leaves_the_shared_set_alone() -> None:
    one = ReplicaRecord(
        app="web", slot=0, revision=1, host="h1", resources=ResourceAmounts(cpu=1, memory=1)
    )
    two = ReplicaRecord(
        app="web", slot=1, revision=1, host="h2", resources=ResourceAmounts(cpu=1, memory=1)
    )
    shared = one.__pydantic_fields_set__
    assert two.__pydantic_fields_set__ is shared and "next" not in shared
    moved = one.model_copy(
        update={"next": ReplicaTarget(revision=2, host="h3", resources=one.resources)}
    )
    assert "next" in moved.model_fields_set
    assert "next" not in one.model_fields_set and "next" not in two.model_fields_set
    assert moved.next is not None and moved.next.host == "h3"
    # Copies given the same fields share one set too (the informer's statuses are copies).
    also_moved = two.model_copy(update={"next": moved.next})
    assert also_moved.__pydantic_fields_set__ is moved.__pydantic_fields_set__


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


def test_reports_keep_their_fields_in_a_key_sharing_dict() -> None:
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
    with pytest.raises(ValidationError):
        report.state = "exited"  # frozen, as every record
    assert report.state == "running"
    if platform.python_implementation() == "CPython":
        # Less than a dict of its own holding the same: the keys are shared.
        assert sys.getsizeof(report.__dict__) < sys.getsizeof(dict(report.__dict__)) * 0.7


def test_replicas_keep_their_fields_in_a_key_sharing_dict() -> None:
    raw = {"app": "web", "slot": 7, "revision": 3, "host": "h1", "resources": {"cpu": 0.5}}
    replicas = [ReplicaRecord.model_validate_json(json.dumps(raw)) for _ in range(3)]
    replica = replicas[-1]
    assert replica == replicas[0] == ReplicaRecord.model_validate(raw)
    assert (replica.slot, replica.host, replica.resources.cpu) == (7, "h1", 0.5)
    assert json.loads(replica.dump()) == ReplicaRecord.model_validate(raw).model_dump(mode="json")
    moved = replica.model_copy(update={"host": "h2"})
    assert (moved.host, replica.host) == ("h2", "h1")
    with pytest.raises(ValidationError):
        replica.host = "h3"
    if platform.python_implementation() == "CPython":
        assert sys.getsizeof(replica.__dict__) < sys.getsizeof(dict(replica.__dict__)) * 0.7


def test_parsed_keys_share_app_names_and_host_ids() -> None:
    layout = KeyLayout("/p/")
    report = layout.parse(layout.report("host-1", "web", 12, 3)).parts
    replica = layout.parse(layout.replica("web", 12)).parts
    status = layout.parse(layout.status("host-1")).parts
    assert report == ("host-1", "web", 12, 3)
    assert report[0] is status[0] and report[1] is replica[0]
