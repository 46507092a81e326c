"""Tests of fleet.controlplane.seats: a replica's seat is a valid key segment, and a
lease is taken over only from a holder that is gone, on the same machine's boot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.controlplane import seats
from fleet.store import KeyLayout
from fleet.store.keys import SERVING
from fleet.store.records import ServingRecord

BOOT = "6a1f7c1e-0c1f-4b38-9d43-3f6f2b1d8e90"


def record(pid: int = 4242, boot: str = BOOT) -> ServingRecord:
    return ServingRecord(server=f"cp-{pid}", lease=7, boot_id=boot, pid=pid)


def test_the_seat_is_the_server_id_or_the_machine_and_port() -> None:
    assert seats.seat_of("", "cp1.example.com", 7400) == "cp1.example.com-7400"
    assert seats.seat_of("CP_One", "ignored", 7400) == "cp-one"
    assert seats.seat_of("", "-", 7400) == "7400"
    assert seats.seat_of("..", "x", 1) == "replica-1"


@given(st.text(max_size=300), st.text(max_size=80), st.integers(0, 65535))
def test_property_every_seat_is_a_key(server_id: str, hostname: str, port: int) -> None:
    seat = seats.seat_of(server_id, hostname, port)
    layout = KeyLayout()
    parsed = layout.parse(layout.serving(seat))
    assert parsed is not None and parsed.folder is SERVING and parsed.parts == (seat,)


def test_a_lease_whose_holder_is_gone_is_taken() -> None:
    assert seats.why_not_taken(record(), seat="s1", boot=BOOT, pid=1, alive=lambda _: False) is None


def test_a_lease_held_by_this_very_pid_is_taken() -> None:
    """In a container every replica is pid 1: the one before it had this pid, and is gone."""
    taken = seats.why_not_taken(record(pid=1), seat="s1", boot=BOOT, pid=1, alive=lambda _: True)
    assert taken is None


def test_a_lease_whose_holder_runs_is_not_taken() -> None:
    why = seats.why_not_taken(record(), seat="s1", boot=BOOT, pid=1, alive=lambda _: True)
    assert why is not None and "4242" in why


@pytest.mark.parametrize("boot", ["", "another-boot"])
def test_a_lease_of_another_machine_or_boot_is_not_taken(boot: str) -> None:
    why = seats.why_not_taken(record(boot=boot or "x"), seat="s1", boot=BOOT, pid=1)
    assert why is not None and "another machine" in why
    assert seats.why_not_taken(record(), seat="s1", boot="", pid=1) is not None


def test_a_seat_held_in_this_process_is_not_taken() -> None:
    seats.held_here.add("s-here")
    try:
        why = seats.why_not_taken(record(), seat="s-here", boot=BOOT, pid=1, alive=lambda _: False)
        assert why is not None and "this process" in why
    finally:
        seats.held_here.discard("s-here")


def test_process_alive_on_this_machine() -> None:
    assert seats.process_alive(os.getpid())
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert not seats.process_alive(pid_max + 1)


# ------------------------------------------------------------------ the comeback


def comeback(*hosts: str) -> seats.Comeback:
    return seats.Comeback(
        started=100.0, ttl=15.0, back_within=10.0, waiting={h: i for i, h in enumerate(hosts)}
    )


def test_hosts_not_back_are_given_up_a_ttl_and_a_backoff_after_the_takeover() -> None:
    wait = comeback("h1", "h2")
    assert not wait.given_up(124.9)
    assert wait.given_up(125.0)


def test_while_hosts_keep_coming_back_the_rest_are_waited_for() -> None:
    wait = comeback("h1", "h2", "h3")
    wait.back("h1", 120.0)
    wait.back("h2", 130.0)
    assert wait.waiting == {"h3": 2}
    assert not wait.given_up(144.9)  # 14.9 s since the last came back
    assert wait.given_up(145.0)


def test_the_wait_has_a_cap() -> None:
    wait = comeback("h1", *(f"h{n}" for n in range(2, 200)))
    now = 100.0
    while not wait.given_up(now):
        wait.back(f"h{int(now)}", now)  # one back every second, on and on
        now += 1.0
    assert now - 100.0 == seats.COMEBACK_MAX_FACTOR * 25.0


def test_a_host_not_taken_over_does_not_count_as_back() -> None:
    wait = comeback("h1")
    wait.back("elsewhere", 124.0)
    assert wait.given_up(125.0)
