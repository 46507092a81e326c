"""The soak checker's rules, on hand-made snapshots: each rule must fire when its
invariant is broken for longer than its bound, and stay quiet otherwise."""

from __future__ import annotations

from dataclasses import replace

from fleet.testing.soak import checker
from fleet.testing.soak.model import (
    AppView,
    Container,
    EtcdView,
    FaultWindow,
    OpRecord,
    Placement,
    Snapshot,
)

POOL = "pool-a"
BOUNDS = checker.Bounds(handover=30, fence=40, settle=20, orphan=60, events_quiet=30)


def etcd(
    replicas: tuple[Placement, ...] = (),
    apps: dict[str, AppView] | None = None,
    **more: object,
) -> EtcdView:
    fields: dict[str, object] = {
        "pool_id": POOL,
        "apps": apps if apps is not None else {"web": web()},
        "replicas": replicas,
        "revisions": frozenset({("web", 1)}),
        "rollouts": frozenset({"web"}),
        "jobs": frozenset(),
        "hosts": {"h1": "ready", "h2": "ready"},
        "alive": frozenset({"h1", "h2"}),
        "status": frozenset({"h1", "h2"}),
        "reports": frozenset(),
    }
    fields.update(more)
    return EtcdView(**fields)  # type: ignore[arg-type]


def web(replicas: int = 2, min_available: int | None = None, revision: int = 1) -> AppView:
    return AppView("web", 3, revision, replicas, "replicated", "img:v1", min_available)


def box(host: str, slot: int, revision: int = 1, cid: str = "", **more: object) -> Container:
    fields: dict[str, object] = {
        "host": host,
        "id": cid or f"{host}-{slot}-{revision}",
        "name": f"web.{slot}.{revision}",
        "app": "web",
        "slot": slot,
        "revision": revision,
        "pool": POOL,
        "running": True,
        "image": "img:v1",
    }
    fields.update(more)
    return Container(**fields)  # type: ignore[arg-type]


def snap(at: float, containers: list[Container], view: EtcdView | None) -> Snapshot:
    return Snapshot(at, tuple(containers), frozenset(), view)


PLACED = (Placement("web", 0, 1, "h1"), Placement("web", 1, 1, "h2"))


def test_placed_containers_are_no_strays() -> None:
    placed, strays = checker.split_running(snap(0, [box("h1", 0), box("h2", 1)], etcd(PLACED)))
    assert len(placed) == 2 and strays == []


def test_an_old_container_beside_its_replacement_is_double_serving_past_the_handover() -> None:
    state = checker.StrayState()
    view = etcd((Placement("web", 0, 2, "h2"), Placement("web", 1, 1, "h2")))
    both = [box("h1", 0, 1), box("h2", 0, 2), box("h2", 1)]
    assert checker.check_strays(state, snap(100, both, view), [], BOUNDS) == []
    assert checker.check_strays(state, snap(129, both, view), [], BOUNDS) == []
    [finding] = checker.check_strays(state, snap(131, both, view), [], BOUNDS)
    assert finding.invariant == "double-serving" and "h1" in finding.detail
    assert checker.check_strays(state, snap(140, both, view), [], BOUNDS) == []  # once


def test_a_container_and_its_next_both_run_during_a_handover() -> None:
    view = etcd((Placement("web", 0, 1, "h1", next_revision=2, next_host="h2"),))
    state = checker.StrayState()
    both = [box("h1", 0, 1), box("h2", 0, 2)]
    for at in (0, 100, 1000):
        assert checker.check_strays(state, snap(at, both, view), [], BOUNDS) == []


def test_a_stray_that_stops_in_time_is_forgotten() -> None:
    state = checker.StrayState()
    view = etcd(PLACED)
    stray = box("h2", 0, cid="stray")
    checker.check_strays(state, snap(0, [box("h1", 0), stray], view), [], BOUNDS)
    checker.check_strays(state, snap(20, [box("h1", 0)], view), [], BOUNDS)
    assert state.first_seen == {}


