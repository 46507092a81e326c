"""Tests of fleet.agent.reconcile: the order of tasks, duplicates, restart policies and
their backoff, and the property that applying a plan leaves nothing to remove or create."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.agent.reconcile import (
    Backoff,
    Create,
    Remove,
    RestartBook,
    Start,
    Task,
    plan,
    restart_wanted,
)
from fleet.agent.runtime import ObservedContainer, container_name
from fleet.proto import fleet_pb2 as pb

NOW = 1000.0


def spec(
    app: str = "web", slot: int = 0, spec_hash: str = "aaaa1111", *, restart: str = "always"
) -> pb.ContainerSpec:
    return pb.ContainerSpec(app=app, slot=slot, revision=1, spec_hash=spec_hash, restart=restart)


def container(
    app: str = "web",
    slot: int = 0,
    spec_hash: str = "aaaa1111",
    *,
    state: str = "running",
    restart: str = "always",
    exit_code: int = 0,
    oom_killed: bool = False,
    finished_at: float | None = None,
    container_id: str | None = None,
    name: str | None = None,
) -> ObservedContainer:
    return ObservedContainer(
        container_id=container_id or f"{app}-{slot}-{spec_hash}-{state}",
        name=name or container_name(app, slot, spec_hash),
        app=app,
        slot=slot,
        revision=1,
        spec_hash=spec_hash,
        restart=restart,
        stop_grace=10.0,
        state=state,
        exit_code=exit_code,
        oom_killed=oom_killed,
        started_at="",
        finished_at=finished_at,
        ports=(),
    )


def exited(
    *,
    restart: str = "always",
    exit_code: int = 1,
    oom_killed: bool = False,
    finished_at: float | None = NOW - 3600,
) -> ObservedContainer:
    """A stopped replica of web.0 that exited long ago, so no backoff holds it."""
    return container(
        state="exited",
        restart=restart,
        exit_code=exit_code,
        oom_killed=oom_killed,
        finished_at=finished_at,
    )


def kinds(tasks: list[Task]) -> list[str]:
    return [type(t).__name__ for t in tasks]


# ------------------------------------------------------------------ removes and creates


def test_matching_running_container_needs_nothing() -> None:
    """A running container of the desired template is left alone."""
    assert plan([spec()], [container()], RestartBook(), NOW) == ([], None)


def test_missing_replicas_are_created_in_order() -> None:
    """Every desired replica without a container gets one, in (app, slot) order."""
    desired = [spec("web", 2), spec("api", 0), spec("web", 0), spec("web", 1)]
    tasks, look_again = plan(desired, [container("web", 1)], RestartBook(), NOW)
    assert tasks == [Create(spec("api", 0)), Create(spec("web", 0)), Create(spec("web", 2))]
    assert look_again is None


def test_stale_containers_are_removed_before_creates() -> None:
    """Containers no longer desired, or of another template, go first, then the creates."""
    old = container("web", 0, "0ld0ld00")
    gone = container("db", 0)
    desired = [spec("web", 0, "new0new0"), spec("web", 1, "new0new0")]
    tasks, _ = plan(desired, [old, gone], RestartBook(), NOW)
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
    tasks, look_again = plan([spec("web", 0, "new0new0")], [stale], RestartBook(), NOW)
    assert tasks == [
        Remove(stale, "replaced by template new0new0"),
        Create(spec("web", 0, "new0new0")),
    ]
    assert look_again is None


def test_nothing_desired_removes_everything() -> None:
    """An empty desired set removes every fleet container on the host."""
    observed = [container("web", 0), container("web", 1, state="exited")]
    tasks, _ = plan([], observed, RestartBook(), NOW)
    assert kinds(tasks) == ["Remove", "Remove"]
    assert {t.container.container_id for t in tasks if isinstance(t, Remove)} == {
        c.container_id for c in observed
    }


def test_duplicate_of_a_running_replica_is_removed_and_the_running_one_kept() -> None:
    """Two containers of one replica: the running one stays, whatever the names' order."""
    running = container(state="running", container_id="b", name="zzz")
    stopped = container(state="exited", exit_code=1, finished_at=1.0, container_id="a", name="aaa")
    tasks, look_again = plan([spec()], [stopped, running], RestartBook(), NOW)
    assert tasks == [Remove(stopped, "duplicate of a replica that already runs")]
    assert look_again is None


def test_duplicates_that_all_run_keep_the_first_by_name() -> None:
    """Among equally running duplicates the choice is stable: the first name is kept."""
    first = container(container_id="2", name="web.0.a")
    second = container(container_id="1", name="web.0.b")
    for observed in ([first, second], [second, first]):
        tasks, _ = plan([spec()], observed, RestartBook(), NOW)
        assert tasks == [Remove(second, "duplicate of a replica that already runs")]


def test_created_container_is_started() -> None:
    """A container that was created but never started is started, with no backoff."""
    created = container(state="created")
    tasks, look_again = plan([spec()], [created], RestartBook(), NOW)
    assert tasks == [Start(created, "created, not yet started")]
    assert look_again is None


