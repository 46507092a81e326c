"""Tests of the slots of global apps and jobs (``fleet.controlplane.modes``): each rule
by example, then hypothesis properties over generated pools and job histories.

global: one slot per ready, connected, matching host; a slot stays with its host for
life, and goes when the host is gone, stops matching, or is drained with
``--include-global`` and holds nothing else; new slots never reuse a number.
job: at most ``parallelism`` unfinished slots, ``completions`` successes complete it,
``backoff_limit`` failures fail it, and finished containers are kept ``ttl`` seconds.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet._time import epoch, iso_at
from fleet.controlplane.availability import Observed
from fleet.controlplane.modes import global_slots, job_progress, job_slots
from fleet.spec import AppSpec, load_documents
from fleet.store import ClusterState, Versioned
from fleet.store.records import (
    AppRecord,
    ContainerReport,
    HostDrain,
    HostRecord,
    HostState,
    JobRecord,
    JobRun,
    LiveRecord,
    ReplicaRecord,
    ResourceAmounts,
)

T0 = 1_800_000_000.0  # a moment, in epoch seconds (whole: stamps keep milliseconds)
HOST_STATES: tuple[HostState, ...] = ("ready", "cordoned", "draining", "drained", "maintenance")


@functools.cache
def spec(text: str, name: str = "agents") -> AppSpec:
    [parsed] = load_documents(f"name: {name}\nimage: img:v1\n{text}", "app.yaml")
    return parsed


def global_spec(constraint: str = "") -> AppSpec:
    return spec("mode: global\n" + (f"constraints: [{constraint!r}]\n" if constraint else ""))


def job_spec(
    completions: int = 1,
    parallelism: int = 1,
    backoff_limit: int = 6,
    ttl: int = 60,
    restart: str = "on-failure",
) -> AppSpec:
    return spec(
        f"mode: job\ncompletions: {completions}\nparallelism: {parallelism}\n"
        f"backoff_limit: {backoff_limit}\nttl_after_finished: {ttl}\nrestart: {restart!r}\n",
        name="batch",
    )


# ------------------------------------------------------------------ a pool, described


@dataclass(frozen=True)
class Host:
    state: HostState = "ready"
    alive: bool = True
    zone: str | None = "a"  # its agent's label zone, if any (constraints see agent.zone)
    include_global: bool = False  # drained with --include-global (when draining/drained)
    others: bool = False  # runs a replica of a replicated app


def pool(hosts: Mapping[str, Host], slots: Mapping[int, str], app: AppSpec) -> ClusterState:
    """A state of ``hosts`` in which the global app ``app`` has ``slots`` (slot -> host)."""
    state = ClusterState(revision=100)
    for name, app_spec in ((app.name, app), ("web", spec("replicas: 1\n", name="web"))):
        record = AppRecord(spec=app_spec, generation=1, revision=1, created_at="t", updated_at="t")
        state.apps[name] = Versioned(record, 20)
    for host_id, host in hosts.items():
        drain = None
        if host.state in ("draining", "drained"):
            drain = HostDrain(started_at="t", include_global=host.include_global)
        state.hosts[host_id] = Versioned(
            HostRecord(
                host_id=host_id,
                capacity=ResourceAmounts(cpu=4.0, memory=1 << 30),
                labels={"zone": host.zone} if host.zone else {},
                state=host.state,
                drain=drain,
                registered_at="t",
            ),
            10,
        )
        if host.alive:
            state.alive[host_id] = Versioned(LiveRecord(server="cp1", connected_at="t"), 11)
        if host.others:
            _place(state, "web", len(state.replicas), host_id)
    for slot, host_id in slots.items():
        _place(state, app.name, slot, host_id)
    return state


def _place(state: ClusterState, app: str, slot: int, host: str) -> None:
    state.replicas[(app, slot)] = Versioned(
        ReplicaRecord(app=app, slot=slot, revision=1, host=host, resources=ResourceAmounts()),
        50 + slot,
    )


def replicas(state: ClusterState, app: str) -> dict[int, ReplicaRecord]:
    return {slot: v.value for slot, v in state.replica_slots(app).items()}


def step(hosts: Mapping[str, Host], slots: Mapping[int, str], app: AppSpec) -> dict[int, str]:
    """The app's slots (slot -> host) after one planning step."""
    state = pool(hosts, slots, app)
    result = global_slots(state, app, replicas(state, app.name))
    return {**{s: slots[s] for s in result.keep}, **result.new}


# ------------------------------------------------------------------ global, by example


