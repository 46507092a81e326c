"""What a heartbeat says of the host: live usage, every container's status (with its
health, restarts and usage), the held replicas and the desired version carried out.

Pure but for the health checks' statuses, which come from the ``Prober`` as they are.
"""

from __future__ import annotations

from fleet._time import iso_at
from fleet.agent.health import Prober
from fleet.agent.restarts import Backoff, restart_verdict
from fleet.agent.runtime import ObservedContainer
from fleet.agent.state import HostState
from fleet.proto import fleet_pb2 as pb

__all__ = ["heartbeat"]


def _iso(seconds: float | None) -> str:
    return "" if seconds is None else iso_at(seconds)


def _health(container: ObservedContainer, prober: Prober) -> tuple[str, str, str]:
    """(health, ready since, message) as reported to the control plane."""
    if container.state != "running":
        return ("", "", "")
    check = container.health_check
    if check is None:
        return ("", _iso(container.started_epoch), "")
    if check.kind == "exec":
        since = container.docker_healthy_since
        return (
            container.docker_health or "starting",
            _iso(since),
            container.docker_health_output,
        )
    probed = prober.statuses.get(container.container_id)
    if probed is None:
        return ("starting", "", "")
    return (probed.status, _iso(probed.healthy_since), probed.message)


def _status(
    container: ObservedContainer, state: HostState, prober: Prober, backoff: Backoff, now: float
) -> pb.ContainerStatus:
    status = container.to_status()
    status.health, status.ready_since, message = _health(container, prober)
    if status.health == "unhealthy":
        status.message = message
    status.restarts = state.restarts.count(container.container_id)
    usage = state.usage.per_container.get(container.container_id)
    if usage is not None and container.state == "running":
        status.cpu, status.memory_bytes, status.memory_limit = usage
    if container.container_id not in state.starting:
        verdict = restart_verdict(container, state.restarts, backoff, now)
        if verdict.action == "limit":
            status.state = "failed"
            status.message = f"restart limit of {container.restart} reached; left for ops"
    return status


def heartbeat(state: HostState, prober: Prober, backoff: Backoff, now: float) -> pb.AgentMessage:
    return pb.AgentMessage(
        heartbeat=pb.Heartbeat(
            usage=pb.Resources(cpu=state.usage.cpu, memory_bytes=state.usage.memory),
            containers=[_status(c, state, prober, backoff, now) for c in state.observed]
            + state.held.statuses(),
            applied_version=state.applied_version,
            images=state.usage.images,
        )
    )
