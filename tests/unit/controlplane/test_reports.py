"""Tests of fleet.controlplane.reports: a heartbeat becomes the containers that changed
or are gone and the host's status record; live usage alone is written only every
``refresh`` seconds; nothing counts as written until ``written``; malformed heartbeats
are refused with InvalidArgument."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet._names import container_name
from fleet.agent.report import containers_digest
from fleet.controlplane.reports import (
    MAX_REPORT_BYTES,
    Report,
    ReportWriter,
    container_report,
    status_proto,
)
from fleet.errors import InvalidArgument
from fleet.proto import fleet_pb2 as pb
from fleet.store.records import ContainerReport, PortBinding, ResourceAmounts

HOST = "h1"
REFRESH = 10.0
Gi = 1 << 30


def container(
    app: str = "web",
    slot: int = 0,
    revision: int = 1,
    *,
    state: str = "running",
    health: str = "",
    restarts: int = 0,
    cpu: float = 0.25,
    memory: int = 100 << 20,
    **fields: Any,
) -> pb.ContainerStatus:
    return pb.ContainerStatus(
        app=app,
        slot=slot,
        revision=revision,
        spec_hash="abc",
        container_id=f"id-{app}-{slot}-{revision}",
        name=f"fleet-{app}-{slot}",
        state=state,
        health=health,
        restarts=restarts,
        cpu=cpu,
        memory_bytes=memory,
        **fields,
    )


def heartbeat(
    *containers: pb.ContainerStatus,
    cpu: float = 1.5,
    memory: int = 2 * Gi,
    applied_version: int = 7,
    images: tuple[str, ...] = ("img:v2", "img:v1"),
) -> pb.Heartbeat:
    return pb.Heartbeat(
        usage=pb.Resources(cpu=cpu, memory_bytes=memory),
        containers=list(containers),
        applied_version=applied_version,
        images=list(images),
    )


def two() -> list[pb.ContainerStatus]:
    return [container("web", 0, 1), container("api", 2, 3, cpu=1.0, memory=50 << 20)]


def write(writer: ReportWriter, beat: pb.Heartbeat, now: float) -> Report:
    """Report ``beat`` at ``now`` and confirm it was written."""
    report = writer.report(beat, now)
    assert report is not None
    writer.written(report, now)
    return report


def without_stamp(report: Report) -> dict[str, Any]:
    """``report`` as data, but for the wall-clock stamp of its status record."""
    return {
        "status": report.status.model_dump(exclude={"reported_at"}) if report.status else None,
        "changed": report.changed,
        "gone": report.gone,
        "prints": report.prints,
        "host_print": report.host_print,
    }


def test_first_report_writes_every_container_and_the_status() -> None:
    ports = [pb.PortMapping(host_port=8080, container_port=80, protocol="tcp")]
    web = container("web", 0, 1, health="healthy", ready_since="2026-01-02T03:04:05.000Z")
    web.ports.extend(ports)
    web.memory_limit = 512 << 20
    api = container("api", 2, 3, cpu=1.0, memory=50 << 20)
    report = ReportWriter(HOST, REFRESH).report(heartbeat(web, api), now=100.0)
    assert report is not None
    assert report.changed == [container_report(web), container_report(api)]
    assert report.gone == []
    [stored, _] = report.changed
    assert (stored.app, stored.slot, stored.revision, stored.state) == ("web", 0, 1, "running")
    assert stored.ports == [PortBinding(host_port=8080, container_port=80, protocol="tcp")]
    assert (stored.health, stored.ready_since) == ("healthy", "2026-01-02T03:04:05.000Z")
    assert stored.memory_limit == 512 << 20
    # Live usage is not part of a container's record: it goes in the host's.
    assert (stored.cpu, stored.memory) == (0.0, 0)
    status = report.status
    assert status.host_id == HOST
    assert status.applied_version == 7
    assert status.usage == ResourceAmounts(cpu=1.5, memory=2 * Gi)
    assert status.images == ["img:v1", "img:v2"]
    assert status.containers == []  # stored one key each, never in the record
    assert status.container_usage == {"web/0/1": (0.25, 100 << 20), "api/2/3": (1.0, 50 << 20)}


def test_usage_alone_is_written_only_every_refresh() -> None:
    writer = ReportWriter(HOST, REFRESH)
    write(writer, heartbeat(*two()), now=100.0)
    busier = heartbeat(
        container("web", 0, 1, cpu=0.9, memory=300 << 20),
        container("api", 2, 3, cpu=0.1, memory=10 << 20),
        cpu=3.0,
        memory=3 * Gi,
    )
    assert writer.report(heartbeat(*two()), now=100.0) is None
    assert writer.report(busier, now=101.0) is None
    assert writer.report(busier, now=100.0 + REFRESH - 0.001) is None
    report = writer.report(busier, now=100.0 + REFRESH)
    assert report is not None
    assert (report.changed, report.gone) == ([], [])
    assert report.status.usage == ResourceAmounts(cpu=3.0, memory=3 * Gi)
    assert report.status.container_usage == {
        "web/0/1": (0.9, 300 << 20),
        "api/2/3": (0.1, 10 << 20),
    }
    writer.written(report, 100.0 + REFRESH)
    # The next refresh counts from that write.
    assert writer.report(busier, now=100.0 + 1.5 * REFRESH) is None
    assert writer.report(busier, now=100.0 + 2 * REFRESH) is not None


@pytest.mark.parametrize(
    "change",
    [{"state": "exited"}, {"health": "unhealthy"}, {"restarts": 1}],
    ids=["state", "health", "restarts"],
)
def test_a_changed_container_alone_is_in_changed(change: dict[str, Any]) -> None:
    writer = ReportWriter(HOST, REFRESH)
    write(writer, heartbeat(*two()), now=100.0)
    api = container("api", 2, 3, cpu=1.0, memory=50 << 20, **change)
    report = writer.report(heartbeat(container("web", 0, 1), api), now=101.0)  # before refresh
    assert report is not None
    assert report.changed == [container_report(api)]
    assert report.gone == []
    # The host's record waits for its refresh: a container's change is not the host's.
    assert report.status is None


@pytest.mark.parametrize(
    "change", [{"applied_version": 8}, {"images": ("img:v3",)}], ids=["applied", "images"]
)
def test_a_change_of_the_host_alone_writes_the_status(change: dict[str, Any]) -> None:
    writer = ReportWriter(HOST, REFRESH)
    write(writer, heartbeat(*two()), now=100.0)
    report = writer.report(heartbeat(*two(), **change), now=101.0)
    assert report is not None
    assert (report.changed, report.gone) == ([], [])


def test_a_container_no_longer_reported_is_gone() -> None:
    writer = ReportWriter(HOST, REFRESH)
    write(writer, heartbeat(*two()), now=100.0)
    report = writer.report(heartbeat(container("web", 0, 1)), now=101.0)
    assert report is not None
    assert report.changed == []
    assert report.gone == [("api", 2, 3)]
    assert report.status is None
    writer.written(report, 101.0)
    assert writer.report(heartbeat(container("web", 0, 1)), now=102.0) is None
    # At the refresh the host's record holds the usage of what is left.
    refreshed = writer.report(heartbeat(container("web", 0, 1)), now=100.0 + REFRESH)
    assert refreshed is not None and refreshed.status is not None
    assert refreshed.status.container_usage == {"web/0/1": (0.25, 100 << 20)}


def test_container_usage_is_by_usage_key() -> None:
    """Every container's (cpu, memory), negative memory read as 0, the last of a key
    winning."""
    beat = heartbeat(
        container("web", 0, 1, cpu=0.5, memory=-5),
        container("web", 1, 1, cpu=0.1, memory=1),
        container("web", 1, 1, cpu=0.2, memory=2),
        container("web", 1, 2, cpu=0.3, memory=3),
    )
    report = ReportWriter(HOST, REFRESH).report(beat, now=0.0)
    assert report is not None
    assert report.status.container_usage == {
        "web/0/1": (0.5, 0),
        "web/1/1": (0.2, 2),
        "web/1/2": (0.3, 3),
    }
    assert [(c.app, c.slot, c.revision) for c in report.changed] == [
        ("web", 0, 1),
        ("web", 1, 1),
        ("web", 1, 2),
    ]


def test_a_container_of_an_app_not_named_as_fleet_names_them_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = ReportWriter(HOST, REFRESH)
    odd = container("Not_An_App", 0, 1)
    with caplog.at_level(logging.WARNING, logger="fleet.controlplane.reports"):
        report = write(writer, heartbeat(odd, *two()), now=100.0)
    assert [c.app for c in report.changed] == ["web", "api"]
    assert report.status.container_usage.keys() == {"web/0/1", "api/2/3"}
    assert "not storing a container report" in caplog.text
    assert "Not_An_App" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fleet.controlplane.reports"):
        assert writer.report(heartbeat(odd, *two()), now=101.0) is None
    assert caplog.text == ""  # logged once per session


MALFORMED: list[tuple[str, pb.Heartbeat, str]] = [
    ("container cpu NaN", heartbeat(container(cpu=math.nan)), "cpu usage must be a finite"),
    ("container cpu negative", heartbeat(container(cpu=-0.5)), "cpu usage must be a finite"),
    ("container cpu infinite", heartbeat(container(cpu=math.inf)), "cpu usage must be a finite"),
    ("host cpu NaN", heartbeat(container(), cpu=math.nan), "cpu usage must be a finite"),
    ("host cpu negative", heartbeat(container(), cpu=-1.0), "cpu usage must be a finite"),
    ("bad health", heartbeat(container(health="sick")), "health must be one of"),
    (
        "bad ready_since",
        heartbeat(container(ready_since="yesterday")),
        "ready_since must be an RFC 3339 time with an offset .*, got 'yesterday'",
    ),
    (
        "overlong ready_since",
        heartbeat(container(ready_since="2026-01-02T03:04:05" + "0" * 40)),
        "ready_since must be an RFC 3339 time",
    ),
    (
        "too large",
        heartbeat(container(), images=tuple(f"img-{n}:" + "x" * 1024 for n in range(600))),
        f"at most {MAX_REPORT_BYTES} bytes",
    ),
]


@pytest.mark.parametrize(
    ("beat", "message"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_heartbeat_is_refused(beat: pb.Heartbeat, message: str) -> None:
    writer = ReportWriter(HOST, REFRESH)
    # The session's check refuses it at once (the report is worked out later).
    with pytest.raises(InvalidArgument, match=message):
        writer.check(beat)
    with pytest.raises(InvalidArgument, match=message):
        writer.report(beat, now=100.0)
    # Refused, it changed nothing: the next good heartbeat is a first report.
    report = writer.report(heartbeat(*two()), now=100.0)
    assert report is not None and len(report.changed) == 2


def test_too_large_is_measured_on_the_heartbeat() -> None:
    just_under = heartbeat(images=("x" * (MAX_REPORT_BYTES - 64),))
    assert just_under.ByteSize() <= MAX_REPORT_BYTES
    assert ReportWriter(HOST, REFRESH).report(just_under, now=0.0) is not None


def test_negative_host_memory_is_not_stored() -> None:
    writer = ReportWriter(HOST, REFRESH)
    try:
        report = writer.report(heartbeat(*two(), memory=-8 * Gi), now=0.0)
    except InvalidArgument:
        return  # refusing it is as good as reading it as 0
    assert report is not None
    assert report.status.usage.memory >= 0


@pytest.mark.parametrize("stamp", ["2026-01-02", "2026-01-02T03:04:05", "2026-W01-1"])
def test_ready_since_without_an_offset_is_refused(stamp: str) -> None:
    with pytest.raises(InvalidArgument, match="ready_since must be an RFC 3339 time"):
        ReportWriter(HOST, REFRESH).report(heartbeat(container(ready_since=stamp)), now=0.0)


def test_nothing_counts_as_written_until_written() -> None:
    writer = ReportWriter(HOST, REFRESH)
    first = writer.report(heartbeat(*two()), now=100.0)
    again = writer.report(heartbeat(*two()), now=100.5)
    assert first is not None and again is not None
    assert without_stamp(again) == without_stamp(first)
    writer.written(first, 100.0)
    # What is gone or changed is measured against what was written, not reported.
    unwritten = writer.report(heartbeat(container("web", 0, 1)), now=101.0)
    assert unwritten is not None and unwritten.gone == [("api", 2, 3)]
    report = writer.report(heartbeat(container("web", 0, 1)), now=102.0)
    assert report is not None
    assert without_stamp(report) == without_stamp(unwritten)
    assert writer.report(heartbeat(*two()), now=103.0) is None


def test_container_report_is_what_is_stored() -> None:
    c = container("web", 3, 4, state="exited", exit_code=137, message="m" * 5000, memory_limit=-1)
    stored = container_report(c)
    assert isinstance(stored, ContainerReport)
    assert (stored.app, stored.slot, stored.revision, stored.exit_code) == ("web", 3, 4, 137)
    assert stored.message == "m" * 1024  # texts are bounded
    assert stored.memory_limit == 0


_texts = st.text(max_size=40)
_stamps = st.sampled_from(["", "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.123+02:00"])


@settings(max_examples=200, deadline=None)
@given(
    slot=st.integers(0, 2**32 - 1),
    revision=st.integers(0, 2**63 - 1),
    exit_code=st.integers(-(2**31), 2**31 - 1),
    restarts=st.integers(0, 2**32 - 1),
    memory_limit=st.integers(-(2**63), 2**63 - 1),
    texts=st.tuples(_texts, _texts, _texts, _texts),
    health=st.sampled_from(["", "starting", "healthy", "unhealthy"]),
    reason=st.sampled_from(["", "held", "image-not-found"]),
    stamp=_stamps,
    ports=st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 65535)), max_size=3),
)
def test_a_report_made_unvalidated_is_the_validated_one_and_the_one_decoded(
    slot: int,
    revision: int,
    exit_code: int,
    restarts: int,
    memory_limit: int,
    texts: tuple[str, str, str, str],
    health: str,
    reason: str,
    stamp: str,
    ports: list[tuple[int, int]],
) -> None:
    """``container_report`` skips pydantic's validation (protobuf typed the fields):
    what it makes must be what validation would have made, with the same fields
    shared, and what the informer decodes from its JSON."""
    spec_hash, container_id, name, message = texts
    c = pb.ContainerStatus(
        app="web",
        slot=slot,
        revision=revision,
        spec_hash=spec_hash,
        container_id=container_id,
        name=name,
        state="running",
        exit_code=exit_code,
        started_at=stamp,
        ports=[pb.PortMapping(host_port=h, container_port=p, protocol="tcp") for h, p in ports],
        message=message,
        memory_limit=memory_limit,
        health=health,
        ready_since=stamp,
        restarts=restarts,
        reason=reason,
    )
    made = container_report(c)
    validated = ContainerReport.model_validate(made.model_dump())
    decoded = ContainerReport.model_validate_json(made.dump())
    assert made == validated == decoded
    assert made.dump() == validated.dump()
    for field in ContainerReport._shared:
        if field != "ports" or not ports:  # a list with items is each record's own
            assert getattr(made, field) is getattr(decoded, field), field


def test_a_record_made_unvalidated_needs_each_field_and_no_other() -> None:
    fields = {"app": "web", "slot": 1, "revision": 1, "spec_hash": "h"}
    fields |= {"container_id": "c", "name": "n", "state": "running"}
    made = ContainerReport.model_construct(**fields)
    assert made == ContainerReport(**fields)  # the defaults filled in
    assert made.ports is ContainerReport.model_validate_json(made.dump()).ports
    with pytest.raises(TypeError, match="ContainerReport needs state"):
        ContainerReport.model_construct(**{k: v for k, v in fields.items() if k != "state"})
    with pytest.raises(TypeError, match="ContainerReport has no field colour"):
        ContainerReport.model_construct(**fields, colour="red")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("health", "sick", "health must be one of"),
        ("reason", "Not A Word", "reason must be a short lowercase word"),
        ("ready_since", "2026-01-02", "ready_since must be an RFC 3339 time"),
    ],
)
def test_container_report_checks_what_it_was_not_told_was_checked(
    field: str, value: str, message: str
) -> None:
    c = container()
    setattr(c, field, value)
    with pytest.raises(InvalidArgument, match=message):
        container_report(c)
    assert getattr(container_report(c, checked=True), field) == value  # (a writer's check)


def test_a_status_message_is_stored_without_terminal_escapes() -> None:
    """Operators read it in `fleet ps` and `fleet describe`: a host's escape sequences
    (a window title, colours) are dropped; markup-like text is only text."""
    c = container(message="[/boom] \x1b]0;evil\x07\x1b[31mred\x1b[0m\r\nnext")
    assert container_report(c).message == "[/boom] red\nnext"


def test_a_container_with_a_negative_revision_is_skipped() -> None:
    """Report keys are numbered by slot and revision: a negative revision (only a broken
    or hostile agent sends one; slots are unsigned) is left out, and the rest of the
    report is stored."""
    writer = ReportWriter(HOST, REFRESH)
    report = writer.report(heartbeat(container("api", 2, -3), container("ok", 0, 1)), now=0.0)
    assert report is not None
    assert [(c.app, c.slot, c.revision) for c in report.changed] == [("ok", 0, 1)]


def test_a_stored_report_is_shown_as_the_agent_sent_it_with_its_usage() -> None:
    sent = container(
        exit_code=3,
        started_at="2026-01-02T03:04:05Z",
        ports=[pb.PortMapping(host_port=8080, container_port=80, protocol="tcp")],
        message="ok",
        reason="held",
        ready_since="2026-01-02T03:04:06Z",
        memory_limit=1 << 30,
        health="healthy",
        restarts=2,
    )
    stored = container_report(sent)
    assert status_proto(stored, sent.cpu, sent.memory_bytes) == sent
    assert container_report(status_proto(stored, 0.0, 0)) == stored


def test_a_container_named_as_its_agent_names_it_is_stored_without_its_name() -> None:
    # 70 bytes of each report at 100,000 replicas (#24 item 3): the name is put back
    # when the report is shown, and a kept report so stored is not written again.
    sent = container()
    sent.name = container_name("web", 0, "abc")
    stored = container_report(sent)
    assert stored.name == ""
    assert status_proto(stored, sent.cpu, sent.memory_bytes) == sent
    writer = ReportWriter(HOST, REFRESH)
    writer.start_from([stored])
    report = writer.report(heartbeat(sent), 0.0)
    assert report is not None and (report.changed, report.gone) == ([], [])
    # A name another pool's container holds (this pool's id appended) is kept as it is.
    sent.name = container_name("web", 0, "abc") + ".9f8e7d6c"
    assert container_report(sent).name == sent.name
    assert status_proto(container_report(sent), sent.cpu, sent.memory_bytes) == sent


# ------------------------------------------------ starting from the stored reports


def test_a_writer_started_from_the_stored_reports_writes_only_what_changed() -> None:
    """A reconnect that keeps the previous session's reports (seats.py): the new
    session's writer starts from them, so its first report writes the containers that
    changed and those gone, and the status record (always, on a new session)."""
    web, api, old = container("web", 0, 1), container("api", 2, 3), container("old", 0, 1)
    writer = ReportWriter(HOST, REFRESH)
    writer.start_from([container_report(c) for c in (web, api, old)])
    restarted = container("api", 2, 3, restarts=1)
    report = writer.report(heartbeat(web, restarted), 0.0)
    assert report is not None
    assert report.changed == [container_report(restarted)]
    assert report.gone == [("old", 0, 1)]
    assert report.status is not None


def test_a_report_that_does_not_print_as_the_agent_sends_it_is_written_again() -> None:
    """What is stored is not always what was sent (a message's terminal escapes are
    taken out): such a container is written again, never taken as stored."""
    sent = container(message="\x1b[31mboom\x1b[0m")
    writer = ReportWriter(HOST, REFRESH)
    writer.start_from([container_report(sent)])
    report = writer.report(heartbeat(sent), 0.0)
    assert report is not None
    assert report.changed == [container_report(sent)]


# A value other than ``container()``'s for each field a report stores (every field of
# ContainerStatus but the live usage, which goes in the host's record).
OTHER_VALUES: dict[str, Any] = {
    "app": "api",
    "slot": 7,
    "revision": 9,
    "spec_hash": "def",
    "container_id": "id-other",
    "name": "fleet-other",
    "state": "exited",
    "exit_code": 3,
    "started_at": "2026-01-02T03:04:05Z",
    "ports": [pb.PortMapping(host_port=8080, container_port=80, protocol="tcp")],
    "message": "oom",
    "memory_limit": 1 << 30,
    "health": "healthy",
    "ready_since": "2026-01-02T03:04:05Z",
    "restarts": 2,
    "reason": "create-failed",
}


def test_every_field_a_report_stores_is_compared_with_the_kept_one() -> None:
    """A new session's first report compares each container with the report its previous
    session left: a change of any stored field is written (a field the comparison left
    out would keep a stale report for good)."""
    usage = {"cpu", "memory_bytes"}
    assert {f.name for f in pb.ContainerStatus.DESCRIPTOR.fields} - usage == set(OTHER_VALUES)
    kept = container()
    for field, value in OTHER_VALUES.items():
        now = container()
        if field == "ports":
            now.ports.extend(value)
        else:
            setattr(now, field, value)
        writer = ReportWriter(HOST, REFRESH)
        writer.start_from([container_report(kept)])
        report = writer.report(heartbeat(now), 0.0)
        assert report is not None
        assert report.changed == [container_report(now)], field


def test_kept_reports_count_until_the_first_report_is_written() -> None:
    """Until the session's first report is stored, each heartbeat is compared with the
    kept reports (a failed write leaves them stored as they were); then with what this
    session wrote."""
    web, old = container("web", 0, 1), container("old", 0, 1)
    writer = ReportWriter(HOST, REFRESH)
    writer.start_from([container_report(c) for c in (web, old)])
    first = writer.report(heartbeat(web), 0.0)
    assert first is not None and first.changed == [] and first.gone == [("old", 0, 1)]
    # Not written (the transaction failed): the next heartbeat finds the same.
    again = writer.report(heartbeat(web), 1.0)
    assert again is not None and again.changed == [] and again.gone == [("old", 0, 1)]
    writer.written(again, 1.0)
    # Written: nothing left to say until the usage is due.
    assert writer.report(heartbeat(web), 2.0) is None
    restarted = container("web", 0, 1, restarts=1)
    later = writer.report(heartbeat(restarted), 3.0)
    assert later is not None and later.changed == [container_report(restarted)]
    assert later.gone == []


statuses = st.builds(
    pb.ContainerStatus,
    app=st.sampled_from(["web", "api"]),
    slot=st.integers(0, 2**32 - 1),
    revision=st.integers(0, 2**63 - 1),
    spec_hash=st.text("0123456789abcdef", max_size=12),
    container_id=st.text("0123456789abcdef", max_size=64),
    name=st.text(max_size=20).filter(lambda t: "\x00" not in t),
    state=st.sampled_from(["created", "running", "exited", "refused"]),
    exit_code=st.integers(-(2**31), 2**31 - 1),
    started_at=st.sampled_from(["", "2026-01-02T03:04:05.123456789Z"]),
    ports=st.lists(
        st.builds(
            pb.PortMapping,
            host_port=st.integers(0, 65535),
            container_port=st.integers(0, 65535),
            protocol=st.sampled_from(["tcp", "udp"]),
        ),
        max_size=3,
    ),
    message=st.text(st.characters(categories=["L", "N", "P", "Zs"]), max_size=40),
    reason=st.sampled_from(["", "image-not-found", "create-failed"]),
    health=st.sampled_from(["", "starting", "healthy", "unhealthy"]),
    ready_since=st.sampled_from(["", "2026-01-02T03:04:05Z", "2026-01-02T03:04:05+02:00"]),
    memory_limit=st.integers(0, 2**63 - 1),
    restarts=st.integers(0, 2**32 - 1),
    cpu=st.floats(0, 64),
    memory_bytes=st.integers(0, 2**40),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(statuses, max_size=5, unique_by=lambda c: (c.app, c.slot, c.revision)))
def test_property_stored_reports_print_as_the_agent_sent_them(
    sent: list[pb.ContainerStatus],
) -> None:
    """Whatever an agent sends (well formed, without terminal escapes), a writer started
    from what was stored of it finds nothing changed: ``status_proto`` inverts
    ``container_report`` for every field the print covers."""
    writer = ReportWriter(HOST, REFRESH)
    writer.start_from([container_report(c) for c in sent])
    report = writer.report(heartbeat(*sent), 0.0)
    assert report is not None  # the status record, due on a new session
    assert report.changed == []
    assert report.gone == []


def digested(beat: pb.Heartbeat) -> pb.Heartbeat:
    """``beat`` with its containers' digest, as an agent sends it."""
    beat.containers_digest = containers_digest(beat.containers)
    return beat


