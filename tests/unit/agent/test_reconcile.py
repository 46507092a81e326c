"""Tests of fleet.agent.reconcile: the order of tasks and their phases, duplicates,
restart policies and their backoff as the plan applies them, and the property that
applying a plan leaves nothing to remove or create."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.agent.reconcile import Create, Remove, Start, Stop, Task, plan
from fleet.agent.restarts import Backoff, RestartBook
from fleet.agent.runtime import ObservedContainer
from fleet.proto import fleet_pb2 as pb
from tests.unit.agent.builders import NOW, container, exited, spec


def planned(
    desired: list[pb.ContainerSpec],
    observed: list[ObservedContainer],
    restarts: RestartBook,
    now: float,
    backoff: Backoff | None = None,
) -> tuple[list[Task], float | None]:
    """The plan's tasks, phase after phase, and when to look again."""
    result = plan(desired, observed, restarts, now, backoff)
    return result.tasks, result.look_again


def kinds(tasks: list[Task]) -> list[str]:
    return [type(t).__name__ for t in tasks]


# ------------------------------------------------------------------ removes and creates


def test_matching_running_container_needs_nothing() -> None:
    """A running container of the desired template is left alone."""
    assert planned([spec()], [container()], RestartBook(), NOW) == ([], None)


def test_missing_replicas_are_created_in_order() -> None:
    """Every desired replica without a container gets one, in (app, slot) order."""
    desired = [spec("web", 2), spec("api", 0), spec("web", 0), spec("web", 1)]
    tasks, look_again = planned(desired, [container("web", 1)], RestartBook(), NOW)
    assert tasks == [Create(spec("api", 0)), Create(spec("web", 0)), Create(spec("web", 2))]
    assert look_again is None


def test_stale_containers_are_removed_before_creates() -> None:
    """Containers no longer desired, or of another template, go first, then the creates."""
    old = container("web", 0, "0ld0ld00")
    gone = container("db", 0)
    desired = [spec("web", 0, "new0new0"), spec("web", 1, "new0new0")]
    tasks, _ = planned(desired, [old, gone], RestartBook(), NOW)
    assert kinds(tasks) == ["Remove", "Remove", "Create", "Create"]
    removes = {t.container.container_id: t.reason for t in tasks if isinstance(t, Remove)}
    assert removes == {
        gone.container_id: "no longer desired on this host",
        old.container_id: "replaced by template new0new0",
    }
    assert tasks[2:] == [Create(desired[0]), Create(desired[1])]


def test_stopped_container_of_an_old_template_is_removed_not_restarted() -> None:
    """A stale container is replaced, whatever its state and restart policy."""
    stale = container("web", 0, "0ld0ld00", state="exited", exit_code=1, finished_at=0.5)
    tasks, look_again = planned([spec("web", 0, "new0new0")], [stale], RestartBook(), NOW)
    assert tasks == [
        Remove(stale, "replaced by template new0new0"),
        Create(spec("web", 0, "new0new0")),
    ]
    assert look_again is None


def test_nothing_desired_removes_everything() -> None:
    """An empty desired set removes every fleet container on the host."""
    observed = [container("web", 0), container("web", 1, state="exited")]
    tasks, _ = planned([], observed, RestartBook(), NOW)
    assert kinds(tasks) == ["Remove", "Remove"]
    assert {t.container.container_id for t in tasks if isinstance(t, Remove)} == {
        c.container_id for c in observed
    }


def test_duplicate_of_a_running_replica_is_removed_and_the_running_one_kept() -> None:
    """Two containers of one replica: the running one stays, whatever the names' order."""
    running = container(state="running", container_id="b", name="zzz")
    stopped = container(state="exited", exit_code=1, finished_at=1.0, container_id="a", name="aaa")
    tasks, look_again = planned([spec()], [stopped, running], RestartBook(), NOW)
    assert tasks == [Remove(stopped, "duplicate of a replica that already runs")]
    assert look_again is None


def test_duplicates_that_all_run_keep_the_first_by_name() -> None:
    """Among equally running duplicates the choice is stable: the first name is kept."""
    first = container(container_id="2", name="web.0.a")
    second = container(container_id="1", name="web.0.b")
    for observed in ([first, second], [second, first]):
        tasks, _ = planned([spec()], observed, RestartBook(), NOW)
        assert tasks == [Remove(second, "duplicate of a replica that already runs")]


