"""Translating Docker's events, raising the agent's own, and the bounded queue."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.events import EventQueue, from_docker, restart_events
from fleet.agent.restarts import Backoff, RestartBook, restart_verdict
from fleet.agent.runtime import ObservedContainer
from fleet.proto import fleet_pb2 as pb


def _docker(action: str, **attributes: str) -> dict[str, object]:
    return {
        "Type": "container",
        "Action": action,
        "timeNano": 1_700_000_000_123_000_000,
        "Actor": {"ID": "abc", "Attributes": {"fleet.app": "web", "fleet.slot": "2", **attributes}},
    }


def test_docker_die_becomes_a_fleet_event_with_its_exit_code() -> None:
    event = from_docker(_docker("die", exitCode="3"))
    assert event is not None
    assert (event.kind, event.app, event.slot, event.exit_code) == ("die", "web", 2, 3)
    assert (event.container_id, event.message) == ("abc", "exit code 3")
    assert event.time == "2023-11-14T22:13:20.123Z"


def test_health_status_keeps_its_detail_and_noise_is_dropped() -> None:
    event = from_docker(_docker("health_status: unhealthy"))
    assert event is not None and (event.kind, event.message) == ("health_status", "unhealthy")
    assert from_docker(_docker("exec_create: sh")) is None
    assert from_docker({"Type": "network", "Action": "connect"}) is None


def _exited(restart: str, code: int, finished: float) -> ObservedContainer:
    return ObservedContainer(
        "c1", "web.0.x", "web", 0, 1, "x", restart, 1.0, "exited", code, False, "", finished, ()
    )


def test_restart_scheduled_then_limit_reached() -> None:
    book = RestartBook({"c1": 1}, {"c1": 1})
    [(key, event)] = restart_events([_exited("on-failure:2", 1, 100.0)], book, Backoff(), 100.5)
    assert key == ("c1", 1, "restart-scheduled")
    assert (event.kind, event.message) == ("restart-scheduled", "restart 2 in 2s")
    book.record(_exited("on-failure:2", 1, 100.0), Backoff())
    [(key, event)] = restart_events([_exited("on-failure:2", 1, 100.0)], book, Backoff(), 100.5)
    assert (event.kind, event.message) == (
        "restart-limit",
        "failed: 2 restarts, the limit of on-failure:2",
    )
    assert key == ("c1", 2, "restart-limit")
    assert (
        restart_verdict(_exited("on-failure:2", 1, 100.0), book, Backoff(), 100.5).action == "limit"
    )
    assert restart_events([_exited("no", 1, 100.0)], book, Backoff(), 100.5) == []


def test_the_queue_keeps_the_newest_and_gives_back_in_order() -> None:
    queue = EventQueue(limit=3)
    for n in range(5):
        queue.put(pb.Event(kind=str(n)))
    batch = queue.take()
    assert [e.kind for e in batch] == ["2", "3", "4"] and not queue.ready.is_set()
    queue.give_back(batch)
    assert [e.kind for e in queue.take(2)] == ["2", "3"] and queue.ready.is_set()


def test_given_back_events_are_dropped_first_when_the_queue_is_full() -> None:
    """Events given back are older than those queued since: a full queue keeps the
    newest, as ``put`` does."""
    queue = EventQueue(limit=3)
    for kind in "abc":
        queue.put(pb.Event(kind=kind))
    batch = queue.take()
    queue.put(pb.Event(kind="d"))
    queue.put(pb.Event(kind="e"))
    queue.give_back(batch)
    assert [e.kind for e in queue.take()] == ["c", "d", "e"]
    queue.give_back([])
    assert not queue.ready.is_set()


@given(st.lists(st.integers(0, 9), max_size=12), st.integers(1, 6), st.integers(0, 6))
def test_property_give_back_is_put_in_the_original_order(
    kinds: list[int], limit: int, taken: int
) -> None:
    """Taking some events and giving them back leaves the queue as if they had never
    been taken: the same events, in the same order, within the same bound."""
    untouched, queue = EventQueue(limit), EventQueue(limit)
    for n, kind in enumerate(kinds):
        for q in (untouched, queue):
            q.put(pb.Event(kind=str(kind), message=str(n)))
    queue.give_back(queue.take(taken))
    assert [e.message for e in queue.take(1000)] == [e.message for e in untouched.take(1000)]
