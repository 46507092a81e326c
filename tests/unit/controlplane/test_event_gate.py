"""The event gate (pure): repeats coalesce with a count, hosts and apps are held to a
rate, and what was dropped is said with a count."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from fleet.controlplane.eventgate import EventGate, GateLimits
from fleet.proto import fleet_pb2 as pb

LIMITS = GateLimits(
    host_rate=10, host_burst=20, app_rate=50, app_burst=100, repeat_window=60, report_every=10
)


def event(message: str, app: str = "web", kind: str = "health_status") -> pb.Event:
    return pb.Event(app=app, slot=0, kind=kind, message=message)


def test_a_flapping_check_is_stored_once_then_once_a_window_with_its_count() -> None:
    gate = EventGate(LIMITS)
    stored = []
    for tick in range(240):  # two a second for two minutes
        now = tick / 2
        flap = "unhealthy" if tick % 2 else "healthy"
        stored += gate.admit("h1", [event(flap)], now)
        stored += gate.due(now)
    # Each of the two messages: once at first, then once a minute with its count.
    assert sorted(e.count for e in stored) == [0, 0, 60, 60]
    # The last minute's runs are owed once their window ends: everything adds up.
    stored += gate.due(200.0)
    assert sorted(e.count for e in stored) == [0, 0, 59, 59, 60, 60]
    assert sum(max(1, e.count) for e in stored) == 240


def test_a_stopping_control_plane_flushes_the_repeats_of_open_windows() -> None:
    gate = EventGate(LIMITS)
    stored = gate.admit("h1", [event("start", kind="start")], 0.0)
    stored += gate.admit("h1", [event("start", kind="start") for _ in range(3)], 10.0)
    assert gate.due(20.0) == []  # the window is open: the 3 repeats are only counted
    flushed = gate.flush(20.0)
    assert [e.count for e in flushed] == [3]
    assert sum(max(1, e.count) for e in stored + flushed) == 4
    assert gate.flush(21.0) == [] and gate.due(100.0) == []  # nothing owed twice


def test_a_runs_summary_is_its_last_repeat_as_it_came_not_as_the_caller_changed_it() -> None:
    # The gate keeps a copy of the last repeat, not the agent's message (which holding
    # one event of would keep alive whole).
    gate = EventGate(LIMITS)
    first, repeat = event("oom", kind="oom"), event("oom", kind="oom")
    repeat.time = "2026-12-05T00:00:10Z"
    assert gate.admit("h1", [first], 0.0) == [first]
    assert gate.admit("h1", [repeat], 10.0) == []
    repeat.time, first.time = "changed", "changed"
    [summary] = gate.due(61.0)
    assert (summary.count, summary.time) == (1, "2026-12-05T00:00:10Z")


def test_a_flood_is_held_to_the_hosts_rate_and_said() -> None:
    gate = EventGate(LIMITS)
    stored = []
    for second in range(5):
        batch = [event(f"spam {second}-{i}") for i in range(500)]
        stored += gate.admit("evil", batch, float(second))
    stored += gate.due(0.0) + gate.due(10.0)
    spam = [e for e in stored if e.message.startswith("spam")]
    assert len(spam) == 20 + 4 * 10  # the burst, then the rate
    [notice] = [e for e in stored if e.kind == "events-dropped"]
    assert notice.host == "evil" and notice.source == "controlplane"
    assert notice.message.startswith(f"{2500 - len(spam)} event(s) from this host dropped")
    assert "over the host's limit of 10 events/s" in notice.message


def test_one_host_flooding_leaves_others_their_rate_but_an_app_is_held_too() -> None:
    gate = EventGate(LIMITS)
    for i in range(1000):
        gate.admit("evil", [event(f"spam {i}")], 0.0)
    assert gate.admit("h2", [event("started", app="db")], 0.0) != []
    # Five hosts of one app, each within its own rate, meet the app's limit.
    found = [
        gate.admit(f"h{h}", [event(f"x {h} {i}", app="big")], 0.0)
        for h in range(10)
        for i in range(20)
    ]
    assert sum(len(f) for f in found) == 100  # the app's burst
    notices = gate.due(0.0) + gate.due(10.0)
    assert any("over app big's limit of 50 events/s" in n.message for n in notices)


def test_memory_stays_bounded_and_counts_are_owned_up_to() -> None:
    gate = EventGate(GateLimits(host_rate=1e9, host_burst=1e9, most_repeats=100))
    stored = gate.admit("h1", [event(f"m{i}") for i in range(300)], 0.0)
    stored += gate.admit("h1", [event(f"m{i}") for i in range(200, 300)], 1.0)  # repeats
    assert len(gate._repeats) <= 100
    assert len([e for e in stored if not e.count]) == 300


def test_a_run_that_does_not_repeat_holds_nothing_of_its_event() -> None:
    # A ramp stores about 100,000 events that never repeat: each is remembered for its
    # window, and what it holds must not grow with its message.
    gate = EventGate(GateLimits(host_rate=1e9, host_burst=1e9, app_rate=1e9, app_burst=1e9))
    events = [event(f"{i:06d}" + "x" * 2000) for i in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert len(gate.admit("h1", events, 0.0)) == 2000
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2000 * 400  # the messages alone are 2,000 x 2 KB
    # and each is still told by its own repeats: counted, then stored with their count
    assert gate.admit("h1", [event("000007" + "x" * 2000)], 1.0) == []
    [again] = gate.admit("h1", [event("000007" + "x" * 2000)], 61.0)
    assert again.count == 2


@given(st.lists(st.tuples(st.sampled_from(["h1", "h2"]), st.sampled_from("abc")), max_size=300))
def test_every_event_is_stored_counted_or_dropped_and_said(
    arrivals: list[tuple[str, str]],
) -> None:
    """Nothing vanishes: stored events (with their counts) and the drop notices add up
    to what came in."""
    gate = EventGate(GateLimits(host_rate=1, host_burst=5, repeat_window=1, report_every=1))
    stored: list[pb.Event] = []
    for tick, (host, message) in enumerate(arrivals):
        stored += gate.admit(host, [event(message)], tick / 10)
    stored += gate.due(len(arrivals) / 10 + 100) + gate.due(len(arrivals) / 10 + 200)
    kept = sum(max(1, e.count) for e in stored if e.kind != "events-dropped")
    dropped = sum(int(e.message.split()[0]) for e in stored if e.kind == "events-dropped")
    assert kept + dropped == len(arrivals)
