"""Builders shared by the agent's unit tests: a desired container spec and a container
as the runtime observes it."""

from __future__ import annotations

from fleet.agent.runtime import ObservedContainer, container_name
from fleet.proto import fleet_pb2 as pb

NOW = 1000.0


def spec(
    app: str = "web", slot: int = 0, spec_hash: str = "aaaa1111", *, restart: str = "always"
) -> pb.ContainerSpec:
    return pb.ContainerSpec(app=app, slot=slot, revision=1, spec_hash=spec_hash, restart=restart)


def container(
    app: str = "web",
    slot: int = 0,
    spec_hash: str = "aaaa1111",
    *,
    state: str = "running",
    restart: str = "always",
    exit_code: int = 0,
    oom_killed: bool = False,
    finished_at: float | None = None,
    started_epoch: float | None = None,
    container_id: str | None = None,
    name: str | None = None,
) -> ObservedContainer:
    return ObservedContainer(
        container_id=container_id or f"{app}-{slot}-{spec_hash}-{state}",
        name=name or container_name(app, slot, spec_hash),
        app=app,
        slot=slot,
        revision=1,
        spec_hash=spec_hash,
        restart=restart,
        stop_grace=10.0,
        state=state,
        exit_code=exit_code,
        oom_killed=oom_killed,
        started_at="",
        finished_at=finished_at,
        ports=(),
        started_epoch=started_epoch,
    )


def exited(
    *,
    restart: str = "always",
    exit_code: int = 1,
    oom_killed: bool = False,
    finished_at: float | None = NOW - 3600,
) -> ObservedContainer:
    """A stopped replica of web.0 that exited long ago, so no backoff holds it."""
    return container(
        state="exited",
        restart=restart,
        exit_code=exit_code,
        oom_killed=oom_killed,
        finished_at=finished_at,
    )
