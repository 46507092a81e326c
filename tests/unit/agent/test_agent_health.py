"""Tests of the health rule (``record``) and of when the next check runs
(``check_delay``): before a container's first pass it is checked sooner than every
interval, and those early checks never make it unhealthy any sooner than the checks at
the interval would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.health import HealthStatus, Prober, ProcessGone, check_delay, probe, record
from fleet.agent.runtime import ObservedContainer
from fleet.proto import fleet_pb2 as pb

START = 1_000.0


def health(interval: float = 1.0, retries: int = 2, start_period: float = 0.0) -> pb.HealthCheck:
    return pb.HealthCheck(
        kind="http",
        port=8080,
        path="/",
        interval_seconds=interval,
        timeout_seconds=1.0,
        retries=retries,
        start_period_seconds=start_period,
    )


def run(
    check: pb.HealthCheck, passes: Callable[[float], bool], until: float
) -> list[tuple[float, str]]:
    """The prober's loop on a fake clock: checks from the start until ``until`` seconds
    later, each passing if ``passes(seconds since the start)``; returns (seconds, status)
    after each check."""
    status, now, early, seen = HealthStatus("starting"), START, 0, []
    while now - START <= until:
        status = record(status, passes(now - START), "", now, START, check)
        seen.append((round(now - START, 3), status.status))
        now += check_delay(status, check, early, now)
        early += 1
    return seen


def first(seen: list[tuple[float, str]], status: str) -> float | None:
    return next((t for t, s in seen if s == status), None)


@pytest.mark.parametrize(("serves_at", "healthy_by"), [(0.0, 0.0), (0.05, 0.1), (0.25, 0.3)])
def test_a_container_is_healthy_soon_after_it_serves(serves_at: float, healthy_by: float) -> None:
    """A check that comes a moment too early is followed by others 0.1, 0.2, 0.4 s
    later, not a whole interval later."""
    seen = run(health(interval=1.0), lambda t: t >= serves_at, until=3.0)
    assert first(seen, "healthy") == healthy_by
    assert first(seen, "unhealthy") is None


def test_once_healthy_it_is_checked_every_interval() -> None:
    seen = run(health(interval=2.0), lambda t: True, until=7.0)
    assert [t for t, _ in seen] == [0.0, 2.0, 4.0, 6.0]


@pytest.mark.parametrize(
    ("interval", "retries"), [(1.0, 1), (1.0, 2), (1.0, 3), (2.0, 3), (0.5, 2)]
)
def test_early_checks_never_make_it_unhealthy_sooner(interval: float, retries: int) -> None:
    """A container that never passes is unhealthy at the (retries-1)-th interval after
    its first check, as with checks at the interval only (with one retry, at once)."""
    seen = run(health(interval=interval, retries=retries), lambda t: False, until=10.0)
    assert first(seen, "unhealthy") == pytest.approx((retries - 1) * interval)
    if retries > 1:
        assert len([t for t, _ in seen if t < interval]) > 1  # checked early meanwhile


def test_start_period_failures_still_do_not_count() -> None:
    seen = run(health(interval=1.0, retries=2, start_period=3.0), lambda t: False, until=6.0)
    unhealthy = first(seen, "unhealthy")
    assert unhealthy is not None and 3.0 < unhealthy <= 5.0


def test_a_failure_after_being_healthy_counts_at_the_interval() -> None:
    """Healthy, then failing: checked every interval (no early checks), unhealthy after
    retries failures in a row."""
    seen = run(health(interval=1.0, retries=2), lambda t: t < 2.5, until=6.0)
    assert [t for t, _ in seen] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert first(seen, "unhealthy") == 4.0


@given(
    serves_at=st.none() | st.floats(0.0, 5.0),
    interval=st.sampled_from([0.5, 1.0, 2.0, 5.0]),
    retries=st.integers(1, 4),
)
def test_property_early_checks_only_ever_help(
    serves_at: float | None, interval: float, retries: int
) -> None:
    """Against checks at the interval only: never unhealthy sooner, healthy no later,
    and never more than ~log2(interval / 0.1) + 2 checks within one interval."""
    check = health(interval=interval, retries=retries)

    def passes(t: float) -> bool:
        return serves_at is not None and t >= serves_at

    seen = run(check, passes, until=12.0)
    regular = [(k * interval, passes(k * interval)) for k in range(int(12.0 / interval) + 1)]
    status, plain = HealthStatus("starting"), []
    for t, passed in regular:
        status = record(status, passed, "", START + t, START, check)
        plain.append((t, status.status))
    for word in ("healthy",):
        ours, theirs = first(seen, word), first(plain, word)
        if theirs is not None:
            assert ours is not None and ours <= theirs + 1e-9
    ours_bad, theirs_bad = first(seen, "unhealthy"), first(plain, "unhealthy")
    if ours_bad is not None:
        assert theirs_bad is not None and ours_bad >= theirs_bad - 0.051
    times = [t for t, _ in seen]
    assert all(
        len([u for u in times if t <= u < t + interval]) <= interval / 0.1 + 2 for t in times
    )


def gone_pid() -> int:
    """A pid no process has (pids above the kernel's pid_max are never given out)."""
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1


async def test_a_check_of_a_process_that_is_gone_says_so_not_unhealthy() -> None:
    with pytest.raises(ProcessGone):
        await probe(health(), gone_pid())


async def test_the_prober_stops_checking_a_container_whose_process_is_gone() -> None:
    """A container stopped or removed between two looks is not reported unhealthy (its
    report outlived it and failed the rollout of a new container in its slot)."""
    changes: list[str] = []
    prober = Prober(lambda: changes.append("changed"))
    container = ObservedContainer(
        container_id="c1",
        name="web.1.abc",
        app="web",
        slot=1,
        revision=9,
        spec_hash="abc",
        restart="always",
        stop_grace=1.0,
        state="running",
        exit_code=0,
        oom_killed=False,
        started_at="2026-12-05T00:00:00Z",
        finished_at=None,
        ports=(),
        pid=gone_pid(),
        health_check=health(retries=1),
    )
    prober.sync([container])
    [task] = prober._tasks.values()
    await asyncio.wait_for(task, 5)
    assert prober.statuses["c1"].status == "starting"
    assert changes == []
    prober.close()