def test_containers_the_digest_says_are_stored_are_not_compared() -> None:
    """A heartbeat whose digest is that of the containers last stored is taken at its
    word: nothing of its containers is written but their usage, by the keys stored."""
    writer = ReportWriter(HOST, REFRESH)
    first = digested(heartbeat(*two()))
    write(writer, first, now=100.0)
    # The digest says "as stored"; the containers say otherwise (a lying agent): not
    # compared, so not written.
    lie = heartbeat(
        container("web", 0, 1, state="exited", cpu=0.9, memory=300 << 20),
        container("api", 2, 3, cpu=0.1, memory=10 << 20),
        container("new", 5, 1, cpu=2.0),
    )
    lie.containers_digest = first.containers_digest
    assert writer.check(lie) is False  # not one by one
    assert writer.report(lie, now=101.0) is None
    # Due: the host's record, with the usage of the containers stored only.
    report = writer.report(lie, now=100.0 + REFRESH)
    assert report is not None
    assert (report.changed, report.gone) == ([], [])
    assert report.status.container_usage == {
        "web/0/1": (0.9, 300 << 20),
        "api/2/3": (0.1, 10 << 20),
    }
    writer.written(report, now=100.0 + REFRESH)
    # A host that applied a new set: its record at once, as without a digest.
    newer = heartbeat(*two(), applied_version=8)
    newer.containers_digest = first.containers_digest
    report = writer.report(newer, now=100.0 + REFRESH + 1)
    assert report is not None and report.status.applied_version == 8 and report.changed == []
    writer.written(report, now=100.0 + REFRESH + 1)
    # Another digest: compared one by one again.
    exited = container("web", 0, 1, state="exited")
    honest = digested(heartbeat(exited, two()[1]))
    assert writer.check(honest) is True
    report = writer.report(honest, now=100.0 + REFRESH + 2, checked=True)
    assert report is not None and report.changed == [container_report(exited)]


