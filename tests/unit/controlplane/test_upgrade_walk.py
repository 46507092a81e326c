"""Tests of the coordinated OS upgrade walk's pure step, ``step_upgrade``, and of
``selected_hosts``.

Each host of a walk goes ``waiting`` -> ``draining`` (it takes a slot of the maintenance
semaphore) -> ``upgrading`` (once its drain is over) -> ``done`` (its agent is back with
a new boot id or OS version: it is uncordoned and gives its slot back), or ``failed``.
The tests apply every step back to the state (``commit``) and play the world between
rounds: a drain finishes, an agent goes away or comes back upgraded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fleet.controlplane.desired import desired_containers
from fleet.controlplane.upgrades import (
    CANARY_SLOT,
    UpgradeStep,
    cancel_walk,
    plan_walk,
    selected_hosts,
    step_upgrade,
)
from fleet.errors import FailedPrecondition, InvalidArgument, NotFound
from fleet.store import ClusterState, Versioned
from fleet.store.records import (
    ContainerReport,
    HostUpgrade,
    LiveRecord,
    MaintenanceRecord,
    ResourceAmounts,
    StatusRecord,
    UpgradeRecord,
)
from tests.unit.controlplane.builders import add_app, add_host, cluster, spec

HOLDER = "upgrade-hosts"
OUT = ("draining", "upgrading")


# ------------------------------------------------------------------ helpers


def walk_state(
    count: int = 3,
    *,
    max_parallel: int = 1,
    command: str = "",
    walk_state: str = "running",
) -> ClusterState:
    """Hosts h1..h<count>, ready and connected on OS version 1, and a walk over them all
    in that order (no semaphore record yet)."""
    state = cluster()
    for i in range(1, count + 1):
        add_host(state, f"h{i}", facts={"os_version": "1", "boot_id": f"boot-h{i}-0"})
    walk = UpgradeRecord(
        id="u1",
        max_parallel=max_parallel,
        command=command,
        state=walk_state,  # type: ignore[arg-type]
        created_at="t0",
        updated_at="t0",
        hosts={f"h{i}": HostUpgrade() for i in range(1, count + 1)},
    )
    state.upgrade = Versioned(walk, 30)
    return state


def commit(state: ClusterState, step: UpgradeStep) -> None:
    """Write what the step decided, as the controller's transaction would."""
    for host_id, record in step.hosts.items():
        stored = state.hosts[host_id]
        state.hosts[host_id] = Versioned(record, stored.mod_revision + 1)
    if step.upgrade is not None:
        mod = state.upgrade.mod_revision if state.upgrade else 0
        state.upgrade = Versioned(step.upgrade, mod + 1)
    if step.maintenance is not None:
        mod = state.maintenance.mod_revision if state.maintenance else 0
        state.maintenance = Versioned(step.maintenance, mod + 1)
    state.revision += 1


T0 = 1_800_000_000.0  # the walk's clock: epoch seconds (stamps are made from it)