@pytest.mark.parametrize("state", ["running", "paused", "restarting"])
def test_live_states_are_left_alone(state: str) -> None:
    """Only created, exited and dead containers are started."""
    assert plan([spec()], [container(state=state)], RestartBook(), NOW) == ([], None)


def test_starts_come_after_removes_and_creates() -> None:
    """Task order is removes, then creates, then starts."""
    observed = [container("web", 0, state="created"), container("db", 0)]
    tasks, _ = plan([spec("web", 0), spec("web", 1)], observed, RestartBook(), NOW)
    assert kinds(tasks) == ["Remove", "Create", "Start"]


# ------------------------------------------------------------------ restart policies


@pytest.mark.parametrize(
    ("policy", "exit_code", "oom_killed", "restarts", "wanted"),
    [
        ("no", 0, False, 0, False),
        ("no", 1, False, 0, False),
        ("no", 137, True, 0, False),
        ("always", 0, False, 0, True),
        ("always", 1, False, 0, True),
        ("always", 0, False, 10_000, True),
        ("on-failure", 0, False, 0, False),
        ("on-failure", 1, False, 0, True),
        ("on-failure", 0, True, 0, True),  # OOM-killed counts as a failure
        ("on-failure", 1, False, 10_000, True),  # no limit
        ("on-failure:2", 1, False, 0, True),
        ("on-failure:2", 1, False, 1, True),
        ("on-failure:2", 1, False, 2, False),
        ("on-failure:2", 0, False, 0, False),
        ("on-failure:0", 1, False, 0, False),
    ],
)
def test_restart_wanted(
    policy: str, exit_code: int, oom_killed: bool, restarts: int, wanted: bool
) -> None:
    """Docker's restart policies, decided from the exit and the restarts done so far."""
    assert restart_wanted(policy, exit_code, oom_killed, restarts) is wanted


def test_policy_no_never_restarts() -> None:
    """``no``: a stopped container stays stopped, and nothing waits on a backoff."""
    for code in (0, 1):
        assert plan([spec()], [exited(restart="no", exit_code=code)], RestartBook(), NOW) == (
            [],
            None,
        )


def test_policy_always_restarts_after_exit_0() -> None:
    """``always`` restarts a container that exited cleanly."""
    stopped = exited(restart="always", exit_code=0)
    tasks, _ = plan([spec()], [stopped], RestartBook(), NOW)
    assert tasks == [Start(stopped, "restart 1 (exit code 0)")]


@pytest.mark.parametrize(("exit_code", "oom_killed"), [(1, False), (137, True), (0, True)])
def test_policy_on_failure_restarts_after_a_failure(exit_code: int, oom_killed: bool) -> None:
    """``on-failure`` restarts after a non-zero exit code or an OOM kill."""
    stopped = exited(restart="on-failure", exit_code=exit_code, oom_killed=oom_killed)
    tasks, _ = plan([spec()], [stopped], RestartBook(), NOW)
    assert tasks == [Start(stopped, f"restart 1 (exit code {exit_code})")]


def test_policy_on_failure_leaves_a_clean_exit() -> None:
    """``on-failure`` does not restart a container that exited 0 and was not OOM-killed."""
    stopped = exited(restart="on-failure", exit_code=0)
    assert plan([spec()], [stopped], RestartBook(), NOW) == ([], None)


def test_on_failure_2_stops_after_two_restarts() -> None:
    """``on-failure:2`` restarts twice (counted in the RestartBook), then gives up."""
    stopped = exited(restart="on-failure:2")
    book = RestartBook()
    reasons = []
    for _ in range(4):
        tasks, look_again = plan([spec()], [stopped], book, NOW)
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
    tasks, _ = plan([spec()], [dead], RestartBook(), NOW)
    assert tasks == [Start(dead, "restart 1 (exit code 1)")]


def test_restart_book() -> None:
    """The book counts restarts per container id and forgets containers that are gone."""
    book = RestartBook()
    a = dataclasses.replace(exited(), container_id="a")
    b = dataclasses.replace(exited(), container_id="b")
    assert book.count("a") == 0
    book.record(a, Backoff())
    book.record(a, Backoff())
    book.record(b, Backoff())
    assert (book.count("a"), book.count("b")) == (2, 1)
    book.forget_except(["b", "c"])
    assert book.counts == {"b": 1} and book.streaks == {"b": 1}


