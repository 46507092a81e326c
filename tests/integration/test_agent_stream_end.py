"""A stream the control plane ends leaves nothing of itself in the agent: a real
``fleet server`` (killed, then started again on its address), a real etcd, and the
real agent over a hollow runtime in the test's own event loop, where its tasks can be
counted.

gRPC's aio call sends what the agent's request iterator yields from a task of its own,
and cancels that task only when the call itself is cancelled; a call the server ended
is already done, so its sender waited on the outbox for good, until the collector
destroyed it: "Task was destroyed but it is pending!" and "aclose(): asynchronous
generator is already running" at ERROR, one pair per host, in every agent's log after
each control plane restart (seen by the thousand in the scale benchmark's hollow hosts).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest

from fleet.testing import EtcdServer
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.testing.hollow import hollow_agents
from fleet.transport import Transport
from tests.helpers import eventually

SENDER = "_StreamRequestMixin._consume_request_iterator"  # grpc.aio's request sender


def senders() -> list[asyncio.Task[object]]:
    """The request senders of the agent's streams still pending in this loop."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == SENDER and not task.done()
    ]


async def test_a_stream_the_server_ended_leaves_no_sender_behind(
    etcd_server: EtcdServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    caplog.set_level(logging.WARNING, logger="fleet.agent.session")
    first = FleetServerProcess(etcd_server.endpoint, "/t-stream-end/", tmp_path, None)
    await asyncio.to_thread(first.start)
    [(agent, runtime)] = hollow_agents([first.address], 1, lambda _: Transport(None), name="ends")
    runtime.bind(asyncio.get_running_loop())
    running = asyncio.create_task(agent.run())
    again = first.again("server-again.log")
    try:
        connected = agent.session.connected
        await eventually(connected.is_set, 30, "the agent to register")
        assert len(senders()) == 1  # the open stream's

        await asyncio.to_thread(first.kill)
        await eventually(lambda: not connected.is_set(), 30, "the agent to see its stream end")
        await asyncio.to_thread(again.start)
        await eventually(connected.is_set, 30, "the agent to register again")

        gc.collect()  # a sender left behind and unreachable is destroyed (and logged) here
        await asyncio.sleep(0)
        assert len(senders()) == 1, "the ended stream's sender still waits"
        destroyed = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        assert destroyed == []
        said = [r.getMessage() for r in caplog.records if r.name == "fleet.agent.session"]
        assert any(
            line.startswith(f"the stream to control plane {first.address} broke (")
            and "reconnecting within" in line
            for line in said
        ), said
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.to_thread(again.stop)
        await asyncio.to_thread(first.stop)
