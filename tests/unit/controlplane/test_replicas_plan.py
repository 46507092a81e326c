"""Tests of the replica controller's pure part, ``plan_replicas``, of the scheduler's view
of the cluster, and of the desired container set each agent receives."""

from __future__ import annotations

import pytest

from fleet.controlplane.desired import (
    Placed,
    SpecCache,
    desired_containers,
    desired_placed,
    placed_fingerprint,
)
from fleet.controlplane.planner import plan_replicas
from fleet.controlplane.slots import ReplicaPlan
from fleet.controlplane.view import requests, scheduler_snapshot
from fleet.scheduler import HostView, ReplicaRequest
from fleet.spec import Constraint, load_documents
from fleet.store import ClusterState, Versioned
from fleet.store.records import (
    AppRecord,
    ReplicaRecord,
    ReplicaTarget,
    ResourceAmounts,
    RevisionRecord,
)
from tests.unit.controlplane.builders import (
    NOW,
    Gi,
    Mi,
    add_app,
    add_host,
    add_replica,
    add_revision,
    cluster,
    spec,
)


def new_records(plan: ReplicaPlan) -> list[ReplicaRecord]:
    """The replicas the plan creates (mod revision 0), by slot."""
    return sorted((r for r, mod in plan.put if mod == 0), key=lambda r: r.slot)


# ------------------------------------------------------------------ plan_replicas


def test_new_app_places_slots_0_to_n_minus_1_on_connected_ready_hosts() -> None:
    """A new app gets one record per slot, each on a connected ready host, spread out."""
    state = cluster(("h1", 4, 8 * Gi), ("h2", 4, 8 * Gi), ("h3", 4, 8 * Gi))
    add_host(state, "h4", connected=False)
    add_host(state, "h5", host_state="cordoned")
    app = spec("replicas: 3\nports: ['80:8080', '9000']\nresources: {cpu: 0.5, memory: 64Mi}\n")
    add_app(state, app)
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == []
    assert plan.pending == {}
    assert all(mod == 0 for _, mod in plan.put)
    records = new_records(plan)
    assert [r.slot for r in records] == [0, 1, 2]
    assert sorted(r.host for r in records) == ["h1", "h2", "h3"]
    for record in records:
        assert record.app == "web"
        assert record.revision == 1
        assert record.resources == ResourceAmounts(cpu=0.5, memory=64 * Mi)
        assert record.host_ports == ["80/tcp"]  # only fixed host ports are reserved


def test_app_at_its_count_needs_nothing() -> None:
    """Replicas at the current revision, one per slot: the plan is empty."""
    state = cluster(("h1", 4, 8 * Gi))
    add_app(state, spec("replicas: 2\n"))
    add_replica(state, "web", 0, "h1")
    add_replica(state, "web", 1, "h1")
    plan = plan_replicas(state, "web", NOW)
    assert (plan.put, plan.delete, plan.pending) == ([], [], {})
    # The first look at an app starts its rollout record; nothing is available yet.
    assert plan.rollout is not None
    assert (plan.rollout[0].revision, plan.rollout[0].state) == (1, "progressing")
    assert plan.pending == {}


def test_scale_up_fills_the_missing_slots() -> None:
    """Existing slots stay where they are; only the missing ones are placed."""
    state = cluster(("h1", 4, 8 * Gi), ("h2", 4, 8 * Gi))
    add_app(state, spec("replicas: 4\n"))
    add_replica(state, "web", 0, "h1")
    add_replica(state, "web", 2, "h2")
    plan = plan_replicas(state, "web", NOW)
    assert [(r.slot, r.host) for r in new_records(plan)] == [(1, "h1"), (3, "h2")]
    assert len(plan.put) == 2
    assert plan.delete == []


def test_scale_down_deletes_the_highest_slots_with_their_mod_revisions() -> None:
    """Slots at or beyond the count are deleted, each guarded on its own mod revision."""
    state = cluster(("h1", 4, 8 * Gi))
    add_app(state, spec("replicas: 2\n"))
    for slot in range(5):
        add_replica(state, "web", slot, "h1", mod=100 + slot)
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == [(2, 102), (3, 103), (4, 104)]
    assert plan.put == []