def stamp(seconds: float) -> str:
    """The record stamp the walk writes at ``T0 + seconds``."""
    return (
        datetime.fromtimestamp(T0 + seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def advance(state: ClusterState, now: float = T0 + 1) -> UpgradeStep:
    """One round of the walk, committed."""
    step = step_upgrade(state, now)
    commit(state, step)
    return step


def set_host(cluster_state: ClusterState, host_id: str, **update: object) -> None:
    """Rewrite a host record (``state=`` is the host state), as ops or the agent would."""
    stored = cluster_state.hosts[host_id]
    cluster_state.hosts[host_id] = Versioned(
        stored.value.model_copy(update=update), stored.mod_revision + 1
    )


def finish_drain(state: ClusterState, host_id: str) -> None:
    """The replica controller found the draining host empty."""
    assert state.hosts[host_id].value.state == "draining"
    set_host(state, host_id, state="drained")


def go_away(state: ClusterState, host_id: str) -> None:
    """The agent disconnects (its host reboots)."""
    state.alive.pop(host_id, None)


def come_back(
    state: ClusterState, host_id: str, *, os_version: str | None = "2", boot_id: str | None = None
) -> None:
    """The agent reconnects and registers again, with these facts where given."""
    facts = dict(state.hosts[host_id].value.facts)
    if os_version is not None:
        facts["os_version"] = os_version
    if boot_id is not None:
        facts["boot_id"] = boot_id
    set_host(state, host_id, facts=facts)
    state.alive[host_id] = Versioned(LiveRecord(server="cp1", connected_at="t9"), 99)


def walk_of(state: ClusterState) -> UpgradeRecord:
    assert state.upgrade is not None
    return state.upgrade.value


def phases(state: ClusterState) -> dict[str, str]:
    return {h: p.phase for h, p in walk_of(state).hosts.items()}


def holders(state: ClusterState) -> dict[str, str]:
    return dict(state.maintenance.value.holders) if state.maintenance else {}


def host_states(state: ClusterState) -> dict[str, str]:
    return {h: v.value.state for h, v in sorted(state.hosts.items())}


def upgrade_host(state: ClusterState, host_id: str) -> None:
    """Take ``host_id`` (already draining) through drained, upgrading and back."""
    finish_drain(state, host_id)
    advance(state, T0 + 2)
    assert phases(state)[host_id] == "upgrading"
    go_away(state, host_id)
    come_back(state, host_id)
    advance(state, T0 + 3)
    assert phases(state)[host_id] == "done"


# ------------------------------------------------------------------ the walk's rules


def test_start_drains_only_the_first_host() -> None:
    """max_parallel 1, three waiting hosts: one step drains the first host only (its
    record draining by the walk, the semaphore slot held) and the walk says so."""
    state = walk_state(3)
    step = step_upgrade(state, T0 + 1)
    assert set(step.hosts) == {"h1"}
    record = step.hosts["h1"]
    assert record.state == "draining"
    assert record.drain is not None
    assert record.drain.by == HOLDER
    assert record.drain.started_at == stamp(1)
    assert record.command is None
    assert step.maintenance is not None
    assert step.maintenance.holders == {"h1": HOLDER}
    assert step.maintenance.max >= 1
    assert step.upgrade is not None
    assert step.upgrade.updated_at == stamp(1)
    walked = step.upgrade.hosts
    assert walked["h1"].phase == "draining"
    assert walked["h1"].started_at == stamp(1)
    assert (walked["h2"].phase, walked["h3"].phase) == ("waiting", "waiting")
    assert list(walked) == ["h1", "h2", "h3"]  # the walking order is kept
    assert step.upgrade.state == "running"
    assert [(kind, host) for kind, host, _ in step.events] == [("host-draining", "h1")]


def test_never_more_than_max_parallel_out() -> None:
    """max_parallel 2: exactly two hosts drain; the third waits until one is done, then
    starts in the very step that releases the slot."""
    state = walk_state(3, max_parallel=2)
    advance(state)
    assert phases(state) == {"h1": "draining", "h2": "draining", "h3": "waiting"}
    assert holders(state) == {"h1": HOLDER, "h2": HOLDER}
    assert state.maintenance is not None
    assert state.maintenance.value.max == 2
    assert host_states(state) == {"h1": "draining", "h2": "draining", "h3": "ready"}

    finish_drain(state, "h1")
    advance(state, T0 + 2)
    assert phases(state) == {"h1": "upgrading", "h2": "draining", "h3": "waiting"}
    assert step_upgrade(state, T0 + 3).is_empty()  # still two out

    come_back(state, "h1")
    advance(state, T0 + 4)
    assert phases(state) == {"h1": "done", "h2": "draining", "h3": "draining"}
    assert holders(state) == {"h2": HOLDER, "h3": HOLDER}
    assert host_states(state) == {"h1": "ready", "h2": "draining", "h3": "draining"}


def test_drained_host_gets_the_upgrade_command() -> None:
    """Drained -> upgrading: the boot id and OS version before are recorded from the
    facts, and the host record gets the walk's command, by id ``<walk>-<host>``."""
    state = walk_state(2, command="rpm-ostree upgrade --reboot")
    advance(state)
    finish_drain(state, "h1")
    step = step_upgrade(state, T0 + 2)
    assert step.upgrade is not None
    progress = step.upgrade.hosts["h1"]
    assert progress.phase == "upgrading"
    assert (progress.boot_id, progress.os_version) == ("boot-h1-0", "1")
    assert progress.message == "running the upgrade command"
    assert set(step.hosts) == {"h1"}
    command = step.hosts["h1"].command
    assert command is not None
    assert command.id == "u1-h1"
    assert command.command == "rpm-ostree upgrade --reboot"
    assert command.issued_at == stamp(2)
    assert step.hosts["h1"].state == "maintenance"  # out for its upgrade, still empty
    assert step.maintenance is None  # the slot stays held
    assert [(kind, host) for kind, host, _ in step.events] == [("host-upgrading", "h1")]


def test_drained_host_without_a_command_is_left_to_ops() -> None:
    """Without a command the host only turns "maintenance"; the message tells ops to
    upgrade and reboot it by hand."""
    state = walk_state(2)
    advance(state)
    finish_drain(state, "h1")
    step = step_upgrade(state, T0 + 2)
    assert {h: r.state for h, r in step.hosts.items()} == {"h1": "maintenance"}
    assert step.upgrade is not None
    progress = step.upgrade.hosts["h1"]
    assert progress.phase == "upgrading"
    assert (progress.boot_id, progress.os_version) == ("boot-h1-0", "1")
    assert "upgrade and reboot it" in progress.message
    assert "boot id" in progress.message
    commit(state, step)
    assert state.hosts["h1"].value.command is None


@pytest.mark.parametrize(
    "world",
    ["same facts, connected", "new version, not connected", "away, same facts"],
)
def test_upgrading_host_not_back_changes_nothing(world: str) -> None:
    """An upgrading host whose agent is not back (not connected, or with the same boot
    id and OS version) keeps its phase, its record and its slot."""
    state = walk_state(2, command="upgrade")
    advance(state)
    finish_drain(state, "h1")
    advance(state, T0 + 2)
    if world == "new version, not connected":
        come_back(state, "h1", os_version="2", boot_id="boot-h1-1")
        go_away(state, "h1")
    elif world == "away, same facts":
        go_away(state, "h1")
    else:
        come_back(state, "h1", os_version=None)  # reconnected, same facts
    assert step_upgrade(state, T0 + 3).is_empty()
    assert phases(state) == {"h1": "upgrading", "h2": "waiting"}


@pytest.mark.parametrize(
    ("os_version", "boot_id"),
    [("2", None), (None, "boot-h1-1"), ("2", "boot-h1-1")],
    ids=["new-os-version", "new-boot-id", "both"],
)
def test_host_back_is_done_and_the_next_starts(os_version: str | None, boot_id: str | None) -> None:
    """Back with a new OS version or boot id and connected: the host is done, ready, its
    drain and command cleared, its slot released, and the next host starts at once."""
    state = walk_state(2, command="upgrade")
    advance(state)
    finish_drain(state, "h1")
    advance(state, T0 + 2)
    go_away(state, "h1")
    come_back(state, "h1", os_version=os_version, boot_id=boot_id)
    step = step_upgrade(state, T0 + 3)
    assert step.upgrade is not None
    done = step.upgrade.hosts["h1"]
    assert done.phase == "done"
    assert done.finished_at == stamp(3)
    assert "uncordoned" in done.message
    back = step.hosts["h1"]
    assert (back.state, back.drain, back.command) == ("ready", None, None)
    assert back.facts["os_version"] == (os_version or "1")
    assert step.upgrade.hosts["h2"].phase == "draining"
    assert step.hosts["h2"].state == "draining"
    assert step.maintenance is not None
    assert step.maintenance.holders == {"h2": HOLDER}
    kinds = [(kind, host) for kind, host, _ in step.events]
    assert kinds == [("host-upgraded", "h1"), ("host-draining", "h2")]
    assert step.upgrade.state == "running"


def test_semaphore_is_shared_with_manual_drains() -> None:
    """A manual drain holding the only slot keeps the walk (max_parallel 1) from taking
    a host; once that slot is given back the walk starts."""
    state = walk_state(2)
    add_host(state, "h9", host_state="draining")
    manual = MaintenanceRecord(max=1, holders={"h9": "fleet drain"})
    state.maintenance = Versioned(manual, 40)
    step = step_upgrade(state, T0 + 1)
    assert step.is_empty()

    # h9 is uncordoned by hand: its slot is given back.
    set_host(state, "h9", state="ready", drain=None)
    state.maintenance = Versioned(MaintenanceRecord(max=1, holders={}), 41)
    advance(state, T0 + 2)
    assert phases(state) == {"h1": "draining", "h2": "waiting"}
    assert holders(state) == {"h1": HOLDER}


def test_manual_holder_is_kept_while_the_walk_runs() -> None:
    """With room for both (semaphore max 2, max_parallel 1) the walk takes a host next to
    the manual drain and never touches the manual holder, even when its host is done."""
    state = walk_state(1)
    add_host(state, "h9", host_state="draining")
    state.maintenance = Versioned(MaintenanceRecord(max=2, holders={"h9": "fleet drain"}), 40)
    advance(state)
    assert holders(state) == {"h9": "fleet drain", "h1": HOLDER}
    upgrade_host(state, "h1")
    assert holders(state) == {"h9": "fleet drain"}
    assert state.hosts["h9"].value.state == "draining"
    assert walk_of(state).state == "done"


@pytest.mark.parametrize("slot_given_back", [False, True])
def test_host_uncordoned_while_draining_fails(slot_given_back: bool) -> None:
    """A draining host uncordoned by hand (ready again) fails with a message, its slot
    is released and the walk goes on with the next host."""
    state = walk_state(2)
    advance(state)
    set_host(state, "h1", state="ready", drain=None)
    if slot_given_back:  # as `fleet uncordon` does
        state.maintenance = Versioned(MaintenanceRecord(max=1, holders={}), 50)
    step = step_upgrade(state, T0 + 2)
    assert step.upgrade is not None
    failed = step.upgrade.hosts["h1"]
    assert failed.phase == "failed"
    assert failed.finished_at == stamp(2)
    assert "ready" in failed.message
    assert "h1" not in step.hosts  # the host is left as ops set it
    assert step.upgrade.hosts["h2"].phase == "draining"
    assert step.hosts["h2"].state == "draining"
    commit(state, step)
    assert holders(state) == {"h2": HOLDER}
    assert walk_of(state).state == "running"


@pytest.mark.parametrize("phase", ["draining", "upgrading"])
def test_host_that_disappears_fails(phase: str) -> None:
    """A host whose record is deleted while it is out fails ("gone"), its slot is
    released and the next host starts."""
    state = walk_state(2, command="upgrade")
    advance(state)
    if phase == "upgrading":
        finish_drain(state, "h1")
        advance(state, T0 + 2)
    assert phases(state)["h1"] == phase
    del state.hosts["h1"]
    go_away(state, "h1")
    step = step_upgrade(state, T0 + 3)
    assert step.upgrade is not None
    gone = step.upgrade.hosts["h1"]
    assert gone.phase == "failed"
    assert gone.finished_at == stamp(3)
    assert "gone" in gone.message
    assert "h1" not in step.hosts
    assert step.upgrade.hosts["h2"].phase == "draining"
    commit(state, step)
    assert holders(state) == {"h2": HOLDER}


def test_waiting_host_that_disappears_fails_and_the_walk_finishes() -> None:
    """A host deleted before its turn fails too; the walk still ends once the others
    are done."""
    state = walk_state(2)
    advance(state)
    del state.hosts["h2"]
    go_away(state, "h2")
    upgrade_host(state, "h1")
    advance(state, T0 + 4)
    assert phases(state) == {"h1": "done", "h2": "failed"}
    assert walk_of(state).state == "done"


def test_stopped_walk_takes_no_new_host_but_finishes_those_out() -> None:
    """A stopped walk starts nobody, but a host already out still goes through
    upgrading to done; the walk stays stopped, with the rest waiting."""
    state = walk_state(3, max_parallel=2)
    advance(state)
    walk = walk_of(state).model_copy(update={"state": "stopped"})
    state.upgrade = Versioned(walk, state.upgrade.mod_revision + 1)  # type: ignore[union-attr]
    upgrade_host(state, "h1")
    assert phases(state) == {"h1": "done", "h2": "draining", "h3": "waiting"}
    assert holders(state) == {"h2": HOLDER}
    upgrade_host(state, "h2")
    assert phases(state) == {"h1": "done", "h2": "done", "h3": "waiting"}
    assert holders(state) == {}
    assert host_states(state) == {"h1": "ready", "h2": "ready", "h3": "ready"}
    assert walk_of(state).state == "stopped"
    assert step_upgrade(state, T0 + 9).is_empty()

    resumed = walk_of(state).model_copy(update={"state": "running"})
    state.upgrade = Versioned(resumed, state.upgrade.mod_revision + 1)  # type: ignore[union-attr]
    advance(state, T0 + 10)
    assert phases(state)["h3"] == "draining"


def test_stopped_walk_with_nothing_left_is_done() -> None:
    """A stopped walk whose last host out comes back, with no host waiting, is done."""
    state = walk_state(1)
    advance(state)
    walk = walk_of(state).model_copy(update={"state": "stopped"})
    state.upgrade = Versioned(walk, state.upgrade.mod_revision + 1)  # type: ignore[union-attr]
    upgrade_host(state, "h1")
    assert walk_of(state).state == "done"


def test_walk_of_done_and_failed_hosts_is_done() -> None:
    """Once every host is done or failed the walk is done; a done walk yields an empty
    step whatever the world does."""
    state = walk_state(2)
    advance(state)
    set_host(state, "h1", state="cordoned", drain=None)  # ended by hand: failed
    advance(state, T0 + 2)
    assert phases(state) == {"h1": "failed", "h2": "draining"}
    assert walk_of(state).state == "running"
    upgrade_host(state, "h2")
    assert phases(state) == {"h1": "failed", "h2": "done"}
    assert walk_of(state).state == "done"
    assert walk_of(state).updated_at == stamp(3)
    assert holders(state) == {}

    assert step_upgrade(state, T0 + 4).is_empty()
    set_host(state, "h1", state="draining")
    del state.hosts["h2"]
    state.maintenance = Versioned(MaintenanceRecord(max=1, holders={"h9": "fleet drain"}), 70)
    assert step_upgrade(state, T0 + 5).is_empty()


def test_no_walk_is_an_empty_step() -> None:
    """Without a walk record the step does nothing."""
    state = cluster()
    add_host(state, "h1")
    assert step_upgrade(state, T0 + 1).is_empty()


@pytest.mark.parametrize(
    "stage",
    ["start", "draining", "upgrading", "one done", "semaphore full", "stopped", "failed"],
)
def test_stepping_twice_without_a_world_change_is_idempotent(stage: str) -> None:
    """At any point of the walk, a second step on the committed state, with nothing
    changed in the world (and a later clock), writes nothing."""
    state = walk_state(3, command="upgrade")
    if stage == "semaphore full":
        state.maintenance = Versioned(MaintenanceRecord(max=1, holders={"h9": "fleet drain"}), 5)
    if stage == "stopped":
        walk = walk_of(state).model_copy(update={"state": "stopped"})
        state.upgrade = Versioned(walk, 31)
    advance(state, T0 + 1)
    if stage in ("draining", "upgrading", "one done"):
        assert step_upgrade(state, T0 + 1.5).is_empty()
    if stage in ("upgrading", "one done"):
        finish_drain(state, "h1")
        advance(state, T0 + 2)
    if stage == "one done":
        come_back(state, "h1")
        advance(state, T0 + 3)
    if stage == "failed":
        set_host(state, "h1", state="ready", drain=None)
        advance(state, T0 + 2)
    before = (walk_of(state), holders(state), host_states(state))
    step = step_upgrade(state, T0 + 99)
    assert step.is_empty(), step
    assert step.events == []
    assert (walk_of(state), holders(state), host_states(state)) == before


# ------------------------------------------------------------------ selected_hosts


def test_selected_hosts_over_labels_and_facts() -> None:
    """``k=v``, ``k!=v`` (absent or different) and ``k`` (exists) match admin labels,
    agent labels (as agent.*) and known facts alike; an agent cannot pass a label off
    as an admin's or a fact; hosts come sorted."""
    state = cluster()
    add_host(state, "h3", admin_labels={"pool": "edge"}, facts={"os": "fedora", "arch": "x86_64"})
    add_host(state, "h1", admin_labels={"pool": "edge", "gpu": "a100"}, facts={"os": "debian"})
    add_host(state, "h2", admin_labels={"pool": "core"}, facts={"os": "fedora", "arch": "aarch64"})
    add_host(state, "h4", facts={"os": "fedora", "pool": "edge"})  # not a fact fleet knows
    add_host(state, "h5", labels={"os": "custom", "pool": "edge"}, facts={"os": "fedora"})
    assert selected_hosts(state, []) == ["h1", "h2", "h3", "h4", "h5"]
    assert selected_hosts(state, ["pool=edge"]) == ["h1", "h3"]  # h4, h5: their own word
    assert selected_hosts(state, ["agent.pool=edge"]) == ["h5"]
    assert selected_hosts(state, ["os=fedora"]) == ["h2", "h3", "h4", "h5"]  # h5: the fact
    assert selected_hosts(state, ["pool=edge", "os=fedora"]) == ["h3"]
    assert selected_hosts(state, ["os!=fedora"]) == ["h1"]
    assert selected_hosts(state, ["gpu!=a100"]) == ["h2", "h3", "h4", "h5"]  # absent matches
    assert selected_hosts(state, ["gpu"]) == ["h1"]
    assert selected_hosts(state, ["arch"]) == ["h2", "h3"]
    assert selected_hosts(state, ["arch", "pool!=core"]) == ["h3"]
    assert selected_hosts(state, ["pool=nowhere"]) == []


def test_selected_hosts_rejects_a_bad_selector() -> None:
    """A malformed term is a validation error, not an empty match."""
    state = cluster()
    add_host(state, "h1")
    with pytest.raises(ValidationError):
        selected_hosts(state, ["=edge"])


def test_selected_hosts_by_a_fact_with_an_underscore() -> None:
    """The agent's facts (``os_version``, ``boot_id``...) can be selected on: a walk over
    the hosts not yet on version 2."""
    state = cluster()
    add_host(state, "h1", facts={"os_version": "1"})
    add_host(state, "h2", facts={"os_version": "2"})
    assert selected_hosts(state, ["os_version!=2"]) == ["h1"]


# ------------------------------------------------------------------ property


def check_invariants(state: ClusterState, max_parallel: int) -> None:
    walk = walk_of(state)
    out = {h for h, p in walk.hosts.items() if p.phase in OUT}
    assert len(out) <= max_parallel
    held = holders(state)
    if state.maintenance is not None:
        assert len(held) <= state.maintenance.value.max
    assert set(held) == out  # every host out holds a slot, and only those
    assert all(who == HOLDER for who in held.values())
    for host_id, progress in walk.hosts.items():
        record = state.hosts[host_id].value
        if progress.phase == "draining":
            assert record.state == "draining"  # a drained one would have moved on
        elif progress.phase == "upgrading":
            assert record.state == "maintenance"
        else:
            assert (record.state, record.drain, record.command) == ("ready", None, None)
    if walk.state == "done":
        assert all(p.phase in ("done", "failed") for p in walk.hosts.values())


def play_world(state: ClusterState, events: list[tuple[bool, bool, bool]]) -> None:
    """Per host (drain finishes, agent comes back, agent goes away): a draining host may
    be found drained; an upgrading host's agent may reboot into the new version and
    reconnect, or go away; any other agent may just disconnect and reconnect."""
    walk = walk_of(state)
    for i, host_id in enumerate(sorted(walk.hosts)):
        finish, back, away = events[i]
        phase = walk.hosts[host_id].phase
        if finish and state.hosts[host_id].value.state == "draining":
            finish_drain(state, host_id)
        if away:
            go_away(state, host_id)
        if back:
            upgraded = phase == "upgrading"
            come_back(state, host_id, os_version="2" if upgraded else None)


world_round = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=5, max_size=5
)


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(1, 5),
    max_parallel=st.integers(1, 3),
    command=st.sampled_from(["", "upgrade --reboot"]),
    rounds=st.lists(world_round, max_size=40),
)
def test_walk_keeps_its_limits_and_finishes(
    count: int, max_parallel: int, command: str, rounds: list[list[tuple[bool, bool, bool]]]
) -> None:
    """Whatever the world does, no more than max_parallel hosts are out at once, the
    semaphore is never over its max, and once every host gets drained and comes back
    upgraded the walk ends done with every host done and ready."""
    state = walk_state(count, max_parallel=max_parallel, command=command)
    for number, events in enumerate(rounds):
        play_world(state, events)
        advance(state, T0 + 10 + number)
        check_invariants(state, max_parallel)
    # From now on every drain finishes and every upgrading agent comes back upgraded.
    for number in range(3 * count + 2):
        if walk_of(state).state == "done":
            break
        play_world(state, [(True, True, False)] * 5)
        advance(state, T0 + 100 + number)
        check_invariants(state, max_parallel)
    walk = walk_of(state)
    assert walk.state == "done"
    assert set(phases(state).values()) == {"done"}
    assert set(host_states(state).values()) == {"ready"}
    assert all(v.value.command is None and v.value.drain is None for v in state.hosts.values())
    assert holders(state) == {}
    assert step_upgrade(state, T0 + 10_000).is_empty()