def test_a_container_of_a_deleted_app_is_a_placement_violation() -> None:
    state = checker.StrayState()
    view = etcd((), apps={})
    checker.check_strays(state, snap(0, [box("h1", 0)], view), [], BOUNDS)
    [finding] = checker.check_strays(state, snap(31, [box("h1", 0)], view), [], BOUNDS)
    assert finding.invariant == "placement"


def test_a_partitioned_hosts_stray_is_fenced_within_the_bound_after_it_heals() -> None:
    state = checker.StrayState()
    view = etcd((Placement("web", 0, 1, "h2"),))
    both = [box("h1", 0, cid="old"), box("h2", 0)]
    cut = FaultWindow("net-cut", "h1", frozenset({"h1"}), 0)
    assert checker.check_strays(state, snap(10, both, view), [cut], BOUNDS) == []
    assert checker.check_strays(state, snap(500, both, view), [cut], BOUNDS) == []  # still cut
    healed = replace(cut, end=600)
    assert checker.check_strays(state, snap(639, both, view), [healed], BOUNDS) == []
    [finding] = checker.check_strays(state, snap(641, both, view), [healed], BOUNDS)
    assert finding.invariant == "fencing"


def test_two_containers_of_one_slot_revision_and_host_make_one_a_stray() -> None:
    twins = [box("h1", 0, cid="a", started_at="1"), box("h1", 0, cid="b", started_at="2")]
    placed, strays = checker.split_running(snap(0, twins, etcd(PLACED)))
    assert [c.id for c in placed] == ["a"] and [c.id for c in strays] == ["b"]


def test_another_pools_running_container_is_reported_a_stopped_one_is_not() -> None:
    theirs = box("h1", 0, cid="x", pool="pool-b")
    assert checker.check_foreign(snap(0, [replace(theirs, running=False)], etcd(PLACED))) == []
    [finding] = checker.check_foreign(snap(0, [theirs], etcd(PLACED)))
    assert finding.invariant == "foreign-container"


def test_min_available_counts_answering_slots_once_armed() -> None:
    view = etcd(
        (*PLACED, Placement("web", 2, 1, "h1")), apps={"web": web(replicas=3, min_available=2)}
    )
    state = checker.AvailabilityState()
    up = [box(h, s, serving=True) for h, s in (("h1", 0), ("h2", 1), ("h1", 2))]
    checks, found = checker.check_availability(state, snap(0, up[:1], view), [], BOUNDS)
    assert (checks, found) == (0, [])  # not armed yet: the app never had 2 answering
    checks, found = checker.check_availability(state, snap(1, up, view), [], BOUNDS)
    assert (checks, found) == (0, [])  # arms
    down = [up[0], replace(up[1], serving=False), replace(up[2], serving=False)]
    checks, [finding] = checker.check_availability(state, snap(2, down, view), [], BOUNDS)
    assert checks == 1 and finding.invariant == "min-available"


def test_slots_on_a_faulted_host_count_as_available_until_it_settles() -> None:
    view = etcd(PLACED, apps={"web": web(replicas=2, min_available=2)})
    state = checker.AvailabilityState(armed={"web"})
    cut = FaultWindow("power-off", "h2", frozenset({"h2"}), 10, 20)
    only_h1 = [box("h1", 0, serving=True)]
    assert checker.check_availability(state, snap(15, only_h1, view), [cut], BOUNDS) == (1, [])
    # Past end + settle (20 + 20) and its exemption (the last touch + 20): counted again.
    assert checker.check_availability(state, snap(39, only_h1, view), [cut], BOUNDS) == (1, [])
    checks, found = checker.check_availability(state, snap(61, only_h1, view), [cut], BOUNDS)
    assert checks == 1 and len(found) == 1


def test_min_available_as_a_percentage() -> None:
    assert checker.required_available(replace(web(replicas=5), min_available="50%")) == 3


