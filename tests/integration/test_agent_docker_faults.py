"""No Docker error ever ends the agent (issue #16).

A real agent (in this process, so faults can be put between it and Docker) drives a
real dockerd and talks to a real control plane on a real etcd. Before each round, every
call the agent makes into the Docker SDK is armed to raise one exception type once:
every class docker-py defines, requests' and the OS's errors, and a few that no one
expects. Each round then rolls the app to a new revision, and the test checks that the
agent lives through it, stays connected the whole time (its task, and the control
plane's view of the host), and still converges: the new revision's container runs in
Docker, read back through the SDK.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from fleet.agent import Agent, AgentConfig
from fleet.agent.dockerruntime import DockerRuntime
from fleet.agent.restarts import Backoff
from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.testing import DockerHost, EtcdServer
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.transport import Transport
from tests.conftest import ensure_image

# Every SDK call the agent's reconcile path makes; each is armed with the round's error.
ARMED = (
    "api.containers",
    "api.inspect_container",
    "api.create_host_config",
    "api.create_container",
    "api.start",
    "api.stop",
    "api.remove_container",
    "images.get",
    "images.pull",
)


def _response(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.41/fault"
    response.reason = "injected"
    return response


def _docker_error_types() -> list[type[BaseException]]:
    """Every exception class docker-py's errors module defines."""
    return sorted(
        (
            value
            for value in vars(docker.errors).values()
            if isinstance(value, type) and issubclass(value, BaseException)
        ),
        key=lambda cls: cls.__name__,
    )


def _instance(cls: type[BaseException]) -> BaseException:
    """One of ``cls``, whatever its constructor wants; hostile text inside."""
    text = "injected [/bold] \x1b[31mfault"
    if issubclass(cls, docker.errors.APIError):
        return cls(text, response=_response(500), explanation=text)
    wanted = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return cls(*[text] * len(wanted)) if wanted else cls(text)


def _faults() -> list[tuple[str, BaseException]]:
    found: list[tuple[str, BaseException]] = [
        (cls.__name__, _instance(cls)) for cls in _docker_error_types()
    ]
    for status in (400, 401, 404, 409, 500, 503):
        error = docker.errors.APIError("injected", response=_response(status), explanation="x")
        found.append((f"APIError-{status}", error))
    found += [
        ("requests.ConnectionError", requests.exceptions.ConnectionError("daemon away")),
        ("requests.ReadTimeout", requests.exceptions.ReadTimeout("read timed out")),
        ("requests.ChunkedEncodingError", requests.exceptions.ChunkedEncodingError("cut")),
        ("OSError", OSError(104, "Connection reset by peer")),
        ("TimeoutError", TimeoutError("timed out")),
        # What no one expects of Docker: a bug in a layer, a garbled answer.
        ("KeyError", KeyError("Id")),
        ("ValueError", ValueError("Expecting value: line 1 column 1")),
        ("RuntimeError", RuntimeError("unexpected")),
    ]
    return found