def test_scale_to_zero_deletes_every_replica() -> None:
    """``replicas: 0`` keeps the app but deletes all its replicas."""
    state = cluster(("h1", 4, 8 * Gi))
    add_app(state, spec("replicas: 0\n"))
    add_replica(state, "web", 0, "h1", mod=7)
    add_replica(state, "web", 1, "h1", mod=8)
    assert plan_replicas(state, "web", NOW).delete == [(0, 7), (1, 8)]


def test_revision_change_updates_kept_replicas_in_place() -> None:
    """A new revision rewrites each kept replica (same slot and host) at that revision, with
    its reservations and fixed ports, guarded on the record's mod revision."""
    state = cluster(("h1", 4, 8 * Gi), ("h2", 4, 8 * Gi))
    v1 = spec("replicas: 2\nresources: {cpu: 0.5}\nports: ['80:80']\n")
    v2 = spec("replicas: 2\nresources: {cpu: 1, memory: 64Mi}\nports: ['81:80', '9090']\n")
    add_revision(state, v1, 1)
    add_app(state, v2, revision=2)
    add_replica(state, "web", 0, "h2", cpu=0.5, ports=["80/tcp"], mod=70)
    add_replica(state, "web", 1, "h1", cpu=0.5, ports=["80/tcp"], mod=71)
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == []
    assert plan.pending == {}
    assert [(r.slot, r.host, r.revision, mod) for r, mod in plan.put] == [
        (0, "h2", 2, 70),
        (1, "h1", 2, 71),
    ]
    for record, _ in plan.put:
        assert record.resources == ResourceAmounts(cpu=1.0, memory=64 * Mi)
        assert record.host_ports == ["81/tcp"]


@pytest.mark.parametrize(
    ("cpu", "ports"),
    [(0.25, ["80/tcp"]), (0.5, []), (0.5, ["81/tcp"])],
    ids=["cpu", "no-port", "port"],
)
def test_replica_copy_that_disagrees_with_its_revision_is_rewritten(
    cpu: float, ports: list[str]
) -> None:
    """A replica at the current revision whose copied reservation or fixed ports differ
    from the revision's is rewritten in place with the revision's values."""
    state = cluster(("h1", 4, 8 * Gi))
    add_app(state, spec("resources: {cpu: 0.5}\nports: ['80:80']\n"))
    add_replica(state, "web", 0, "h1", cpu=cpu, ports=ports, mod=80)
    plan = plan_replicas(state, "web", NOW)
    [(record, mod)] = plan.put
    assert (record.slot, record.host, record.revision, mod) == (0, "h1", 1, 80)
    assert (record.resources.cpu, record.host_ports) == (0.5, ["80/tcp"])


def test_revision_change_with_scale_down_and_up() -> None:
    """Kept slots are updated in place, extra ones deleted, missing ones placed: all at once."""
    state = cluster(("h1", 4, 8 * Gi))
    add_revision(state, spec(), 1)
    add_app(state, spec("replicas: 2\nenv: {A: '1'}\n"), revision=2)
    add_replica(state, "web", 0, "h1", mod=60)
    add_replica(state, "web", 5, "h1", mod=65)
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == [(5, 65)]
    assert [(r.slot, r.revision, mod) for r, mod in plan.put] == [(0, 2, 60), (1, 2, 0)]


def test_template_comes_from_the_revision_record() -> None:
    """Reservations are the current revision's, as stored in its revision record."""
    state = cluster(("h1", 4, 8 * Gi))
    add_app(state, spec("resources: {cpu: 0.25}\n"))
    state.revisions[("web", 1)] = Versioned(
        RevisionRecord(
            app="web",
            revision=1,
            template_hash="x",
            spec=spec("resources: {cpu: 2}\n"),
            created_at="t",
        ),
        21,
    )
    [record] = new_records(plan_replicas(state, "web", NOW))
    assert record.resources.cpu == 2.0


