"""The dashboard's limits on hostile clients: failed sign-ins per address, event
streams per session and in total. Pure: time is a parameter."""

from __future__ import annotations

from fleet.dashboard.limits import SignInLimiter, StreamLimiter, client_of, retry_header

NOW = 1_800_000_000.0


def test_the_tenth_failure_in_a_minute_shuts_the_address_out_until_the_first_is_old() -> None:
    limiter = SignInLimiter(limit=10, window=60.0)
    for second in range(10):
        assert limiter.retry_after("10.0.0.9", NOW + second) is None
        limiter.failed("10.0.0.9", NOW + second)
    assert limiter.retry_after("10.0.0.9", NOW + 10) == 50.0  # the first failure's age
    assert limiter.retry_after("10.0.0.9", NOW + 59.5) == 0.5
    # Another address is not held back by this one's failures.
    assert limiter.retry_after("10.0.0.10", NOW + 10) is None
    # The first failure leaves the window: one more try, and a failure shuts it again.
    assert limiter.retry_after("10.0.0.9", NOW + 60) is None
    limiter.failed("10.0.0.9", NOW + 60)
    assert limiter.retry_after("10.0.0.9", NOW + 60) == 1.0  # until the second is old


def test_failures_spread_out_over_time_never_shut_an_address_out() -> None:
    limiter = SignInLimiter(limit=10, window=60.0)
    for n in range(100):
        now = NOW + n * 7  # about 8.6 a minute
        assert limiter.retry_after("10.0.0.9", now) is None
        limiter.failed("10.0.0.9", now)


def test_the_addresses_remembered_are_bounded_and_the_quietest_forgotten_first() -> None:
    limiter = SignInLimiter(limit=2, window=60.0, max_clients=3)
    for _ in range(2):
        limiter.failed("a", NOW)
    for client in ("b", "c", "d"):
        limiter.failed(client, NOW + 1)
    assert limiter.retry_after("a", NOW + 2) is None  # forgotten: the quietest
    limiter.failed("d", NOW + 2)
    assert limiter.retry_after("d", NOW + 2) == 59.0
    # Old failures are dropped as the address is looked at: nothing is kept past them.
    assert limiter.retry_after("d", NOW + 62) is None
    assert "d" not in limiter._failures


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_header(s) for s in (0.0, 0.2, 1.0, 1.01, 49.5)] == ["1", "1", "1", "2", "50"]


def test_streams_are_capped_per_session_and_in_total() -> None:
    limiter = StreamLimiter(per_session=2, total=3)
    assert limiter.open("alice") is None
    assert limiter.open("alice") is None
    refused = limiter.open("alice")
    assert refused is not None and "2 live pages open already" in refused
    assert limiter.open("bob") is None
    refused = limiter.open("carol")  # the total is reached, carol's own count is 0
    assert refused is not None and "3 live pages already" in refused
    assert limiter.streams == 3
    # A stream that ends frees its place, for its session and in the total.
    limiter.close("alice")
    assert limiter.open("carol") is None
    limiter.close("carol")
    assert limiter.open("alice") is None
    for name in ("alice", "alice", "bob"):
        limiter.close(name)
    assert limiter.streams == 0 and limiter._open == {}


def test_an_ipv6_client_counts_as_its_64_and_a_mapped_ipv4_one_as_itself() -> None:
    assert client_of("2001:db8:1:2:aaaa::1") == client_of("2001:db8:1:2:bbbb::9")
    assert client_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_of("2001:db8:1:3::1") != client_of("2001:db8:1:2::1")
    assert client_of("::ffff:10.0.0.9") == client_of("10.0.0.9") == "10.0.0.9"
    assert client_of("10.0.0.9") != client_of("10.0.0.10")
    assert client_of(None) == client_of("") == "?"
