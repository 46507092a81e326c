"""A reconcile round that runs for long is said, with where it waits: a round waiting on
something that never comes leaves the host's containers unmanaged while its agent still
heartbeats (seen once in the scale benchmark: a host's containers left `created`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from fleet.agent import reconciler as reconciler_module
from fleet.agent.config import AgentConfig
from fleet.agent.events import EventQueue
from fleet.agent.health import Prober
from fleet.agent.held import HeldReplicas
from fleet.agent.logonce import FailureLog
from fleet.agent.reconciler import SLOW_ROUND, Reconciler
from fleet.agent.restarts import RestartBook
from fleet.agent.runtime import ObservedContainer
from fleet.agent.state import HostState
from fleet.testing.hollow import HollowRuntime
from fleet.transport import Transport
from tests.helpers import eventually


class _Hanging(HollowRuntime):
    """A daemon whose listing does not answer until ``answer`` is set."""

    blocking = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.answer = threading.Event()
        self.asked = threading.Event()

    def list_containers(self) -> list[ObservedContainer]:
        self.asked.set()
        self.answer.wait(30)
        return super().list_containers()


async def test_a_long_round_is_said_with_where_it_waits(caplog: pytest.LogCaptureFixture) -> None:
    events = EventQueue()
    state = HostState(events=events, held=HeldReplicas(events), restarts=RestartBook())
    config = AgentConfig(servers=["127.0.0.1:1"], host_id="h1", transport=Transport(None))
    runtime = _Hanging()
    log = logging.getLogger("test.reconcile-watch")
    reconciler = Reconciler(config, runtime, state, Prober(lambda: None), FailureLog(log))
    rounds = asyncio.create_task(reconciler.run())
    try:
        await eventually(runtime.asked.is_set)
        now = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=reconciler_module.__name__):
            reconciler.check_round(now + 1)  # a round just begun: nothing to say
            reconciler.check_round(now + SLOW_ROUND + 1)
            reconciler.check_round(now + SLOW_ROUND + 2)  # said already
        [said] = [r.getMessage() for r in caplog.records]
        assert f"a reconcile round has run for {SLOW_ROUND + 1:.0f} s" in said
        assert "in _observe" in said and "in list_containers" not in said  # (a thread)
        assert "in to_thread" in said  # the innermost await: the thread it waits on
        [event] = [e for e in events.take() if e.kind == "reconcile-slow"]
        assert "the agent's log says where" in event.message
        runtime.answer.set()
        await eventually(lambda: reconciler._round_began is None)
        reconciler.check_round(time.monotonic() + 10 * SLOW_ROUND)  # no round running
        assert len(caplog.records) == 1
    finally:
        runtime.answer.set()
        rounds.cancel()
        await asyncio.gather(rounds, return_exceptions=True)
