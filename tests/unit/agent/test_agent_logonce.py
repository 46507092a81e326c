"""Failures said once: the loops that keep trying in the background (the usage sampler,
Docker's event stream, a log relay) warn once per cause, not on every try and not at
debug level only; a cause is news again once the loop worked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from fleet.agent.events import EventQueue
from fleet.agent.held import HeldReplicas
from fleet.agent.hostwatch import HostWatch
from fleet.agent.logonce import FailureLog, WarnOnce
from fleet.agent.requests import RequestHandler
from fleet.agent.restarts import RestartBook
from fleet.agent.runtime import LogStream
from fleet.agent.state import HostState
from fleet.agent.stats import HostUsage
from fleet.errors import Unavailable
from fleet.proto import fleet_pb2 as pb
from fleet.testing.hollow import HollowRuntime
from tests.helpers import eventually

log = logging.getLogger("test.logonce")


def _said(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_each_cause_is_a_warning_once_until_it_works(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="test.logonce")
    once = WarnOnce(log, "sampling")
    for _ in range(3):
        once.failed(Unavailable("dockerd away"))
    once.failed(OSError("disk"))
    once.failed(Unavailable("dockerd away"))
    assert _said(caplog, logging.WARNING) == ["sampling: dockerd away", "sampling: disk"]
    assert len(_said(caplog, logging.DEBUG)) == 3
    once.worked()
    once.failed(Unavailable("dockerd away"))
    assert _said(caplog, logging.WARNING)[-1] == "sampling: dockerd away"
    assert len(_said(caplog, logging.WARNING)) == 3


def test_an_unexpected_error_has_its_traceback_once(caplog: pytest.LogCaptureFixture) -> None:
    failures = FailureLog(log)
    for _ in range(2):
        failures.failed("round failed", KeyError("Id"))
    failures.failed("pull failed", Unavailable("away"))
    assert [(r.levelno, r.exc_info is not None) for r in caplog.records] == [
        (logging.ERROR, True),
        (logging.WARNING, False),
        (logging.WARNING, False),
    ]


def _state() -> HostState:
    events = EventQueue()
    return HostState(events=events, held=HeldReplicas(events), restarts=RestartBook())


class _Sampling(HollowRuntime):
    """Fails to sample ``failures`` times, then works, then fails again."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.calls = 0

    def sample_usage(self) -> HostUsage:
        self.calls += 1
        if self.calls in (4, 5):
            return super().sample_usage()
        raise Unavailable("dockerd away")


async def test_the_usage_sampler_warns_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    runtime, state = _Sampling(), _state()
    sampler = asyncio.create_task(HostWatch(runtime, state).sample_usage_forever(0.0))
    try:
        await eventually(lambda: runtime.calls >= 8, 5, "eight samples")
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    warnings = [m for m in _said(caplog, logging.WARNING) if "usage sampling" in m]
    assert warnings == ["usage sampling failed: dockerd away"] * 2  # before and after 4-5


class _Broken:
    """A log stream that breaks after one chunk."""

    def __iter__(self) -> Iterator[bytes]:
        yield b"line\n"
        raise OSError("connection reset by dockerd")

    def close(self) -> None:
        return None


class _Endless:
    """A followed log that waits for more until it is closed."""

    def __init__(self) -> None:
        self._closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def __iter__(self) -> Iterator[bytes]:
        yield b"first\n"
        asyncio.run_coroutine_threadsafe(self._closed.wait(), self._loop).result()
        raise ValueError("read of closed file")  # what a closed docker stream raises

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._closed.set)


class _Logging(HollowRuntime):
    stream: LogStream | None = None

    def logs(
        self,
        container_id: str,
        *,
        follow: bool,
        tail: int,
        timestamps: bool,
        since: float = 0.0,
    ) -> LogStream:
        assert self.stream is not None
        return self.stream


async def test_a_broken_log_relay_warns_once_and_a_cancelled_one_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = _Logging(start_delay=0.0)
    runtime.create(pb.ContainerSpec(app="web", slot=0, revision=1, spec_hash="h", image="i"))
    handler = RequestHandler(runtime, runtime.list_containers)
    answers: list[pb.ContainerResponse] = []

    async def send(response: pb.ContainerResponse) -> None:
        answers.append(response)

    def request(request_id: str) -> pb.ContainerRequest:
        return pb.ContainerRequest(
            id=request_id, app="web", slot=0, logs=pb.LogsRequest(follow=True, tail=-1)
        )

    for n in range(3):
        runtime.stream = _Broken()
        handler.submit(request(f"r{n}"), send)
        await eventually(lambda n=n: sum(a.done for a in answers) == n + 1, 5, "the log's end")
    warnings = [m for m in _said(caplog, logging.WARNING) if "log stream" in m]
    assert warnings == ["log stream r0 ended: connection reset by dockerd"]

    runtime.stream = _Endless()
    handler.submit(request("follow"), send)
    await eventually(lambda: any(a.data == b"first\n" for a in answers), 5, "the first line")
    handler.cancel("follow")
    await eventually(lambda: not handler._tasks, 5, "the relay to end")
    assert [m for m in _said(caplog, logging.WARNING) if "log stream" in m] == warnings


class _BreakingEvents:
    """Docker's event stream, failing as a restarting dockerd does, then delivering."""

    blocking = True

    def __init__(self) -> None:
        self.calls = 0

    def events(self, on_event: object, stop: object) -> None:
        self.calls += 1
        if self.calls == 3:
            on_event({"Type": "container", "Action": "start", "Actor": {"ID": "c1"}})  # type: ignore[operator]
        raise ConnectionError("dockerd is restarting")

    def stop_events(self) -> None:
        return None


async def test_a_breaking_event_stream_warns_once_per_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime, state = _BreakingEvents(), _state()
    watch = HostWatch(runtime, state)  # type: ignore[arg-type]
    watch.start(asyncio.get_running_loop())
    try:
        await eventually(lambda: runtime.calls >= 4, 10, "four tries")
    finally:
        watch.stop()
    warnings = [m for m in _said(caplog, logging.WARNING) if "events stream" in m]
    # Tries 1-2 break (said once); the third delivers an event, then breaks: news again.
    assert warnings == ["docker events stream broke: dockerd is restarting"] * 2
    assert [e.kind for e in state.events.take()] == ["start"]
    assert state.wake.is_set()