def test_a_new_global_app_gets_a_slot_on_each_ready_connected_host() -> None:
    hosts = {"h1": Host(), "h2": Host(), "h3": Host(alive=False), "h4": Host(state="cordoned")}
    state = pool(hosts, {}, global_spec())
    result = global_slots(state, global_spec(), {})
    assert result.keep == set()
    assert result.new == {0: "h1", 1: "h2"}


def test_a_slot_stays_with_its_host_whatever_the_host_does() -> None:
    """Cordoned, disconnected, in maintenance or drained without --include-global: the
    slot stays (it is never moved; it stops with the host)."""
    hosts = {
        "h1": Host(state="cordoned"),
        "h2": Host(alive=False),
        "h3": Host(state="maintenance"),
        "h4": Host(state="drained"),
    }
    slots = {0: "h1", 1: "h2", 2: "h3", 3: "h4"}
    assert step(hosts, slots, global_spec()) == slots


def test_a_slot_goes_when_its_host_is_gone_or_stops_matching() -> None:
    hosts = {"h1": Host(zone="a"), "h2": Host(zone="b")}
    app = global_spec("agent.zone=a")
    state = pool(hosts, {0: "h1", 1: "h2", 2: "gone"}, app)
    result = global_slots(state, app, replicas(state, app.name))
    assert result.keep == {0}
    assert result.new == {}


def test_a_host_drained_with_include_global_loses_its_slot_once_nothing_else_is_there() -> None:
    busy = {"h1": Host(state="draining", include_global=True, others=True)}
    assert step(busy, {0: "h1"}, global_spec()) == {0: "h1"}
    empty = {"h1": Host(state="draining", include_global=True)}
    assert step(empty, {0: "h1"}, global_spec()) == {}
    drained = {"h1": Host(state="drained", include_global=True)}
    assert step(drained, {0: "h1"}, global_spec()) == {}


def test_two_slots_on_one_host_keep_the_lowest() -> None:
    state = pool({"h1": Host()}, {3: "h1", 1: "h1"}, global_spec())
    result = global_slots(state, global_spec(), replicas(state, global_spec().name))
    assert result.keep == {1}
    assert result.new == {}


def test_new_slots_take_the_lowest_numbers_no_slot_had() -> None:
    """Not even one being dropped in the same step: its record is deleted by this step."""
    hosts = {"h1": Host(), "h2": Host(), "h3": Host(), "h4": Host(zone="b")}
    app = global_spec("agent.zone=a")
    state = pool(hosts, {0: "h4", 2: "h1"}, app)
    result = global_slots(state, app, replicas(state, app.name))
    assert result.keep == {2}
    assert result.new == {1: "h2", 3: "h3"}


# ------------------------------------------------------------------ global, properties

HOST_IDS = ("h0", "h1", "h2", "h3", "h4")
hosts_st = st.dictionaries(
    st.sampled_from(HOST_IDS),
    st.builds(
        Host,
        state=st.sampled_from(HOST_STATES),
        alive=st.booleans(),
        zone=st.sampled_from(["a", "b", None]),
        include_global=st.booleans(),
        others=st.booleans(),
    ),
    max_size=len(HOST_IDS),
)
slots_st = st.dictionaries(
    st.integers(0, 9), st.sampled_from([*HOST_IDS, "gone"]), max_size=len(HOST_IDS) + 2
)
constraint_st = st.sampled_from(["", "agent.zone=a", "agent.zone!=b", "agent.zone"])


def _matches(host: Host, constraint: str) -> bool:
    if not constraint:
        return True
    if constraint == "agent.zone":
        return host.zone is not None
    if constraint == "agent.zone=a":
        return host.zone == "a"
    return host.zone != "b"