def test_created_container_is_started() -> None:
    """A container that was created but never started is started, with no backoff."""
    created = container(state="created")
    tasks, look_again = planned([spec()], [created], RestartBook(), NOW)
    assert tasks == [Start(created, "created, not yet started")]
    assert look_again is None


@pytest.mark.parametrize("state", ["running", "paused", "restarting"])
def test_live_states_are_left_alone(state: str) -> None:
    """Only created, exited and dead containers are started."""
    assert planned([spec()], [container(state=state)], RestartBook(), NOW) == ([], None)


def test_starts_come_after_removes_and_creates() -> None:
    """Task order is removes, then creates, then starts."""
    observed = [container("web", 0, state="created"), container("db", 0)]
    tasks, _ = planned([spec("web", 0), spec("web", 1)], observed, RestartBook(), NOW)
    assert kinds(tasks) == ["Remove", "Create", "Start"]


def test_phases_removes_beside_creates_then_fixed_ports_then_starts() -> None:
    """Removes run beside the creates that cannot clash with them; a create that needs a
    fixed host port waits for the removes (one may hold the port); starts and stops
    come last."""
    fixed = spec("web", 1)
    fixed.ports.append(pb.PortMapping(container_port=80, host_port=8080, protocol="tcp"))
    job = spec("job", 0)
    job.stopped = True
    stale = container("web", 0, "0ld0ld00")
    created = container("web", 2, state="created")
    running_job = container("job", 0)
    desired = [spec("web", 0), fixed, spec("web", 2), job]
    result = plan(desired, [stale, created, running_job], RestartBook(), NOW)
    assert result.phases == (
        (Remove(stale, "replaced by template aaaa1111"), Create(spec("web", 0))),
        (Create(fixed),),
        (Stop(running_job, "its job is over"), Start(created, "created, not yet started")),
    )
    assert result.look_again is None


def test_only_keeps_the_phases_and_when_to_look_again() -> None:
    """Filtering a plan keeps each task in its phase and the time to look again."""
    stopped = exited(finished_at=NOW)
    result = plan(
        [spec("web", 0), spec("web", 1)], [stopped, container("db", 0)], RestartBook(), NOW
    )
    kept = result.only(lambda task: not isinstance(task, Remove))
    assert kept.phases == ((Create(spec("web", 1)),), (), ())
    assert kept.look_again == result.look_again == NOW + 1


# ------------------------------------------------------------------ restart policies


def test_policy_no_never_restarts() -> None:
    """``no``: a stopped container stays stopped, and nothing waits on a backoff."""
    for code in (0, 1):
        assert planned([spec()], [exited(restart="no", exit_code=code)], RestartBook(), NOW) == (
            [],
            None,
        )


def test_policy_always_restarts_after_exit_0() -> None:
    """``always`` restarts a container that exited cleanly."""
    stopped = exited(restart="always", exit_code=0)
    tasks, _ = planned([spec()], [stopped], RestartBook(), NOW)
    assert tasks == [Start(stopped, "restart 1 (exit code 0)")]


@pytest.mark.parametrize(("exit_code", "oom_killed"), [(1, False), (137, True), (0, True)])
def test_policy_on_failure_restarts_after_a_failure(exit_code: int, oom_killed: bool) -> None:
    """``on-failure`` restarts after a non-zero exit code or an OOM kill."""
    stopped = exited(restart="on-failure", exit_code=exit_code, oom_killed=oom_killed)
    tasks, _ = planned([spec()], [stopped], RestartBook(), NOW)
    assert tasks == [Start(stopped, f"restart 1 (exit code {exit_code})")]


def test_policy_on_failure_leaves_a_clean_exit() -> None:
    """``on-failure`` does not restart a container that exited 0 and was not OOM-killed."""
    stopped = exited(restart="on-failure", exit_code=0)
    assert planned([spec()], [stopped], RestartBook(), NOW) == ([], None)


