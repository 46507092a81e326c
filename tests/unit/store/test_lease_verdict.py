"""The lease keeper's decisions at one moment (pure: time is a parameter): what to do
with a lease, and whether a host has gone silent in the event loop's time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleet.store.leases import LeaseKeeper, Verdict, _Held, is_silent, verdict

STALL = 15.0
times = st.floats(min_value=0, max_value=1_000, allow_nan=False)
ttls = st.floats(min_value=1, max_value=60, allow_nan=False)


def test_a_lease_is_renewed_once_a_quarter_of_its_ttl_has_passed() -> None:
    held = _Held(ttl=15, renewed=100)
    assert verdict(held, now=102, loop_seen=102, stall_limit=STALL) is Verdict.WAIT
    assert verdict(held, now=104, loop_seen=104, stall_limit=STALL) is Verdict.RENEW


def test_a_wedged_loop_vouches_for_nothing_and_its_leases_run_out() -> None:
    assert verdict(_Held(ttl=4, renewed=100), 115, 100, STALL) is Verdict.LOST
    assert verdict(_Held(ttl=30, renewed=105), 116, 100, STALL) is Verdict.WAIT
    assert verdict(_Held(ttl=30, renewed=105), 116, 102, STALL) is Verdict.RENEW


def test_a_host_silent_for_its_ttl_in_the_loops_time_is_silent() -> None:
    assert is_silent(heard=100, ttl=15, loop_seen=116)
    assert not is_silent(heard=100, ttl=15, loop_seen=114)


def test_a_loop_running_behind_does_not_make_its_hosts_look_silent() -> None:
    # The loop last ran a probe posted at 101: whatever the host sent after that has
    # not been read yet, so however long ago 101 was, the host is 1 s silent.
    assert not is_silent(heard=100, ttl=10, loop_seen=101)


@given(ttl=ttls, renewed=times, now=times, loop_seen=times)
def test_verdict_rules(ttl: float, renewed: float, now: float, loop_seen: float) -> None:
    result = verdict(_Held(ttl=ttl, renewed=renewed), now, loop_seen, STALL)
    # Lost exactly when a whole TTL passed since the last acknowledged renewal.
    assert (result is Verdict.LOST) == (now - renewed >= ttl)
    # Nothing is renewed for a loop that has not run for the stall limit, nor sooner
    # than a quarter of the TTL after the last renewal.
    if result is Verdict.RENEW:
        assert now - loop_seen < STALL
        assert now - renewed >= ttl / 4


def test_a_lost_lease_is_still_told_lost_once_released() -> None:
    """A replica re-grants its lease once lost, and releases the old one; the sessions
    still bound to the old one must hear it is lost at their next heartbeat, however
    late (one that asked after the release was never told, and its reports failed)."""
    keeper = LeaseKeeper(["127.0.0.1:1"])
    keeper.hold(7, 15.0)
    keeper.hold(8, 15.0)
    keeper._lose(keeper._held[7], "expired in etcd")
    keeper.release(7)
    keeper.release(8)  # released without being lost (its owner revoked it)
    assert keeper.lost(7) == "expired in etcd"
    assert keeper.lost(8) is None