def test_unplaceable_slots_are_pending_with_the_explanation() -> None:
    """A slot no host can take is not written; ``pending`` says why, per host."""
    state = cluster(("h1", 4, Gi), ("h2", 4, Gi))
    add_host(state, "h3", host_state="draining")
    add_app(state, spec("replicas: 2\nresources: {memory: 2Gi}\n"))
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == []
    assert plan.pending == {
        0: "0/3 hosts fit: 2 insufficient memory, 1 draining",
        1: "0/3 hosts fit: 2 insufficient memory, 1 draining",
    }


def test_some_slots_placed_and_the_rest_pending() -> None:
    """A fixed host port fits once per host: the slots beyond the hosts stay pending."""
    state = cluster(("h1", 4, 8 * Gi), ("h2", 4, 8 * Gi))
    add_app(state, spec("replicas: 3\nports: ['80:8080']\n"))
    plan = plan_replicas(state, "web", NOW)
    assert [(r.slot, r.host) for r in new_records(plan)] == [(0, "h1"), (1, "h2")]
    assert plan.pending == {2: "0/2 hosts fit: 2 port 80/tcp taken"}


def test_placement_counts_other_apps_reservations() -> None:
    """Hosts already full with other apps' reservations are rejected."""
    state = cluster(("h1", 2, 8 * Gi), ("h2", 2, 8 * Gi))
    add_replica(state, "db", 0, "h1", cpu=2.0)
    add_app(state, spec("resources: {cpu: 1}\n"))
    [record] = new_records(plan_replicas(state, "web", NOW))
    assert record.host == "h2"


def test_deleted_app_deletes_all_its_replicas() -> None:
    """Replicas of an app that no longer exists are all deleted; other apps' stay."""
    state = cluster(("h1", 4, 8 * Gi))
    add_replica(state, "web", 0, "h1", mod=30)
    add_replica(state, "web", 3, "h1", mod=33)
    add_replica(state, "db", 0, "h1", mod=40)
    plan = plan_replicas(state, "web", NOW)
    assert plan.delete == [(0, 30), (3, 33)]
    assert plan.put == []
    assert plan.pending == {}


def test_unknown_app_without_replicas_is_empty() -> None:
    assert plan_replicas(cluster(), "nope", NOW).is_empty()


def test_growing_template_does_not_over_commit_with_new_slots() -> None:
    """A revision that raises cpu, together with a scale up, never reserves more cpu on a
    host than it has: the new slot must not go where the kept one grows."""
    state = cluster(("h1", 2, 8 * Gi))
    add_revision(state, spec("resources: {cpu: 0.5}\n"), 1)
    add_app(state, spec("replicas: 2\nresources: {cpu: 1.5}\n"), revision=2)
    add_replica(state, "web", 0, "h1", revision=1, cpu=0.5)
    plan = plan_replicas(state, "web", NOW)
    reserved = sum(r.resources.cpu for r, _ in plan.put if r.host == "h1")
    assert reserved <= 2.0, plan


def test_changed_fixed_port_is_not_planned_twice_on_a_host() -> None:
    """When a revision moves the fixed host port, a new slot must not land on the host
    where a kept replica now publishes that same port."""
    state = cluster(("h1", 4, 8 * Gi))
    add_revision(state, spec("ports: ['80:8080']\n"), 1)
    add_app(state, spec("replicas: 2\nports: ['81:8080']\n"), revision=2)
    add_replica(state, "web", 0, "h1", revision=1, ports=["80/tcp"])
    plan = plan_replicas(state, "web", NOW)
    on_h1 = [r for r, _ in plan.put if r.host == "h1"]
    assert len(on_h1) <= 1, plan


def test_four_small_replicas_on_two_equal_hosts_go_two_and_two() -> None:
    """Bin-packing by default, yet a small app is split over hosts (the e2e test's case)."""
    state = cluster(("h1", 4, 8 * Gi), ("h2", 4, 8 * Gi))
    add_app(state, spec("replicas: 4\nresources: {cpu: 0.1, memory: 32Mi}\n"))
    hosts = [r.host for r in new_records(plan_replicas(state, "web", NOW))]
    assert sorted(hosts) == ["h1", "h1", "h2", "h2"]


