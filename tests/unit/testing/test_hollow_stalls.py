"""A hollow process says when its own event loop stalled: its hosts were silent then
because the benchmark's machine starved it, which a control plane rightly marks down."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from fleet.testing.hollow import stalls_in, watch_own_loop


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
    [stalled] = stalls_in(["2026-12-06 07:10:35,910 WARNING fleet.testing.hollow: " + message])
    assert 0.25 <= stalled < 1.0  # as the benchmark reads it back from the log