class Faults:
    """Errors armed per SDK call, each raised once (from whichever thread calls)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[str, BaseException] = {}
        self.fired: set[str] = set()

    def arm(self, error: BaseException) -> None:
        with self._lock:
            self._armed = dict.fromkeys(ARMED, error)
            self.fired = set()

    def disarm(self) -> None:
        with self._lock:
            self._armed = {}

    def check(self, name: str) -> None:
        with self._lock:
            error = self._armed.pop(name, None)
            if error is not None:
                self.fired.add(name)
        if error is not None:
            raise error


class _Faulty:
    """A proxy to a Docker SDK object whose methods first ask ``faults``."""

    def __init__(self, target: Any, faults: Faults, prefix: str) -> None:
        self._target, self._faults, self._prefix = target, faults, prefix

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value
        key = f"{self._prefix}{name}"

        def call(*args: Any, **kwargs: Any) -> Any:
            self._faults.check(key)
            return value(*args, **kwargs)

        return call


class FaultyRuntime(DockerRuntime):
    """The real runtime over a real dockerd, with faults between it and the SDK."""

    def __init__(self, base_url: str, faults: Faults) -> None:
        super().__init__(base_url)
        self.faults = faults

    @property
    def client(self) -> Any:
        real = super().client
        proxy = _Faulty(real, self.faults, "")
        proxy.api = _Faulty(real.api, self.faults, "api.")  # type: ignore[attr-defined]
        proxy.images = _Faulty(real.images, self.faults, "images.")  # type: ignore[attr-defined]
        return proxy


@dataclass
class Running:
    agent: Agent
    task: asyncio.Task[None]
    faults: Faults
    client: FleetClient
    host: DockerHost
    image: str


@pytest.fixture
async def running(
    etcd_server: EtcdServer, clean_host: DockerHost, pki: TestPKI, tmp_path: Path
) -> AsyncIterator[Running]:
    image = ensure_image(clean_host)
    server = FleetServerProcess(etcd_server.endpoint, "/t-docker-faults/", tmp_path, pki).start()
    faults = Faults()
    config = AgentConfig(
        servers=[server.address],
        host_id=clean_host.name,
        transport=Transport(pki.agent(clean_host.name)),
        resync_seconds=1.0,
        failure_backoff=Backoff(initial=0.1, cap=0.5),
        state_dir=tmp_path / "agent",
    )
    agent = Agent(config, FaultyRuntime(clean_host.docker_url, faults))
    task = asyncio.create_task(agent.run())
    client = server.client()
    try:
        await _until(lambda: agent.connected.is_set(), 20, "the agent to connect")
        yield Running(agent, task, faults, client, clean_host, image)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        client.close()
        server.stop()
        print(server.process.log_tail(60))


async def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(0.05)


def _spec(image: str, round_no: int) -> str:
    return (
        f"name: faults\nimage: {image}\nreplicas: 1\n"
        f"env: {{ROUND: '{round_no}'}}\nresources: {{cpu: 0.1, memory: 16Mi}}\n"
        # A pull that fails fails the rollout: it must not roll back the round's change.
        "update: {max_surge: 0, max_unavailable: 1, auto_rollback: false}\n"
    )


def _revisions_running(host: DockerHost) -> set[str]:
    found = host.client().containers.list(filters={"label": "fleet.app=faults"})
    return {c.labels.get("fleet.revision", "") for c in found if c.status == "running"}


async def test_the_agent_survives_every_docker_error(running: Running) -> None:
    agent, faults, client = running.agent, running.faults, running.client
    client.apply(load_documents(_spec(running.image, 0), "faults.yaml"))
    await _until(lambda: _revisions_running(running.host) == {"1"}, 60, "revision 1 to run")

    def host_connected() -> bool:
        return any(h.connected for h in client.hosts() if h.host_id == running.host.name)

    fired: set[str] = set()
    for round_no, (name, error) in enumerate(_faults(), start=1):
        faults.arm(error)
        revision = str(round_no + 1)
        client.apply(load_documents(_spec(running.image, round_no), "faults.yaml"))
        try:
            await _until(
                lambda revision=revision: _revisions_running(running.host) == {revision},  # type: ignore[misc]
                60,
                f"revision {revision} to run despite {name}",
            )
        finally:
            faults.disarm()
        assert not running.task.done(), f"the agent ended on {name}: {running.task}"
        assert agent.connected.is_set(), f"the agent lost its stream on {name}"
        assert host_connected(), f"the control plane lost the host on {name}"
        assert faults.fired, f"no fault fired in the round of {name}"
        fired |= faults.fired
    # Every armed call did fail at least once over the run (else the test proves less).
    assert fired >= set(ARMED) - {"images.pull"}, sorted(set(ARMED) - fired)

    kinds = {e.kind for e in client.events(app="faults")} | {
        e.kind for e in client.events() if not e.app
    }
    assert {"task-failed", "reconcile-failed"} <= kinds, kinds
