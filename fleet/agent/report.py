"""What a heartbeat says of the host: live usage, every container's status (with its
health, restarts and usage), the held replicas and the desired version carried out.

Pure but for the health checks' statuses, which come from the ``Prober`` as they are.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

from fleet._time import iso_at
from fleet.agent.health import Prober
from fleet.agent.restarts import Backoff, restart_verdict
from fleet.agent.runtime import ObservedContainer
from fleet.agent.state import HostState
from fleet.proto import fleet_pb2 as pb

__all__ = ["containers_digest", "desired_revisions", "heartbeat", "reported_revision"]


@functools.lru_cache(maxsize=4096)
def _iso(seconds: float | None) -> str:
    # The same few moments (containers' starts, health checks' passes) are formatted
    # again in every heartbeat: kept, the most recent ones (a process of 250 hollow
    # hosts spent 2% of its cpu formatting them).
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
    if container.state == "running" and status.restarts and not status.exit_code:
        # Docker clears the exit code when it starts the container again: the exit it was
        # restarted from is what a crash loop's message and `fleet ps` name.
        status.exit_code = state.restarts.last_exit(container.container_id)
    usage = state.usage.per_container.get(container.container_id)
    if usage is not None and container.state == "running":
        status.cpu, status.memory_bytes, status.memory_limit = usage
    if container.container_id not in state.starting:
        verdict = restart_verdict(container, state.restarts, backoff, now)
        if verdict.action == "limit":
            status.state = "failed"
            status.message = f"restart limit of {container.restart} reached; left for ops"
    return status


def desired_revisions(
    desired: list[pb.ContainerSpec] | None,
) -> dict[tuple[str, int, str], set[int]]:
    """The revisions the desired set wants of each (app, slot, template)."""
    wanted: dict[tuple[str, int, str], set[int]] = {}
    for spec in desired or ():
        wanted.setdefault((spec.app, spec.slot, spec.spec_hash), set()).add(spec.revision)
    return wanted


def reported_revision(
    container: ObservedContainer, wanted: dict[tuple[str, int, str], set[int]]
) -> int:
    """The revision a container is reported as: the one the desired set places it as.
    The agent keeps a container whose template the desired set wants (its key), and
    two revisions of an app can share a template (an image set back, an undo): a
    container made for revision 9 then serves revision 7 as well, and reported under
    its label's 9 it would never count as the 7 the control plane waits for (a move
    that never finished, seen in the soak). When several revisions of its template are
    wanted here, the newest: a slot moving from revision 8 to 12 of one template, its
    replacement placed on the same host, waits for 12's report, and the one container
    serves both (reported under its label's 8, the move never finished: the soak's
    seed 25 once). Its label's revision when nothing wants it."""
    revisions = wanted.get(container.key)
    if not revisions:
        return container.revision
    return max(revisions)


def heartbeat(state: HostState, prober: Prober, backoff: Backoff, now: float) -> pb.AgentMessage:
    wanted = desired_revisions(state.desired)
    statuses = []
    for container in state.observed:
        status = _status(container, state, prober, backoff, now)
        status.revision = reported_revision(container, wanted)
        statuses.append(status)
    statuses += state.held.statuses()
    return pb.AgentMessage(
        heartbeat=pb.Heartbeat(
            usage=pb.Resources(cpu=state.usage.cpu, memory_bytes=state.usage.memory),
            containers=statuses,
            applied_version=state.applied_version,
            images=state.usage.images,
            containers_digest=containers_digest(statuses),
        )
    )


def containers_digest(statuses: Iterable[pb.ContainerStatus]) -> bytes:
    """A digest of ``statuses`` in order, each with its live usage (cpu, memory_bytes)
    left out: what the control plane stores of them. Most heartbeats say what the last
    one did, but for the usage; the control plane, told so by an equal digest, skips
    comparing each container (46 us a heartbeat of 20: at 5,000 hosts, 45 ms of every
    second of its one core). The cost is here, on each host."""
    digest = hashlib.blake2b(digest_size=16)
    for status in statuses:
        cpu, memory = status.cpu, status.memory_bytes
        status.cpu, status.memory_bytes = 0.0, 0
        serialized = status.SerializeToString(deterministic=True)
        status.cpu, status.memory_bytes = cpu, memory
        # Each container's length first: no two lists of containers give one stream.
        digest.update(len(serialized).to_bytes(4, "big"))
        digest.update(serialized)
    return digest.digest()