@settings(max_examples=300, deadline=None)
@given(hosts=hosts_st, slots=slots_st, constraint=constraint_st)
def test_global_slots_properties(
    hosts: dict[str, Host], slots: dict[int, str], constraint: str
) -> None:
    app = global_spec(constraint)
    state = pool(hosts, slots, app)
    result = global_slots(state, app, replicas(state, app.name))

    assert result.keep <= set(slots)
    assert not set(result.new) & set(slots), "a slot number is reused in one step"
    after = {**{s: slots[s] for s in result.keep}, **result.new}
    assert len(set(after.values())) == len(after), "two slots on one host"
    for slot in result.keep:  # a kept slot's host is there and matches
        host = hosts.get(slots[slot])
        assert host is not None and _matches(host, constraint)
        drained = host.state in ("draining", "drained") and host.include_global
        assert not drained or host.others
    for host_id in result.new.values():  # a new slot's host is ready, connected, matching
        host = hosts[host_id]
        assert host.state == "ready" and host.alive and _matches(host, constraint)
    for host_id, host in hosts.items():  # and every such host has one
        if host.state == "ready" and host.alive and _matches(host, constraint):
            assert host_id in after.values()
    # A slot stays with its host for life: the first on a host that is there, matches
    # and is not emptied by a drain with --include-global stays.
    firsts = {h: min(s for s, on in slots.items() if on == h) for h in set(slots.values())}
    for host_id, slot in firsts.items():
        host = hosts.get(host_id)
        if host is None or not _matches(host, constraint):
            continue
        emptied = host.state in ("draining", "drained") and host.include_global
        if not emptied or host.others:
            assert slot in result.keep
    free = (n for n in itertools.count() if n not in slots)
    assert sorted(result.new) == [next(free) for _ in result.new]  # the lowest free numbers
    assert [result.new[s] for s in sorted(result.new)] == sorted(result.new.values())
    # One step settles it: the next finds nothing to change.
    assert step(hosts, after, app) == after


# ------------------------------------------------------------------ jobs, helpers


def report(
    slot: int,
    state: str,
    *,
    exit_code: int = 0,
    restarts: int = 0,
    container: str | None = None,
) -> ContainerReport:
    return ContainerReport(
        app="batch",
        slot=slot,
        revision=1,
        spec_hash="x",
        container_id=container or f"c{slot}",
        name=f"batch.{slot}",
        state=state,
        exit_code=exit_code,
        restarts=restarts,
    )


def job_replicas(*slots: int) -> dict[int, ReplicaRecord]:
    return {
        s: ReplicaRecord(app="batch", slot=s, revision=1, host="h1", resources=ResourceAmounts())
        for s in slots
    }


def seen(*reports: ContainerReport) -> Observed:
    return Observed({(r.slot, r.revision, "h1"): r for r in reports})


def running_job(**update: object) -> JobRecord:
    return JobRecord(app="batch", started_at=iso_at(T0)).model_copy(update=update)


# ------------------------------------------------------------------ job_progress, by example


def test_a_new_job_starts_its_record_now() -> None:
    job, events = job_progress(None, "batch", job_spec(), {}, seen(), T0)
    assert job == JobRecord(app="batch", started_at=iso_at(T0))
    assert events == []


def test_a_container_that_exits_0_is_a_success_stamped_once() -> None:
    app, existing = job_spec(completions=2), job_replicas(0, 1)
    observed = seen(report(0, "exited"), report(1, "running"))
    job, events = job_progress(None, "batch", app, existing, observed, T0)
    assert job.succeeded == {0: JobRun(exit_code=0, host="h1", finished_at=iso_at(T0))}
    assert job.exit_codes == {0: 0}
    assert (job.state, events) == ("running", [])
    again, _ = job_progress(job, "batch", app, existing, observed, T0 + 5)
    assert again.succeeded == job.succeeded  # not stamped again


def test_completions_complete_the_job() -> None:
    app, existing = job_spec(completions=2, parallelism=2), job_replicas(0, 1)
    observed = seen(report(0, "exited"), report(1, "exited"))
    job, events = job_progress(running_job(), "batch", app, existing, observed, T0 + 9)
    assert (job.state, job.finished_at) == ("complete", iso_at(T0 + 9))
    assert job.message == "2 of 2 completion(s) succeeded"
    assert events == [("job-complete", job.message)]


def test_failures_are_counted_per_container_and_reach_the_backoff_limit() -> None:
    """Each agent restart followed a failure; an ended container with a non-zero exit
    code is one more; a container's count never goes down."""
    app, existing = job_spec(backoff_limit=3), job_replicas(0)
    job, _ = job_progress(None, "batch", app, existing, seen(report(0, "running", restarts=1)), T0)
    assert (job.failures, job.state) == ({"c0": 1}, "running")
    ended = seen(report(0, "exited", exit_code=2, restarts=1))
    job, _ = job_progress(job, "batch", app, existing, ended, T0 + 1)
    assert (job.failures, job.exit_codes, job.state) == ({"c0": 2}, {0: 2}, "running")
    job, _ = job_progress(job, "batch", app, existing, seen(report(0, "running")), T0 + 2)
    assert job.failures == {"c0": 2}  # a report that says less does not lower it
    other = seen(report(0, "failed", exit_code=1, container="c9"))
    job, events = job_progress(job, "batch", app, existing, other, T0 + 3)
    assert (job.failures, job.state) == ({"c0": 2, "c9": 1}, "failed")
    assert job.message == "3 failure(s) reached backoff_limit 3; last exit codes [1]"
    assert events == [("job-failed", job.message)]