def test_orphans_name_records_of_unknown_apps_and_hosts() -> None:
    view = etcd(
        (Placement("gone", 0, 1, "h1"), Placement("web", 5, 1, "h1")),
        revisions=frozenset({("gone", 2)}),
        alive=frozenset({"h1", "h9"}),
        reports=frozenset({("h9", "web", 0, 1), ("h1", "gone", 0, 1)}),
    )
    found = checker.orphans(view)
    assert "replicas/gone/0" in found and "revisions/gone/2" in found
    assert "alive/h9" in found and "reports/h9/web/0/1" in found
    assert "reports/h1/gone/0/1" in found
    assert any(f.startswith("replicas/web/5") for f in found)
    # A report of a deleted app on a host a fault touches waits for that host.
    assert "reports/h1/gone/0/1" not in checker.orphans(view, {"h1"})


def test_an_orphan_is_a_violation_only_past_its_bound() -> None:
    state = checker.OrphanState()
    view = etcd((Placement("gone", 0, 1, "h1"),))
    assert checker.check_orphans(state, snap(0, [], view), [], BOUNDS) == []
    assert checker.check_orphans(state, snap(59, [], view), [], BOUNDS) == []
    [finding] = checker.check_orphans(state, snap(61, [], view), [], BOUNDS)
    assert finding.invariant == "orphan"


def op(outcome: str, before: int | None, after: int | None, **more: object) -> OpRecord:
    fields: dict[str, object] = {
        "thread": "t",
        "op": "scale",
        "target": "web",
        "args": "5",
        "start": 1.0,
        "end": 2.0,
        "outcome": outcome,
        "gen_before": before,
        "gen_after": after,
    }
    fields.update(more)
    return OpRecord(**fields)  # type: ignore[arg-type]


def test_a_refused_call_that_changed_the_generation_is_a_violation() -> None:
    checks, found = checker.check_failed_ops(
        [op("refused", 3, 3), op("refused", 3, 4), op("ambiguous", 3, 4), op("ok", 3, 4)]
    )
    assert checks == 2 and len(found) == 1 and "3 -> 4" in found[0].detail


def test_the_last_successful_call_is_what_etcd_must_hold() -> None:
    ops = [
        op("ok", 1, 2, start=1.0, wants=(("replicas", "4"),)),
        op("ok", 2, 3, start=2.0, wants=(("replicas", "6"),)),
        op("refused", 3, 3, start=3.0, wants=(("replicas", "5"),)),
    ]
    expected = checker.expected_state(ops)
    view = etcd(apps={"web": web(replicas=6)})
    assert checker.check_expectations(expected, view, 0) == (1, [])
    view = etcd(apps={"web": web(replicas=5)})
    _checks, [finding] = checker.check_expectations(expected, view, 0)
    assert finding.invariant == "applied-reflected"


def test_an_ambiguous_call_may_or_may_not_have_applied() -> None:
    ops = [
        op("ok", 1, 2, start=1.0, wants=(("replicas", "4"),)),
        op("ambiguous", 2, None, start=2.0, wants=(("replicas", "6"),)),
    ]
    expected = checker.expected_state(ops)
    for n in (4, 6):
        assert checker.check_expectations(expected, etcd(apps={"web": web(n)}), 0)[1] == []
    assert checker.check_expectations(expected, etcd(apps={"web": web(5)}), 0)[1] != []


def test_a_start_without_its_event_is_lost_unless_a_fault_came_near() -> None:
    starts = {"c1": ("h1", "web", 0, 100.0), "c2": ("h2", "web", 1, 100.0)}
    stored = [("h1", "c1", "web", 0, 100.0, 0)]
    checks, [finding] = checker.check_events(starts, stored, [], BOUNDS, 200)
    assert checks == 2 and "c2" in finding.detail
    near = FaultWindow("cp-kill", "cp1", frozenset(), 110, 115)
    assert checker.check_events(starts, stored, [near], BOUNDS, 200) == (0, [])
    # Coalesced by the control plane's gate: a later start of that slot with a count.
    coalesced = [*stored, ("h2", "other", "web", 1, 130.0, 3)]
    assert checker.check_events(starts, coalesced, [], BOUNDS, 200) == (2, [])


