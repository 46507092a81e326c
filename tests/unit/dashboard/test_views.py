"""What the dashboard's pages show, shaped from the API's protos (pure)."""

from __future__ import annotations

import json

from fleet.dashboard.views import (
    app_detail,
    app_rows,
    event_rows,
    host_rows,
    sparkline_points,
    topic_marks,
)
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState
from fleet.store.state import Changes

GI = 2**30


def _host(host_id: str, **extra: object) -> pb.HostInfo:
    return pb.HostInfo(
        host_id=host_id,
        state="ready",
        connected=True,
        capacity=pb.Resources(cpu=4, memory_bytes=8 * GI),
        reserved=pb.Resources(cpu=1, memory_bytes=2 * GI),
        usage=pb.Resources(cpu=0.5, memory_bytes=GI),
        labels={"zone": "a"},
        agent_labels={"disk": "ssd"},
        facts={"os_name": "Debian GNU/Linux", "os_version": "12"},
        containers=3,
        **extra,  # type: ignore[arg-type]
    )


def test_host_rows_show_capacity_bars_labels_os_and_drain_state() -> None:
    draining = _host(
        "h2",
        remaining=2,
        blocked=[pb.Pending(app="web", slot=1, reason="min_available 2 would break")],
        maintenance="fleet drain",
    )
    draining.state = "draining"
    walk = pb.UpgradeInfo(id="w1", hosts=[pb.HostUpgradeInfo(host_id="h2", phase="draining")])
    [ready, drained] = host_rows([_host("h1"), draining], walk)
    assert ready.os == "Debian GNU/Linux 12"
    assert ready.labels == {"zone": "a", "disk": "ssd"}
    assert (ready.cpu_reserved.used, ready.cpu_reserved.total, ready.cpu_reserved.percent) == (
        1,
        4,
        25,
    )
    assert ready.cpu_live.percent == 12 or ready.cpu_live.percent == 13
    assert ready.memory_reserved.text == "2.0Gi / 8.0Gi"
    assert ready.memory_live.percent == 12 or ready.memory_live.percent == 13
    assert ready.containers == 3 and ready.drain == "" and ready.upgrade == ""
    assert drained.drain == "2 replica(s) left; web[1] waits: min_available 2 would break"
    assert drained.maintenance == "fleet drain" and drained.upgrade == "draining"


def test_a_host_without_capacity_has_empty_bars() -> None:
    [row] = host_rows([pb.HostInfo(host_id="h9", state="down")])
    assert row.cpu_reserved.percent == 0 and row.memory_live.percent == 0


def _app(**extra: object) -> pb.AppInfo:
    spec = {"name": "web", "image": "web:v2", "replicas": 4, "ports": ["8080"]}
    fields = {
        "name": "web",
        "spec_json": json.dumps(spec),
        "revision": 2,
        "desired": 4,
        "running": 4,
        "available": 3,
        "updated": 2,
        "rollout": "progressing",
        "mode": "replicated",
    }
    fields.update(extra)
    return pb.AppInfo(**fields)  # type: ignore[arg-type]


def test_app_rows_show_counts_image_progress_and_pending_reasons() -> None:
    pending = [pb.Pending(app="web", slot=3, reason="0/2 hosts fit: 2 insufficient memory")]
    [row] = app_rows([_app(pending=pending, reason="crash-loop", message="exit 1")])
    assert (row.desired, row.running, row.available, row.updated) == (4, 4, 3, 2)
    assert row.image == "web:v2" and row.revision == 2
    assert row.progress == 50  # 2 updated and available of 4
    assert row.pending == [(3, "0/2 hosts fit: 2 insufficient memory")]
    assert row.trouble == "crash-loop: exit 1"
    [empty] = app_rows([_app(desired=0, updated=0, available=0)])
    assert empty.progress == 100  # nothing to roll out