def test_backoff_limit_0_fails_on_the_first_failure() -> None:
    app, existing = job_spec(backoff_limit=0), job_replicas(0)
    ended = seen(report(0, "exited", exit_code=1))
    job, events = job_progress(None, "batch", app, existing, ended, T0)
    assert job.state == "failed" and [kind for kind, _ in events] == ["job-failed"]


def test_completion_wins_over_failures_in_the_same_step() -> None:
    app, existing = job_spec(completions=1, backoff_limit=1), job_replicas(0, 1)
    observed = seen(report(0, "exited"), report(1, "exited", exit_code=1))
    job, events = job_progress(None, "batch", app, existing, observed, T0)
    assert job.state == "complete" and [kind for kind, _ in events] == ["job-complete"]


def test_a_finished_job_stays_finished_and_says_nothing_more() -> None:
    app, existing = job_spec(backoff_limit=1), job_replicas(0)
    done = running_job(state="failed", finished_at=iso_at(T0), message="m")
    observed = seen(report(0, "exited"))
    job, events = job_progress(done, "batch", app, existing, observed, T0 + 1)
    assert (job.state, job.finished_at, job.message, events) == ("failed", iso_at(T0), "m", [])
    assert 0 in job.succeeded  # what the agents say is still recorded, for `describe`


def test_slots_without_a_report_change_nothing() -> None:
    app = job_spec()
    job, events = job_progress(running_job(), "batch", app, job_replicas(0), seen(), T0)
    assert (job, events) == (running_job(), [])


# ------------------------------------------------------------------ job_slots, by example


def test_a_running_job_starts_up_to_parallelism_lowest_slots_first() -> None:
    app = job_spec(completions=5, parallelism=2)
    assert job_slots(running_job(), app, {}, seen(), T0) == ({0, 1}, {0, 1}, set(), None)
    existing = job_replicas(0, 1)
    assert job_slots(running_job(), app, existing, seen(), T0) == ({0, 1}, set(), set(), None)


def test_a_success_makes_room_for_the_next_slot() -> None:
    app = job_spec(completions=3, parallelism=2)
    job = running_job(succeeded={0: JobRun(exit_code=0, host="h1", finished_at="t")})
    wanted, start, stop, _ = job_slots(job, app, job_replicas(0, 1), seen(), T0)
    assert (wanted, start, stop) == ({0, 1, 2}, {2}, set())


def test_a_slot_that_gave_up_is_dropped_then_started_anew() -> None:
    """restart no: an ended container gave up; on-failure: when the agent says failed."""
    for restart, state in (("no", "exited"), ("no", "dead"), ("on-failure:2", "failed")):
        app = job_spec(completions=2, parallelism=2, restart=restart)
        observed = seen(report(0, state, exit_code=1))
        wanted, start, _, _ = job_slots(running_job(), app, job_replicas(0, 1), observed, T0)
        assert (wanted, start) == ({1}, set()), restart
        wanted, start, _, _ = job_slots(running_job(), app, job_replicas(1), seen(), T0)
        assert (wanted, start) == ({0, 1}, {0}), restart


def test_an_exited_container_that_will_be_restarted_keeps_its_slot() -> None:
    app = job_spec(restart="on-failure")
    observed = seen(report(0, "exited", exit_code=1))
    assert job_slots(running_job(), app, job_replicas(0), observed, T0)[0] == {0}


def test_a_finished_job_stops_what_runs_and_keeps_everything_until_its_ttl() -> None:
    app = job_spec(completions=2, parallelism=2, ttl=60)
    done = running_job(
        state="failed",
        finished_at=iso_at(T0),
        succeeded={0: JobRun(exit_code=0, host="h1", finished_at="t")},
    )
    existing = job_replicas(0, 1)
    kept = job_slots(done, app, existing, seen(), T0 + 59)
    assert kept == ({0, 1}, set(), {1}, T0 + 60)
    assert job_slots(done, app, existing, seen(), T0 + 60) == (set(), set(), set(), None)


# ------------------------------------------------------------------ jobs, properties

OUTCOMES = ("none", "running", "exited", "exited-1", "failed", "dead")