def test_a_long_run_resets_the_backoff_but_not_the_restart_count() -> None:
    """After a run of ``reset_after`` the next restart waits ``initial`` again, while
    ``on-failure:N`` still counts every restart."""
    backoff = Backoff(initial=1.0, cap=300.0, reset_after=600.0)
    book = RestartBook({"c": 5}, {"c": 5})
    short = dataclasses.replace(
        exited(), container_id="c", started_epoch=NOW - 20, finished_at=NOW - 10
    )
    long = dataclasses.replace(short, started_epoch=NOW - 1000)
    assert book.streak(short, backoff) == 5 and book.streak(long, backoff) == 0
    tasks, look_again = plan([spec()], [short], book, NOW, backoff)
    assert tasks == [] and look_again == NOW - 10 + 32  # 1 s * 2**5
    tasks, _ = plan([spec()], [long], book, NOW, backoff)
    assert [t.reason for t in tasks] == ["restart 6 (exit code 1)"]  # due at once
    book.record(long, backoff)
    assert (book.count("c"), book.streaks["c"]) == (6, 1)


# ------------------------------------------------------------------ backoff


def test_restart_is_held_until_finished_at_plus_delay() -> None:
    """A restart waits ``delay(restarts)`` after the exit; ``look_again`` is that time."""
    book = RestartBook({"web-0-aaaa1111-exited": 2}, {"web-0-aaaa1111-exited": 2})  # 4 s next
    stopped = exited(finished_at=NOW - 1)
    tasks, look_again = plan([spec()], [stopped], book, NOW)
    assert tasks == []
    assert look_again == NOW + 3
    assert plan([spec()], [stopped], book, NOW + 2.999) == ([], NOW + 3)
    tasks, look_again = plan([spec()], [stopped], book, NOW + 3)
    assert tasks == [Start(stopped, "restart 3 (exit code 1)")]
    assert look_again is None


def test_look_again_is_the_earliest_due_restart() -> None:
    """With several restarts held back, ``look_again`` is the earliest of them."""
    first = container("web", 0, state="exited", exit_code=1, finished_at=NOW - 0.5)
    second = container("web", 1, state="exited", exit_code=1, finished_at=NOW - 0.75)
    backoff = Backoff(initial=1.0)
    tasks, look_again = plan(
        [spec("web", 0), spec("web", 1)], [first, second], RestartBook(), NOW, backoff
    )
    assert tasks == []
    assert look_again == NOW + 0.25


def test_held_restart_does_not_hold_other_tasks() -> None:
    """A backoff delays only its own restart; other replicas are still created."""
    stopped = exited(finished_at=NOW)
    tasks, look_again = plan([spec("web", 0), spec("web", 1)], [stopped], RestartBook(), NOW)
    assert tasks == [Create(spec("web", 1))]
    assert look_again == NOW + 1


def test_restart_without_finish_time_is_due_at_once() -> None:
    """An exited container with no finish time (FinishedAt "0001-01-01T00:00:00Z" is read
    as None) is restarted now, not postponed to ``now + delay`` on every round."""
    stopped = exited(finished_at=None)
    tasks, look_again = plan([spec()], [stopped], RestartBook(), NOW)
    assert tasks == [Start(stopped, "restart 1 (exit code 1)")]
    assert look_again is None


def test_backoff_delay_doubles_and_caps() -> None:
    """``delay(n) = initial * 2**n``, never above ``cap``, even for huge n."""
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(10)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert backoff.delay(10_000) == 300.0
    custom = Backoff(initial=0.5, cap=3.0)
    assert [custom.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert isinstance(custom.delay(0), float)


@given(st.integers(0, 10**6))
def test_backoff_is_monotonic(restarts: int) -> None:
    """More restarts never mean a shorter delay, and the cap always holds."""
    backoff = Backoff()
    assert backoff.delay(restarts) <= backoff.delay(restarts + 1) <= backoff.cap


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
    return [
        spec(app, slot, draw(st.sampled_from(HASHES)), restart=draw(st.sampled_from(POLICIES)))
        for app, slot in keys
    ]


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
    tasks, _ = plan(desired, observed, RestartBook(dict(counts)), NOW)
    after = apply(tasks, observed)

    keys = [c.key for c in after]
    assert len(keys) == len(set(keys)), "two containers for one replica and template"
    assert set(keys) == {(s.app, s.slot, s.spec_hash) for s in desired}

    again, _ = plan(desired, after, RestartBook(dict(counts)), NOW)
    assert not [t for t in again if isinstance(t, Remove | Create)], again


@settings(max_examples=300, deadline=None)
@given(desired_st(), observed_st())
def test_property_never_two_containers_per_replica_at_any_step(
    desired: list[pb.ContainerSpec], observed: list[ObservedContainer]
) -> None:
    """Applying the tasks one by one, the replicas kept or created are never doubled: a
    create only comes for a replica with no kept container."""
    tasks, _ = plan(desired, observed, RestartBook(), NOW)
    removed = {t.container.container_id for t in tasks if isinstance(t, Remove)}
    kept = [c.key for c in observed if c.container_id not in removed]
    created = [(t.spec.app, t.spec.slot, t.spec.spec_hash) for t in tasks if isinstance(t, Create)]
    assert len(kept) == len(set(kept))
    assert set(kept).isdisjoint(created)
    assert len(created) == len(set(created))
    started = [t.container.container_id for t in tasks if isinstance(t, Start)]
    assert not removed.intersection(started)
