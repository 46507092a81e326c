"""A hollow process says when its own event loop stalled: its hosts were silent then
because the benchmark's machine starved it, which a control plane rightly marks down."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

import pytest

from fleet.testing.hollow import most_stalled_within, stalls_in, watch_own_loop


async def test_a_stalled_hollow_loop_is_logged_with_its_length(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.testing.hollow")
    watching = asyncio.create_task(watch_own_loop(7, every=0.01, logged=0.2))
    await asyncio.sleep(0.05)  # it runs, and nothing stalled yet
    assert caplog.records == []
    time.sleep(0.3)  # noqa: ASYNC251 (the whole loop blocked, as a starved process's is)
    await asyncio.sleep(0.05)
    watching.cancel()
    [record] = caplog.records
    message = record.getMessage()
    assert message.startswith("hollow process stalled: its event loop ran nothing for 0.")
    assert message.endswith("s; its 7 hosts were silent meanwhile")
    [(ended, stalled)] = stalls_in(
        ["2026-12-06 07:10:35,910 WARNING fleet.testing.hollow: " + message]
    )
    assert 0.25 <= stalled < 1.0  # as the benchmark reads it back from the log
    assert datetime.fromtimestamp(ended).strftime("%H:%M:%S.%f") == "07:10:35.910000"


def test_short_stalls_add_up_within_a_hosts_ttl() -> None:
    """Four stalls of 2-4 s within 16 s left a process's hosts silent for their 15 s TTL
    (seen at 5,000 hosts: none was 5 s long)."""
    stalls = [(100.0, 3.0), (104.0, 3.5), (107.0, 2.0), (113.0, 3.5), (140.0, 4.0)]
    assert most_stalled_within(stalls, 15.0) == 9.0  # 97-107 and 109.5-113 don't both fit
    assert most_stalled_within(stalls, 16.0) == 12.0
    assert most_stalled_within(stalls[-1:], 15.0) == 4.0
    assert most_stalled_within([], 15.0) == 0.0