@dataclass
class History:
    """A job driven as the controller drives it: each step, the agents report an
    outcome per container, then ``job_progress`` and ``job_slots`` decide."""

    app: AppSpec
    job: JobRecord | None = None
    existing: dict[int, ReplicaRecord] = field(default_factory=dict)
    containers: dict[int, str] = field(default_factory=dict)  # slot -> its container
    last: dict[str, str] = field(default_factory=dict)  # container -> its last outcome
    restarts: dict[str, int] = field(default_factory=dict)
    fresh: itertools.count[int] = field(default_factory=itertools.count)

    def reports(self, outcomes: list[str]) -> Observed:
        """The agents' reports: ``outcomes`` for the containers, by slot. A container
        running again after a failed exit was restarted (unless restart is no)."""
        found = []
        for (slot, container), outcome in zip(
            sorted(self.containers.items()), outcomes, strict=False
        ):
            if outcome == "none":
                continue
            before, self.last[container] = self.last.get(container), outcome
            if outcome == "running" and before == "exited-1" and self.app.restart.kind != "no":
                self.restarts[container] = self.restarts.get(container, 0) + 1
            state, _, code = outcome.partition("-")
            exit_code = 1 if code or state == "failed" else 0
            restarts = self.restarts.get(container, 0)
            found.append(
                report(slot, state, exit_code=exit_code, restarts=restarts, container=container)
            )
        return seen(*found)


jobs_st = st.builds(
    job_spec,
    completions=st.integers(1, 5),
    parallelism=st.integers(1, 3),
    backoff_limit=st.integers(0, 4),
    ttl=st.sampled_from([0, 30]),
    restart=st.sampled_from(["no", "on-failure", "on-failure:1"]),
)


@settings(max_examples=200, deadline=None)
@given(
    app=jobs_st,
    steps=st.lists(st.lists(st.sampled_from(OUTCOMES), min_size=5, max_size=5), max_size=12),
)
def test_job_properties_over_a_history(app: AppSpec, steps: list[list[str]]) -> None:
    history = History(app)
    clock = T0
    events: list[str] = []
    for outcomes in steps:
        clock += 10
        observed = history.reports(outcomes)
        before = history.job
        job, said = job_progress(before, "batch", app, history.existing, observed, clock)
        events += [kind for kind, _ in said]

        if before is not None:  # what is recorded stays recorded
            assert job.started_at == before.started_at
            assert all(job.succeeded.get(s) == run for s, run in before.succeeded.items())
            assert all(job.failures[c] >= n for c, n in before.failures.items())
            if before.state != "running":
                assert (job.state, job.finished_at, said) == (before.state, before.finished_at, [])
        assert set(job.succeeded) <= set(range(app.job_completions))
        if job.state == "running":
            assert len(job.succeeded) < app.job_completions
            assert job.failure_count < max(1, app.job_backoff_limit)
        elif before is None or before.state == "running":
            assert job.finished_at == iso_at(clock)
            assert said == [(f"job-{job.state}", job.message)]
        if job.state == "complete":
            assert len(job.succeeded) >= app.job_completions
        assert job_progress(job, "batch", app, history.existing, observed, clock + 1) == (job, [])

        wanted, start, stop, expires = job_slots(job, app, history.existing, observed, clock)
        assert start <= wanted and not start & set(history.existing)
        if job.state == "running":
            assert (stop, expires) == (set(), None)
            assert wanted <= set(history.existing) | set(range(app.job_completions))
            assert not start & set(job.succeeded)
            assert len(wanted - set(job.succeeded)) <= app.job_parallelism
            waiting = set(range(app.job_completions)) - wanted - set(job.succeeded)
            if len(wanted - set(job.succeeded)) < app.job_parallelism and waiting:
                # Room and work, yet nothing more: only a slot that gave up and is
                # dropped now (started again next step) may wait.
                gave_up = set(history.existing) - wanted
                assert waiting <= gave_up
        else:
            finished = epoch(job.finished_at)
            assert finished is not None
            if clock >= finished + app.job_ttl:
                assert (wanted, start, stop, expires) == (set(), set(), set(), None)
            else:
                assert wanted == set(history.existing) and not start
                assert stop == set(history.existing) - set(job.succeeded)
                assert expires == finished + app.job_ttl

        history.job = job
        history.existing = {
            s: r for s, r in history.existing.items() if s in wanted
        } | job_replicas(*start)
        history.containers = {s: c for s, c in history.containers.items() if s in wanted} | {
            s: f"c{next(history.fresh)}" for s in start
        }
    assert events in ([], ["job-complete"], ["job-failed"])