def test_a_start_is_judged_only_once_its_coalesced_count_is_due() -> None:
    starts = {"c2": ("h2", "web", 1, 100.0)}
    # Within the gate's repeat window of the check: its count may not be stored yet.
    assert checker.check_events(starts, [], [], BOUNDS, 150) == (0, [])
    assert checker.check_events(starts, [], [], BOUNDS, 170)[0] == 1
    # A control plane killed (-9) within the window after it: the count went with it.
    killed = FaultWindow("cp-kill", "cp1", frozenset(), 150, 160)
    assert checker.check_events(starts, [], [killed], BOUNDS, 300) == (0, [])
    # Stopped with SIGTERM (which stores the counts) 50 s later: judged.
    termed = FaultWindow("cp-term", "cp1", frozenset(), 150, 160)
    assert checker.check_events(starts, [], [termed], BOUNDS, 300)[0] == 1


def test_differences_are_empty_only_when_everything_matches() -> None:
    view = etcd(PLACED)
    assert checker.differences(snap(0, [box("h1", 0), box("h2", 1)], view)) == []
    assert checker.differences(snap(0, [box("h1", 0)], view)) != []
    moving = etcd((replace(PLACED[0], next_host="h2", next_revision=2), PLACED[1]))
    assert checker.differences(snap(0, [box("h1", 0), box("h2", 1)], moving)) != []
    wrong_image = [box("h1", 0), box("h2", 1, image="img:v2")]
    assert checker.differences(snap(0, wrong_image, view)) != []
    assert checker.differences(snap(0, [], None)) == ["no etcd member answered"]


def test_a_container_of_another_revision_with_the_placed_template_is_placed() -> None:
    """Revisions 46 and 48 share a template (an image set back): the container made for
    46 serves 48 where etcd places 48 (fleet keeps it, reported as 48). One of another
    template at a wrong revision is a stray; and two of one template, one too many."""
    templates = {("web", 46): "t-a", ("web", 48): "t-a", ("web", 47): "t-b"}
    view = etcd((Placement("web", 0, 48, "h1"),), templates=templates)
    kept = box("h1", 0, 46, template="t-a", started_at="1")
    placed, strays = checker.split_running(snap(0, [kept], view))
    assert placed == [kept] and strays == []
    other = box("h1", 0, 47, template="t-b")
    assert checker.split_running(snap(0, [other], view)) == ([], [other])
    twin = box("h1", 0, 48, template="t-a", cid="twin", started_at="2")
    assert checker.split_running(snap(0, [kept, twin], view)) == ([kept], [twin])


def test_a_container_kept_while_its_replacement_cannot_be_pulled_is_no_stray() -> None:
    """etcd places web/0 on h1 at revision 5, whose image the registry does not hold:
    the agent keeps the container of revision 6 that runs there (fleet's rule). The
    same container is a stray once the placed revision's image can be pulled, or when
    the slot is placed on another host."""
    images = {("web", 5): "reg/web:missing", ("web", 6): "reg/web:v1"}
    templates = {("web", 5): "t5", ("web", 6): "t6"}
    kept = box("h1", 0, 6, template="t6")
    here = etcd((Placement("web", 0, 5, "h1"),), templates=templates, images=images)
    broken = frozenset({"reg/web:missing"})
    shot = Snapshot(0, (kept,), frozenset(), here, unpullable=broken)
    assert checker.split_running(shot) == ([kept], [])
    pullable = Snapshot(0, (kept,), frozenset(), here)
    assert checker.split_running(pullable) == ([], [kept])
    elsewhere = etcd((Placement("web", 0, 5, "h2"),), templates=templates, images=images)
    moved = Snapshot(0, (kept,), frozenset(), elsewhere, unpullable=broken)
    assert checker.split_running(moved) == ([], [kept])