@pytest.mark.parametrize(("placement", "host"), [("binpack", "h1"), ("spread", "h2")])
def test_placement_comes_from_the_spec(placement: str, host: str) -> None:
    """``placement: binpack`` fills the host in use; ``spread`` takes the emptiest."""
    state = cluster(("h1", 4, 8 * Gi), ("h2", 4, 8 * Gi))
    add_replica(state, "db", 0, "h1", cpu=1.0)
    add_app(state, spec(f"placement: {placement}\nresources: {{cpu: 1}}\n"))
    [record] = new_records(plan_replicas(state, "web", NOW))
    assert record.host == host


def test_max_per_host_comes_from_the_spec() -> None:
    state = cluster(("h1", 4, 8 * Gi), ("h2", 4, 8 * Gi))
    add_app(state, spec("replicas: 3\nmax_per_host: 1\n"))
    plan = plan_replicas(state, "web", NOW)
    assert sorted(r.host for r in new_records(plan)) == ["h1", "h2"]
    assert plan.pending == {2: "0/2 hosts fit: 2 max_per_host 1 reached"}


def test_constraints_and_placement_come_from_the_current_spec() -> None:
    """A change of constraints or placement alone makes no new revision: the scheduler
    takes them from the app's spec, not from the (older) revision record."""
    state = cluster()
    add_host(state, "h1", admin_labels={"role": "edge"})
    add_host(state, "h2", admin_labels={"role": "core"})
    add_revision(state, spec("constraints: [role=edge]\n"), 1)
    state.apps["web"] = Versioned(
        AppRecord(
            spec=spec("constraints: [role=core]\n"),
            generation=2,
            revision=1,
            created_at="t",
            updated_at="t",
        ),
        20,
    )
    [record] = new_records(plan_replicas(state, "web", NOW))
    assert record.host == "h2"


def test_constraints_match_host_facts() -> None:
    """Facts the agent reports (os, arch, ...) are selectable like labels."""
    state = cluster()
    add_host(state, "h1", facts={"arch": "x86_64"})
    add_host(state, "h2", facts={"arch": "aarch64"})
    add_app(state, spec("constraints: [arch=aarch64]\n"))
    [record] = new_records(plan_replicas(state, "web", NOW))
    assert record.host == "h2"


def test_request_of_a_slot() -> None:
    """What the scheduler gets for a slot: the template's reservations, fixed ports and
    image; the spec's constraints, placement and max_per_host."""
    template = spec("resources: {cpu: 0.5, memory: 64Mi}\nports: ['80:8080']\n")
    template = template.model_copy(update={"image": "img:v2"})
    current = spec("constraints: [gpu]\nplacement: spread\nmax_per_host: 2\n")
    [request] = requests(current, template, [3])
    assert request == ReplicaRequest(
        app="web",
        slot=3,
        cpu=0.5,
        memory=64 * Mi,
        host_ports=frozenset({"80/tcp"}),
        constraints=(Constraint.model_validate("gpu"),),
        image="img:v2",
        placement="spread",
        max_per_host=2,
    )


# ------------------------------------------------------------------ scheduler_snapshot