# ------------------------------------------------------------------ the canary


def canary_walk() -> ClusterState:
    """Two hosts and a walk with a canary of app ``web``; h1 upgraded and back."""
    state = walk_state(2)
    add_app(state, spec("replicas: 2\n"))
    state.upgrade = Versioned(walk_of(state).model_copy(update={"canary_app": "web"}), 30)
    advance(state, T0 + (0))
    finish_drain(state, "h1")
    advance(state, T0 + (1))
    go_away(state, "h1")
    come_back(state, "h1")
    advance(state, T0 + (2))
    return state


def report_canary(state: ClusterState, *, ready_at: float, restarts: int = 0) -> None:
    container = ContainerReport(
        app="web",
        slot=CANARY_SLOT,
        revision=1,
        spec_hash="x",
        container_id="canary",
        name="web.999999.x",
        state="running",
        ready_since=stamp(ready_at),
        restarts=restarts,
    )
    status = StatusRecord(
        host_id="h1",
        reported_at=stamp(ready_at),
        applied_version=1,
        usage=ResourceAmounts(),
        containers=[container],
    )
    state.status["h1"] = Versioned(status, 70)


def test_a_host_back_runs_a_canary_before_it_is_uncordoned() -> None:
    """Back from its upgrade, the host runs one replica of the canary app (outside the
    app's slots) and stays out until it has been healthy for a few seconds."""
    state = canary_walk()
    assert phases(state) == {"h1": "canary", "h2": "waiting"}
    assert host_states(state)["h1"] == "maintenance"
    [canary] = desired_containers(state, "h1")
    assert (canary.app, canary.slot, canary.revision) == ("web", CANARY_SLOT, 1)
    report_canary(state, ready_at=3)
    advance(state, T0 + (4))  # healthy for 1 s only
    assert phases(state)["h1"] == "canary"
    advance(state, T0 + (7))
    assert phases(state) == {"h1": "done", "h2": "draining"}
    assert host_states(state)["h1"] == "ready"
    assert "canary of web ran healthy" in walk_of(state).hosts["h1"].message
    assert desired_containers(state, "h1") == []  # the canary is gone with its phase


