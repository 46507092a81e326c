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