def test_app_detail_groups_replicas_by_host_and_keeps_the_newest_revision_first() -> None:
    containers = [
        pb.ContainerInfo(
            app="web",
            slot=0,
            host="h1",
            revision=2,
            desired="running",
            status=pb.ContainerStatus(state="running", health="healthy"),
        ),
        pb.ContainerInfo(app="web", slot=1, host="h2", revision=1, desired="running"),
        pb.ContainerInfo(app="web", slot=2, pending="0/2 hosts fit"),
    ]
    history = pb.RevisionList(
        app="web",
        revisions=[
            pb.RevisionInfo(revision=1, image="web:v1", outcome="complete"),
            pb.RevisionInfo(revision=2, image="web:v2", current=True),
        ],
    )
    endpoints = pb.EndpointList(
        endpoints=[
            pb.Endpoint(
                app="web",
                slot=0,
                host="h1",
                address="10.0.0.1",
                host_port=30001,
                container_port=8080,
            )
        ]
    )
    events = [pb.Event(time="2026-12-04T18:00:00Z", app="web", host="h1", kind="start")]
    detail = app_detail(
        _app(),
        pb.RolloutInfo(app="web", paused=True, message="waiting"),
        containers,
        history,
        endpoints,
        events,
        [(0.1, 10 * 2**20), (0.3, 20 * 2**20)],
    )
    assert list(detail.by_host) == ["", "h1", "h2"]
    assert detail.by_host["h1"][0]["state"] == "running (healthy)"
    assert detail.by_host["h2"][0]["state"] == "not reported"
    assert detail.by_host[""][0] == {
        "slot": "2",
        "revision": "0",
        "state": "pending",
        "why": "0/2 hosts fit",
        "role": "",
    }
    assert [r.revision for r in detail.revisions] == [2, 1]
    assert detail.endpoints == ["10.0.0.1:30001 -> 8080/tcp (slot 0 on h1)"]
    assert detail.paused and detail.rollout_message == "waiting"
    assert detail.usage == "0.30 cpu, 20Mi"
    assert detail.cpu and detail.memory
    assert detail.events[0]["kind"] == "start"


def test_event_rows_filter_by_app_and_host_newest_first() -> None:
    events = [
        pb.Event(time=f"t{i}", app=app, host=host, kind="start", count=count)
        for i, (app, host, count) in enumerate(
            [("web", "h1", 1), ("db", "h1", 1), ("web", "h2", 3), ("web", "h1", 1)]
        )
    ]
    assert [e["time"] for e in event_rows(events)] == ["t3", "t2", "t1", "t0"]
    assert [e["time"] for e in event_rows(events, app="web")] == ["t3", "t2", "t0"]
    assert [e["time"] for e in event_rows(events, app="web", host="h1")] == ["t3", "t0"]
    assert [e["time"] for e in event_rows(events, host="h2")] == ["t2"]
    assert event_rows(events, host="h2")[0]["message"] == " (x3)"
    assert [e["time"] for e in event_rows(events, limit=2)] == ["t3", "t2"]


def test_sparkline_points_scale_into_the_box() -> None:
    assert sparkline_points([]) == "" and sparkline_points([1.0]) == ""
    assert sparkline_points([0.0, 2.0, 1.0], width=100, height=10) == "0.0,10.0 50.0,0.0 100.0,5.0"
    assert sparkline_points([0.0, 0.0], width=10, height=10) == "0.0,10.0 10.0,10.0"


def _changes(**extra: object) -> Changes:
    fields: dict[str, object] = {
        "apps": {"web": 5},
        "reports": {"web": 6},
        "host_inputs": {},
        "host_inputs_seq": 0,
        "shared": 1,
        "hosts": 2,
        "placed": 3,
        "status": 4,
    }
    fields.update(extra)
    return Changes(**fields)  # type: ignore[arg-type]


def test_topic_marks_change_only_with_their_part_of_the_state() -> None:
    before = topic_marks(ClusterState(revision=10, changes=_changes()))
    same = topic_marks(ClusterState(revision=11, changes=_changes()))
    assert before == same  # a new revision that touched none of these parts
    hosts = topic_marks(ClusterState(revision=12, changes=_changes(hosts=9)))
    assert hosts["pool"] != before["pool"] and hosts["apps"] == before["apps"]
    assert hosts["upgrade"] != before["upgrade"]
    apps = topic_marks(ClusterState(revision=13, changes=_changes(apps={"web": 5, "db": 12})))
    assert apps["apps"] != before["apps"] and apps["pool"] == before["pool"]
    # A heartbeat (live usage) is its own topic, which the hub sends at a slower pace.
    heartbeat = topic_marks(ClusterState(revision=14, changes=_changes(status=8)))
    assert [t for t in before if heartbeat[t] != before[t]] == ["usage"]
    reports = topic_marks(ClusterState(revision=15, changes=_changes(reports={"web": 9})))
    assert [t for t in before if reports[t] != before[t]] == ["apps"]
    # Without change numbers, every revision is a change.
    assert (
        topic_marks(ClusterState(revision=15))["pool"]
        != topic_marks(ClusterState(revision=16))["pool"]
    )