def test_scheduler_snapshot() -> None:
    """Hosts keep their state and connection; their labels are the admins', the agent's
    as agent.* (which shadow no fact) and the facts fleet knows; each host sums what its
    replicas reserve (a replacement's too), except the excluded app's."""
    state = ClusterState(revision=1)
    add_host(
        state,
        "h1",
        cpu=2,
        memory=Gi,
        labels={"role": "edge", "os": "custom"},
        facts={"os": "linux", "arch": "x86_64", "tier": "secure"},
        admin_labels={"tier": "web"},
    )
    add_host(state, "h2", host_state="cordoned", connected=False)
    add_replica(state, "web", 0, "h1", cpu=0.5, memory=Mi, ports=["80/tcp"])
    add_replica(state, "db", 1, "h2")
    add_replica(state, "db", 2, "h1", cpu=0.25, memory=2 * Mi)
    snapshot = scheduler_snapshot(state)
    assert snapshot.placed == ()
    assert sorted(snapshot.hosts, key=lambda h: h.host_id) == [
        HostView(
            "h1",
            2.0,
            Gi,
            {
                "tier": "web",
                "agent.role": "edge",
                "agent.os": "custom",
                "os": "linux",
                "arch": "x86_64",
            },
            reserved_nanocpus=750_000_000,
            reserved_memory=3 * Mi,
            placed_apps={"web": 1, "db": 1},
            placed_ports={"80/tcp": 1},
        ),
        HostView("h2", 4.0, 8 * Gi, {}, state="cordoned", connected=False, placed_apps={"db": 1}),
    ]
    without_web = {h.host_id: h for h in scheduler_snapshot(state, exclude_app="web").hosts}
    assert without_web["h1"].reserved_nanocpus == 250_000_000
    assert without_web["h1"].reserved_memory == 2 * Mi
    assert without_web["h1"].placed_apps == {"db": 1}
    assert without_web["h1"].placed_ports == {}
    assert without_web["h2"] == snapshot.hosts[1]


def test_scheduler_snapshot_counts_a_replacement_on_its_host() -> None:
    """A replica with a next holds room on both hosts until the old one stops."""
    state = ClusterState(revision=1)
    add_host(state, "h1")
    add_host(state, "h2")
    add_replica(state, "web", 0, "h1", cpu=1, memory=Mi)
    moving = state.replicas[("web", 0)]
    state.replicas[("web", 0)] = Versioned(
        moving.value.model_copy(
            update={
                "next": ReplicaTarget(
                    revision=2, host="h2", resources=ResourceAmounts(cpu=2, memory=Mi)
                )
            }
        ),
        moving.mod_revision,
    )
    hosts = {h.host_id: h for h in scheduler_snapshot(state).hosts}
    assert (hosts["h1"].reserved_nanocpus, hosts["h2"].reserved_nanocpus) == (10**9, 2 * 10**9)
    assert hosts["h2"].placed_apps == {"web": 1}
    assert all(h.placed_apps == {} for h in scheduler_snapshot(state, exclude_app="web").hosts)


# ------------------------------------------------------------------ desired containers


def test_desired_containers_of_a_host() -> None:
    """A host's desired set is its replicas, by (app, slot), each from its revision."""
    state = cluster(("h1", 4, 8 * Gi), ("h2", 4, 8 * Gi))
    web = spec(
        "replicas: 2\ncommand: [httpd, -f]\nenv: {A: '1'}\nports: ['80:8080/udp', '9000']\n"
        "resources: {cpu: 0.5, memory: 64Mi}\nrestart: on-failure:3\nlabels: {team: web}\n"
        "stop_grace_period: 30s\n"
    )
    add_app(state, web, revision=3)
    db = load_documents("name: db\nimage: pg:16\n")[0]
    add_app(state, db)
    add_replica(state, "web", 1, "h1", revision=3)
    add_replica(state, "web", 0, "h2", revision=3)
    add_replica(state, "db", 0, "h1")
    containers = desired_containers(state, "h1")
    assert [(c.app, c.slot) for c in containers] == [("db", 0), ("web", 1)]
    c = containers[1]
    assert (c.revision, c.spec_hash, c.image) == (3, web.template_hash(), "img:v1")
    assert list(c.command) == ["httpd", "-f"]
    assert dict(c.env) == {"A": "1"}
    assert [(p.host_port, p.container_port, p.protocol) for p in c.ports] == [
        (80, 8080, "udp"),
        (0, 9000, "tcp"),
    ]
    assert (c.resources.cpu, c.resources.memory_bytes) == (0.5, 64 * Mi)
    assert c.restart == "on-failure:3"
    assert dict(c.labels) == {"team": "web"}
    assert c.stop_grace_seconds == 30.0
    assert list(containers[0].command) == []  # the image's CMD
    assert desired_containers(state, "h3") == []