def test_on_failure_2_stops_after_two_restarts() -> None:
    """``on-failure:2`` restarts twice (counted in the RestartBook), then gives up."""
    stopped = exited(restart="on-failure:2")
    book = RestartBook()
    reasons = []
    for _ in range(4):
        tasks, look_again = planned([spec()], [stopped], book, NOW)
        assert look_again is None
        for task in tasks:
            assert isinstance(task, Start)
            reasons.append(task.reason)
            book.record(task.container, Backoff())
    assert reasons == ["restart 1 (exit code 1)", "restart 2 (exit code 1)"]
    assert book.count(stopped.container_id) == 2


def test_dead_container_is_restarted_like_an_exited_one() -> None:
    """``dead`` counts as stopped for the restart policy."""
    dead = dataclasses.replace(exited(), state="dead")
    tasks, _ = planned([spec()], [dead], RestartBook(), NOW)
    assert tasks == [Start(dead, "restart 1 (exit code 1)")]


# ------------------------------------------------------------------ backoff


def test_restart_is_held_until_finished_at_plus_delay() -> None:
    """A restart waits ``delay(restarts)`` after the exit; ``look_again`` is that time."""
    book = RestartBook({"web-0-aaaa1111-exited": 2}, {"web-0-aaaa1111-exited": 2})  # 4 s next
    stopped = exited(finished_at=NOW - 1)
    tasks, look_again = planned([spec()], [stopped], book, NOW)
    assert tasks == []
    assert look_again == NOW + 3
    assert planned([spec()], [stopped], book, NOW + 2.999) == ([], NOW + 3)
    tasks, look_again = planned([spec()], [stopped], book, NOW + 3)
    assert tasks == [Start(stopped, "restart 3 (exit code 1)")]
    assert look_again is None


def test_look_again_is_the_earliest_due_restart() -> None:
    """With several restarts held back, ``look_again`` is the earliest of them."""
    first = container("web", 0, state="exited", exit_code=1, finished_at=NOW - 0.5)
    second = container("web", 1, state="exited", exit_code=1, finished_at=NOW - 0.75)
    backoff = Backoff(initial=1.0)
    tasks, look_again = planned(
        [spec("web", 0), spec("web", 1)], [first, second], RestartBook(), NOW, backoff
    )
    assert tasks == []
    assert look_again == NOW + 0.25


def test_held_restart_does_not_hold_other_tasks() -> None:
    """A backoff delays only its own restart; other replicas are still created."""
    stopped = exited(finished_at=NOW)
    tasks, look_again = planned([spec("web", 0), spec("web", 1)], [stopped], RestartBook(), NOW)
    assert tasks == [Create(spec("web", 1))]
    assert look_again == NOW + 1


def test_restart_without_finish_time_is_due_at_once() -> None:
    """An exited container with no finish time (FinishedAt "0001-01-01T00:00:00Z" is read
    as None) is restarted now, not postponed to ``now + delay`` on every round."""
    stopped = exited(finished_at=None)
    tasks, look_again = planned([spec()], [stopped], RestartBook(), NOW)
    assert tasks == [Start(stopped, "restart 1 (exit code 1)")]
    assert look_again is None


# ------------------------------------------------------------------ property: convergence

APPS = ["api", "web"]
HASHES = ["aaaa1111", "bbbb2222"]
STATES = ["created", "running", "paused", "restarting", "exited", "dead"]
POLICIES = ["no", "always", "on-failure", "on-failure:1"]


@st.composite
def desired_st(draw: st.DrawFn) -> list[pb.ContainerSpec]:
    keys = draw(
        st.lists(st.tuples(st.sampled_from(APPS), st.integers(0, 3)), max_size=6, unique=True)
    )
    found = [
        spec(app, slot, draw(st.sampled_from(HASHES)), restart=draw(st.sampled_from(POLICIES)))
        for app, slot in keys
    ]
    for each in found:
        if draw(st.booleans()):  # a fixed host port (its create waits for the removes)
            each.ports.append(pb.PortMapping(container_port=80, host_port=8000 + each.slot))
    return found