def test_containers_taken_on_the_digests_word_are_checked_before_they_are_stored() -> None:
    """``check`` skips the containers of a heartbeat the digest says are stored; if the
    stored ones change before that heartbeat is worked out, ``report`` checks them."""
    writer = ReportWriter(HOST, REFRESH)
    first = digested(heartbeat(container("web", 0, 1)))
    write(writer, first, now=100.0)
    bad = heartbeat(container("web", 0, 1, health="bogus"))
    bad.containers_digest = first.containers_digest
    assert writer.check(bad) is False
    write(writer, digested(heartbeat(container("web", 0, 1, state="exited"))), now=101.0)
    with pytest.raises(InvalidArgument, match="health must be one of"):
        writer.report(bad, now=102.0, checked=False)


def test_a_new_session_compares_every_container_whatever_the_digest() -> None:
    """The kept reports of the previous session are compared one by one: a session
    knows no digest of what is stored until it has stored something."""
    writer = ReportWriter(HOST, REFRESH)
    sent = two()
    writer.start_from([container_report(sent[0])])
    beat = digested(heartbeat(*sent))
    assert writer.check(beat) is True
    report = writer.report(beat, now=100.0, checked=True)
    assert report is not None and report.changed == [container_report(sent[1])]


variants = st.sampled_from(
    [
        container("web", 0, 1),
        container("web", 0, 1, state="exited"),
        container("web", 0, 1, cpu=0.9),
        container("api", 2, 3, health="healthy"),
        container("api", 2, 3, health="unhealthy", restarts=2),
        container("db", 1, 1, memory=7),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(variants, max_size=4),
            st.sampled_from([7, 8]),
            st.floats(0, 2 * REFRESH),
            st.booleans(),
        ),
        max_size=12,
    )
)
def test_property_a_writer_told_the_digests_writes_what_one_comparing_each_does(
    beats: list[tuple[list[pb.ContainerStatus], int, float, bool]],
) -> None:
    """Heartbeats with honest digests give the same reports as the same heartbeats
    without (each container compared), whatever the changes, their timing, and which
    reports were not stored (``written`` not called)."""
    told, comparing = ReportWriter(HOST, REFRESH), ReportWriter(HOST, REFRESH)
    now = 0.0
    for containers, version, wait, stored in beats:
        now += wait
        plain = heartbeat(*containers, applied_version=version)
        with_digest = digested(heartbeat(*containers, applied_version=version))
        told.check(with_digest)
        expected = comparing.report(plain, now)
        found = told.report(with_digest, now)
        assert (found is None) == (expected is None)
        if found is None or expected is None:
            continue
        assert without_stamp(found) == without_stamp(expected)
        if stored:
            told.written(found, now)
            comparing.written(expected, now)