def test_desired_containers_skip_a_replica_without_its_revision() -> None:
    """A replica whose revision record is not (yet) known is left out, not guessed."""
    state = cluster(("h1", 4, 8 * Gi))
    add_app(state, spec())
    add_replica(state, "web", 0, "h1", revision=2)
    assert desired_containers(state, "h1") == []


def test_fingerprint_identifies_a_desired_set() -> None:
    """Equal sets have equal fingerprints; any change, even of order, gives another."""

    def placed(state: ClusterState) -> list[Placed]:
        return desired_placed(state, "h1", SpecCache())

    state = cluster(("h1", 4, 8 * Gi))
    add_app(state, spec("replicas: 2\n"))
    add_replica(state, "web", 0, "h1")
    add_replica(state, "web", 1, "h1")
    containers = placed(state)
    assert placed_fingerprint(containers) == placed_fingerprint(placed(state))
    assert placed_fingerprint(containers) != placed_fingerprint(containers[::-1])
    assert placed_fingerprint(containers) != placed_fingerprint(containers[:1])
    assert placed_fingerprint([]) != placed_fingerprint(containers)
    add_app(state, spec("replicas: 2\nenv: {A: '2'}\n"))
    assert placed_fingerprint(containers) != placed_fingerprint(placed(state))


def test_replicas_on_lost_hosts_move_and_the_others_stay() -> None:
    """A lost host's replica keeps its slot and key (guarded on its mod revision) but
    gets a new host; a replica on a healthy host is not touched."""
    from fleet.controlplane.planner import lost_hosts

    state = cluster(("h1", 4.0, 8 * Gi), ("h2", 4.0, 8 * Gi))
    add_app(state, spec("replicas: 2\n"))
    add_replica(state, "web", 0, "h1")
    add_replica(state, "web", 1, "h2")
    state.alive.pop("h1")
    lost = lost_hosts(state, {"h1": 100.0}, now=120.0, reschedule_after=15.0)
    assert lost == frozenset({"h1"})
    assert lost_hosts(state, {"h1": 100.0}, now=110.0, reschedule_after=15.0) == frozenset()
    plan = plan_replicas(state, "web", NOW, lost)
    [(record, mod)] = plan.put
    assert (record.slot, record.host) == (0, "h2")
    assert mod == state.replicas[("web", 0)].mod_revision
    assert plan.delete == [] and plan.pending == {}


@pytest.mark.parametrize(
    ("down", "registered", "threshold", "held"),
    [
        (2, 2, 0.55, False),  # fewer than 3 down never hold
        (2, 3, 0.55, False),
        (3, 3, 0.55, True),  # every host of a pool of 3
        (3, 6, 0.55, False),  # 50%
        (4, 6, 0.55, True),  # 67%
        (55, 100, 0.55, True),
        (54, 100, 0.55, False),
        (999, 1000, 1.0, False),  # 100%: only when every host is down
        (1000, 1000, 1.0, True),
        (1000, 1000, None, False),  # off
        (3, 0, 0.55, False),
    ],
)
def test_moves_are_held_when_most_hosts_are_down(
    down: int, registered: int, threshold: float | None, held: bool
) -> None:
    from fleet.controlplane.planner import moves_held

    assert moves_held(down, registered, threshold) is held


def test_a_hold_keeps_down_hosts_and_still_moves_hosts_gone() -> None:
    from fleet.controlplane.planner import lost_hosts

    state = cluster(("h1", 4.0, 8 * Gi), ("h2", 4.0, 8 * Gi))
    add_app(state, spec("replicas: 3\n"))
    add_replica(state, "web", 0, "h1")
    add_replica(state, "web", 1, "h2")
    add_replica(state, "web", 2, "h9")  # h9 deregistered
    state.alive.pop("h1")
    assert lost_hosts(state, {"h1": 100.0}, 120.0, 15.0) == {"h1", "h9"}
    assert lost_hosts(state, {"h1": 100.0}, 120.0, 15.0, hold=True) == {"h9"}