@pytest.mark.parametrize("how", ["crash-looping", "never healthy"])
def test_a_failed_canary_keeps_the_host_out_and_stops_the_walk(how: str) -> None:
    state = canary_walk()
    if how == "crash-looping":
        report_canary(state, ready_at=3, restarts=3)
        advance(state, T0 + (4))
    else:
        advance(state, T0 + (2 + 181))
    walk = walk_of(state)
    assert (walk.state, phases(state)) == ("stopped", {"h1": "failed", "h2": "waiting"})
    assert host_states(state)["h1"] == "maintenance"  # not uncordoned
    assert "canary of web failed" in walk.hosts["h1"].message
    assert holders(state) == {"h1": HOLDER}  # the slot stays held while ops look


# ------------------------------------------------------------------ starting and stopping


def test_a_walk_starts_over_the_selected_hosts_waiting() -> None:
    state = walk_state(3, walk_state="done")
    add_host(state, "other", labels={"pool": "b"})
    walk = plan_walk(state, "start", selector=["agent.pool!=b"], max_parallel=2, now=1.8e9)
    assert walk.id == "u1800000000" and walk.state == "running" and walk.max_parallel == 2
    assert walk.selector == ["agent.pool!=b"]
    assert {h: p.phase for h, p in walk.hosts.items()} == dict.fromkeys(
        ["h1", "h2", "h3"], "waiting"
    )
    assert walk.created_at == walk.updated_at == "2027-01-15T08:00:00.000Z"


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"max_parallel": 101}, InvalidArgument, "--max-parallel must be from 1 to 100"),
        ({"command": "x" * 4097}, InvalidArgument, "at most 4096 characters"),
        ({"selector": ["=x"]}, InvalidArgument, "bad selector"),
        ({"selector": ["a"] * 17}, InvalidArgument, "at most 16 selector terms"),
        ({"selector": ["pool=none"]}, InvalidArgument, "no host matches pool=none"),
        ({"canary_app": "ghost"}, NotFound, "the canary app 'ghost' does not exist"),
    ],
)
def test_a_walk_that_cannot_start_says_why(
    changes: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        plan_walk(walk_state(2, walk_state="done"), "start", now=1e9, **changes)  # type: ignore[arg-type]


def test_a_walk_does_not_start_while_another_is_not_done() -> None:
    with pytest.raises(FailedPrecondition, match="upgrade walk u1 is stopped; resume it"):
        plan_walk(walk_state(2, walk_state="stopped"), "start", now=1e9)


def test_a_walk_is_stopped_and_resumed_as_it_is() -> None:
    state = walk_state(2)
    stopped = plan_walk(state, "stop", now=1e9)
    assert stopped == walk_of(state).model_copy(
        update={"state": "stopped", "updated_at": "2001-09-09T01:46:40.000Z"}
    )
    assert plan_walk(state, "resume", now=1e9).state == "running"
    with pytest.raises(FailedPrecondition, match="no upgrade walk to stop or resume"):
        plan_walk(walk_state(2, walk_state="done"), "resume", now=1e9)
    with pytest.raises(
        InvalidArgument, match="unknown action 'pause': use start, stop, resume or cancel"
    ):
        plan_walk(state, "pause", now=1e9)


# ------------------------------------------------------------------ cancelling


def test_cancel_gives_back_what_the_walk_holds() -> None:
    """max_parallel 3 over four hosts: h1 done, h2 upgrading, h3 draining, h4 waiting.
    Cancelling ends the walk and releases its slots: the draining host is uncordoned,
    the upgrading one stays cordoned (its reboot may be under way), the waiting one is
    untouched; a manual drain's slot is not the walk's to give back."""
    state = walk_state(4, max_parallel=3)
    add_host(state, "m1")
    state.maintenance = Versioned(MaintenanceRecord(max=4, holders={"m1": "fleet drain"}), 5)
    advance(state)
    assert phases(state) == {"h1": "draining", "h2": "draining", "h3": "draining", "h4": "waiting"}
    upgrade_host(state, "h1")
    finish_drain(state, "h2")
    advance(state, T0 + 4)
    assert phases(state)["h2"] == "upgrading" and phases(state)["h4"] == "draining"
    step = cancel_walk(state, T0 + 5)
    commit(state, step)
    walk = walk_of(state)
    assert walk.state == "cancelled"
    assert phases(state) == {
        "h1": "done",
        "h2": "cancelled",
        "h3": "cancelled",
        "h4": "cancelled",
    }
    assert holders(state) == {"m1": "fleet drain"}
    states = host_states(state)
    assert (states["h1"], states["h2"], states["h3"], states["h4"]) == (
        "ready",
        "cordoned",
        "ready",
        "ready",
    )
    assert all(state.hosts[h].value.drain is None for h in ("h2", "h3", "h4"))
    assert state.hosts["h2"].value.command is None
    assert "fleet uncordon h2" in walk.hosts["h2"].message
    assert {k for k, _, _ in step.events} == {"host-upgrade-cancelled"}
    # Over: the walk takes no further step, and a new one may start.
    assert step_upgrade(state, T0 + 6).is_empty()
    assert plan_walk(state, "start", now=T0 + 7).state == "running"


def test_cancel_before_any_host_went_out_touches_no_host() -> None:
    state = walk_state(2, walk_state="stopped")
    step = cancel_walk(state, T0)
    assert step.hosts == {} and step.maintenance is None
    assert step.upgrade is not None and step.upgrade.state == "cancelled"
    assert {p.message for p in step.upgrade.hosts.values()} == {"cancelled before it started"}


def test_cancel_after_a_failed_canary_releases_the_slot_and_keeps_the_host_cordoned() -> None:
    state = canary_walk()
    advance(state, T0 + (2 + 181))
    assert holders(state) == {"h1": HOLDER}
    commit(state, cancel_walk(state, T0 + 200))
    assert holders(state) == {}
    assert host_states(state)["h1"] == "cordoned"
    assert phases(state) == {"h1": "failed", "h2": "cancelled"}


@pytest.mark.parametrize("over", ["done", "cancelled", None])
def test_cancel_without_a_walk_going_on_is_refused(over: str | None) -> None:
    state = walk_state(2, walk_state=over or "done")
    if over is None:
        state.upgrade = None
    with pytest.raises(FailedPrecondition, match="no upgrade walk to cancel"):
        cancel_walk(state, T0)
