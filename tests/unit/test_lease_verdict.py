"""The lease keeper's decision for one lease at one moment (pure: time is a parameter)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleet.store.leases import Verdict, _Held, verdict

STALL = 15.0
times = st.floats(min_value=0, max_value=1_000, allow_nan=False)
ttls = st.floats(min_value=1, max_value=60, allow_nan=False)


def test_a_host_heard_lately_is_renewed_once_a_quarter_of_its_ttl_has_passed() -> None:
    held = _Held(ttl=15, for_host=True, heard=100, renewed=100)
    assert verdict(held, now=102, loop_seen=102, stall_limit=STALL) is Verdict.WAIT
    assert verdict(held, now=104, loop_seen=104, stall_limit=STALL) is Verdict.RENEW


def test_a_host_silent_for_its_ttl_in_the_loops_time_is_revoked() -> None:
    held = _Held(ttl=15, for_host=True, heard=100, renewed=112)
    assert verdict(held, now=116, loop_seen=116, stall_limit=STALL) is Verdict.REVOKE


def test_a_loop_running_behind_does_not_make_its_hosts_look_silent() -> None:
    # The loop last ran a probe posted at 101: whatever the host sent after that has
    # not been read yet, so 12 s of wall time (more than the TTL) is 1 s of the loop's.
    held = _Held(ttl=10, for_host=True, heard=100, renewed=105)
    assert verdict(held, now=112, loop_seen=101, stall_limit=STALL) is Verdict.RENEW


def test_a_wedged_loop_vouches_for_nothing_and_its_leases_run_out() -> None:
    leader = _Held(ttl=4, for_host=False, heard=0, renewed=100)
    assert verdict(leader, now=115, loop_seen=100, stall_limit=STALL) is Verdict.LOST
    leader = _Held(ttl=30, for_host=False, heard=0, renewed=110)
    assert verdict(leader, now=116, loop_seen=100, stall_limit=STALL) is Verdict.WAIT


@given(ttl=ttls, heard=times, renewed=times, now=times, loop_seen=times, for_host=st.booleans())
def test_verdict_rules(
    ttl: float, heard: float, renewed: float, now: float, loop_seen: float, for_host: bool
) -> None:
    held = _Held(ttl=ttl, for_host=for_host, heard=heard, renewed=renewed)
    result = verdict(held, now, loop_seen, STALL)
    # Lost exactly when a whole TTL passed since the last acknowledged renewal.
    assert (result is Verdict.LOST) == (now - renewed >= ttl)
    # Only hosts are revoked, and only when silent for a TTL of the loop's time.
    if result is Verdict.REVOKE:
        assert for_host and loop_seen - heard > ttl
    # Nothing is renewed for a loop that has not run for the stall limit, nor sooner
    # than a quarter of the TTL after the last renewal.
    if result is Verdict.RENEW:
        assert now - loop_seen < STALL
        assert now - renewed >= ttl / 4