@st.composite
def observed_st(draw: st.DrawFn) -> list[ObservedContainer]:
    count = draw(st.integers(0, 8))
    return [
        container(
            draw(st.sampled_from([*APPS, "db"])),
            draw(st.integers(0, 3)),
            draw(st.sampled_from([*HASHES, "cccc3333"])),
            state=draw(st.sampled_from(STATES)),
            restart=draw(st.sampled_from(POLICIES)),
            exit_code=draw(st.sampled_from([0, 1, 137])),
            oom_killed=draw(st.booleans()),
            finished_at=draw(st.one_of(st.none(), st.floats(0, 2 * NOW))),
            container_id=f"c{i}",
            name=f"n{draw(st.integers(0, 3))}",
        )
        for i in range(count)
    ]


def apply(tasks: list[Task], observed: list[ObservedContainer]) -> list[ObservedContainer]:
    """A host that does what it is told: removes drop, creates run, starts run."""
    host = {c.container_id: c for c in observed}
    new_ids = (f"new{i}" for i in itertools.count())
    for task in tasks:
        if isinstance(task, Remove):
            assert task.container.container_id in host, "removes a container that is not there"
            del host[task.container.container_id]
        elif isinstance(task, Create):
            cid = next(new_ids)
            host[cid] = container(
                task.spec.app,
                task.spec.slot,
                task.spec.spec_hash,
                restart=task.spec.restart,
                container_id=cid,
            )
        else:
            assert task.container.container_id in host, "starts a container that is not there"
            host[task.container.container_id] = dataclasses.replace(
                host[task.container.container_id], state="running"
            )
    return list(host.values())


@settings(max_examples=300, deadline=None)
@given(
    desired_st(),
    observed_st(),
    st.dictionaries(st.sampled_from(["c0", "c1", "c2"]), st.integers(0, 3)),
)
def test_property_applying_a_plan_converges(
    desired: list[pb.ContainerSpec], observed: list[ObservedContainer], counts: dict[str, int]
) -> None:
    """After the planned tasks run, a second plan has nothing to remove or create, and each
    desired container (a slot and a template) exists exactly once, and nothing else."""
    tasks, _ = planned(desired, observed, RestartBook(dict(counts)), NOW)
    after = apply(tasks, observed)

    keys = [c.key for c in after]
    assert len(keys) == len(set(keys)), "two containers for one replica and template"
    assert set(keys) == {(s.app, s.slot, s.spec_hash) for s in desired}

    again, _ = planned(desired, after, RestartBook(dict(counts)), NOW)
    assert not [t for t in again if isinstance(t, Remove | Create)], again


@settings(max_examples=300, deadline=None)
@given(desired_st(), observed_st())
def test_property_each_task_is_in_its_phase(
    desired: list[pb.ContainerSpec], observed: list[ObservedContainer]
) -> None:
    """Three phases: removes and port-free creates, then fixed-port creates, then starts
    and stops; every task in exactly one of them."""
    result = plan(desired, observed, RestartBook(), NOW)
    first, second, third = result.phases
    assert all(isinstance(t, Remove | Create) for t in first)
    assert all(isinstance(t, Create) and t.spec.ports for t in second)
    assert all(isinstance(t, Start | Stop) for t in third)
    assert not [
        t for t in first if isinstance(t, Create) and any(p.host_port for p in t.spec.ports)
    ]
    assert len(result.tasks) == len(first) + len(second) + len(third)


@settings(max_examples=300, deadline=None)
@given(desired_st(), observed_st())
def test_property_never_two_containers_per_replica_at_any_step(
    desired: list[pb.ContainerSpec], observed: list[ObservedContainer]
) -> None:
    """Applying the tasks one by one, the replicas kept or created are never doubled: a
    create only comes for a replica with no kept container."""
    tasks, _ = planned(desired, observed, RestartBook(), NOW)
    removed = {t.container.container_id for t in tasks if isinstance(t, Remove)}
    kept = [c.key for c in observed if c.container_id not in removed]
    created = [(t.spec.app, t.spec.slot, t.spec.spec_hash) for t in tasks if isinstance(t, Create)]
    assert len(kept) == len(set(kept))
    assert set(kept).isdisjoint(created)
    assert len(created) == len(set(created))
    started = [t.container.container_id for t in tasks if isinstance(t, Start)]
    assert not removed.intersection(started)
