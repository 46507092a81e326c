"""Tests of fleet.agent.restarts: Docker's restart policies, the backoff between
restarts, the book that counts them, and the one rule (``restart_verdict``) that says
when a stopped container restarts or is left for ops."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.reconcile import plan
from fleet.agent.restarts import (
    Backoff,
    RestartBook,
    RestartVerdict,
    restart_verdict,
    restart_wanted,
)
from fleet.agent.runtime import ObservedContainer
from tests.unit.agent.builders import NOW, container, exited, spec


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


def test_the_book_saved_from_many_threads_at_once_ends_with_the_newest_counts(
    tmp_path: Path,
) -> None:
    """Parallel starts each save the book from a thread (seen in the ingress e2e test:
    three replicas restarted at once after a reboot, and one start failed when its
    rename found the shared temporary file gone)."""
    book = RestartBook()
    path = tmp_path / "restarts.json"
    containers = [dataclasses.replace(exited(), container_id=f"c{i}") for i in range(8)]
    for c in containers:
        book.record(c, Backoff())

    def save(_: int) -> None:
        for _ in range(25):
            book.save(path)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(save, range(8)))
    assert RestartBook.load(path).counts == {f"c{i}": 1 for i in range(8)}
    assert not path.with_suffix(".tmp").exists()


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
    result = plan([spec()], [short], book, NOW, backoff)
    assert result.tasks == [] and result.look_again == NOW - 10 + 32  # 1 s * 2**5
    result = plan([spec()], [long], book, NOW, backoff)
    assert [t.reason for t in result.tasks] == ["restart 6 (exit code 1)"]  # due at once
    book.record(long, backoff)
    assert (book.count("c"), book.streaks["c"]) == (6, 1)


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


# ------------------------------------------------------------------ the verdict


@pytest.mark.parametrize("state", ["created", "running", "paused", "restarting"])
def test_a_container_that_is_not_stopped_has_nothing_to_restart(state: str) -> None:
    live = container(state=state, exit_code=1, restart="on-failure:1")
    assert restart_verdict(live, RestartBook({live.container_id: 5}), Backoff(), NOW) == (
        RestartVerdict("none")
    )


def test_a_stopped_container_waits_out_its_backoff_then_restarts() -> None:
    """Two restarts so far: the next waits 4 s after the exit, then is due."""
    stopped = exited(finished_at=NOW - 1)
    book = RestartBook({stopped.container_id: 2}, {stopped.container_id: 2})
    assert restart_verdict(stopped, book, Backoff(), NOW) == RestartVerdict("wait", 2, 4.0, NOW + 3)
    assert restart_verdict(stopped, book, Backoff(), NOW + 3) == (
        RestartVerdict("restart", 2, 4.0, NOW + 3)
    )


def test_on_failure_n_reaches_its_limit_after_n_restarts() -> None:
    """``on-failure:2``: two restarts, then the failure is for good; a clean exit or a
    policy without a limit never is."""
    failing = exited(restart="on-failure:2")
    book = RestartBook()
    seen = []
    for _ in range(4):
        verdict = restart_verdict(failing, book, Backoff(), NOW)
        seen.append(verdict.action)
        if verdict.action == "restart":
            book.record(failing, Backoff())
    assert seen == ["restart", "restart", "limit", "limit"]
    assert restart_verdict(failing, book, Backoff(), NOW).restarts == 2
    clean = exited(restart="on-failure:2", exit_code=0)
    assert restart_verdict(clean, book, Backoff(), NOW).action == "none"
    unlimited = exited(restart="on-failure")
    assert (
        restart_verdict(unlimited, RestartBook({unlimited.container_id: 99}), Backoff(), NOW).action
        == "restart"
    )


def test_an_oom_kill_is_a_failure_for_the_limit() -> None:
    killed = exited(restart="on-failure:1", exit_code=0, oom_killed=True)
    book = RestartBook({killed.container_id: 1})
    assert restart_verdict(killed, book, Backoff(), NOW).action == "limit"


POLICIES = ["no", "always", "on-failure", "on-failure:1", "on-failure:3"]


@st.composite
def stopped_st(draw: st.DrawFn) -> tuple[ObservedContainer, RestartBook]:
    """A stopped container of any policy and exit, and a book of its restarts so far."""
    stopped = container(
        state=draw(st.sampled_from(["exited", "dead"])),
        restart=draw(st.sampled_from(POLICIES)),
        exit_code=draw(st.sampled_from([0, 1, 137])),
        oom_killed=draw(st.booleans()),
        finished_at=draw(st.one_of(st.none(), st.floats(0, 2 * NOW))),
        started_epoch=draw(st.one_of(st.none(), st.floats(0, 2 * NOW))),
    )
    count = draw(st.integers(0, 5))
    streak = draw(st.integers(0, count))
    return stopped, RestartBook({stopped.container_id: count}, {stopped.container_id: streak})


@given(stopped_st(), st.floats(0, 3 * NOW), st.floats(0, 1000))
def test_property_the_verdict_follows_the_policy_and_time(
    case: tuple[ObservedContainer, RestartBook], now: float, later: float
) -> None:
    """A restart is due exactly when the policy wants one and its backoff is over; the
    verdict only moves from waiting to restarting as time goes on; the limit is reached
    only by ``on-failure:N`` after a failure, and never depends on time."""
    c, book = case
    backoff = Backoff()
    verdict = restart_verdict(c, book, backoff, now)
    after = restart_verdict(c, book, backoff, now + later)
    count = book.count(c.container_id)
    assert verdict.restarts == count
    if restart_wanted(c.restart, c.exit_code, c.oom_killed, count):
        due = (c.finished_at or 0.0) + backoff.delay(book.streak(c, backoff))
        assert (verdict.action, verdict.due) == ("restart" if due <= now else "wait", due)
        assert after.action == "restart" or verdict.action == "wait"
    else:
        failed = c.exit_code != 0 or c.oom_killed
        limited = c.restart.startswith("on-failure:") and failed
        assert verdict.action == ("limit" if limited else "none")
        assert after == verdict
