"""Builders shared by the control plane's unit tests: cluster states made by hand (hosts,
apps and their revisions, replica records, what agents report, rollout records) for the
pure planners, and what a plan leaves behind once written."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from fleet.controlplane.slots import ReplicaPlan
from fleet.spec import AppSpec, load_documents
from fleet.store import ClusterState, Versioned
from fleet.store.records import (
    AppRecord,
    ContainerReport,
    HostLabelsRecord,
    HostRecord,
    HostState,
    LiveRecord,
    PortBinding,
    ReplicaRecord,
    ReplicaTarget,
    ResourceAmounts,
    RevisionRecord,
    RolloutRecord,
    RolloutState,
    StatusRecord,
)

Mi = 1 << 20
Gi = 1 << 30

# The planners take the time; nothing these tests check depends on it.
NOW = 1_800_000_000.0
LONG_AGO = NOW - 3600.0  # ready long before any min_ready used here

Slot = tuple[int, int, str]  # slot, revision, host: one container a slot wants


def spec(text: str = "") -> AppSpec:
    [parsed] = load_documents("name: web\nimage: img:v1\n" + text, "app.yaml")
    return parsed


def cluster(*hosts: tuple[str, float, int], revision: int = 100) -> ClusterState:
    """A state with ready, connected hosts given as (id, cpu, memory)."""
    state = ClusterState(revision=revision)
    for host_id, cpu, memory in hosts:
        add_host(state, host_id, cpu=cpu, memory=memory)
    return state


def add_host(
    state: ClusterState,
    host_id: str,
    *,
    cpu: float = 4.0,
    memory: int = 8 * Gi,
    labels: dict[str, str] | None = None,
    facts: dict[str, str] | None = None,
    host_state: HostState = "ready",
    connected: bool = True,
    admin_labels: dict[str, str] | None = None,
) -> None:
    """A registered host: ``labels`` are its agent's own (``--label``), ``admin_labels``
    those set with ``fleet label host``."""
    record = HostRecord(
        host_id=host_id,
        capacity=ResourceAmounts(cpu=cpu, memory=memory),
        labels=labels or {},
        facts=facts or {},
        state=host_state,
        registered_at="t0",
    )
    state.hosts[host_id] = Versioned(record, 10)
    if admin_labels is not None:
        admin = HostLabelsRecord(host_id=host_id, labels=admin_labels, updated_at="t0")
        state.host_labels[host_id] = Versioned(admin, 12)
    if connected:
        state.alive[host_id] = Versioned(LiveRecord(server="cp1", connected_at="t0"), 11)


def add_app(state: ClusterState, app: AppSpec, *, revision: int = 1, mod: int = 20) -> None:
    """The app record at ``revision`` and that revision's record, of the same spec."""
    state.apps[app.name] = Versioned(
        AppRecord(spec=app, generation=revision, revision=revision, created_at="t", updated_at="t"),
        mod,
    )
    add_revision(state, app, revision)


def add_revision(state: ClusterState, app: AppSpec, revision: int) -> None:
    state.revisions[(app.name, revision)] = Versioned(
        RevisionRecord(
            app=app.name,
            revision=revision,
            template_hash=app.template_hash(),
            spec=app,
            created_at="t",
        ),
        21,
    )


def add_replica(
    state: ClusterState,
    app: str,
    slot: int,
    host: str,
    *,
    revision: int = 1,
    cpu: float = 0.0,
    memory: int = 0,
    ports: list[str] | None = None,
    mod: int | None = None,
) -> ReplicaRecord:
    record = ReplicaRecord(
        app=app,
        slot=slot,
        revision=revision,
        host=host,
        resources=ResourceAmounts(cpu=cpu, memory=memory),
        host_ports=ports or [],
    )
    state.replicas[(app, slot)] = Versioned(record, 50 + slot if mod is None else mod)
    return record


def iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def app_spec(version: int, text: str = "") -> AppSpec:
    """The app ``web`` running image ``img:v<version>``."""
    [parsed] = load_documents(f"name: web\nimage: img:v{version}\n{text}", "app.yaml")
    return parsed


def _reserved(state: ClusterState, revision: int) -> tuple[ResourceAmounts, list[str]]:
    record = state.revision_spec("web", revision)
    assert record is not None
    resources = record.spec.resources
    ports = sorted(f"{p.host_port}/{p.protocol}" for p in record.spec.ports if p.host_port)
    return ResourceAmounts(cpu=resources.cpu, memory=resources.memory), ports


def put_replica(
    state: ClusterState,
    slot: int,
    host: str,
    revision: int = 1,
    *,
    next: tuple[int, str] | None = None,
    mod: int | None = None,
) -> ReplicaRecord:
    """Slot ``slot`` of ``web`` at ``revision`` on ``host``; ``next`` is (revision, host)
    of its replacement. Reservations are copied from the revision records."""
    resources, ports = _reserved(state, revision)
    target = None
    if next is not None:
        next_resources, next_ports = _reserved(state, next[0])
        target = ReplicaTarget(
            revision=next[0], host=next[1], resources=next_resources, host_ports=next_ports
        )
    record = ReplicaRecord(
        app="web",
        slot=slot,
        revision=revision,
        host=host,
        resources=resources,
        host_ports=ports,
        next=target,
    )
    state.replicas[("web", slot)] = Versioned(record, 50 + slot if mod is None else mod)
    return record


def report(
    state: ClusterState,
    host: str,
    slot: int,
    revision: int,
    *,
    status: str = "running",
    health: str = "",
    ready_since: float | None = LONG_AGO,
    restarts: int = 0,
    ports: list[PortBinding] | None = None,
    reason: str = "",
    message: str = "",
) -> None:
    """``host``'s agent reports the container of ``web``'s ``slot`` at ``revision``
    (replacing what it reported of that container before)."""
    container = ContainerReport(
        app="web",
        slot=slot,
        revision=revision,
        spec_hash="x",
        container_id=f"c-{slot}-{revision}-{host}",
        name=f"fleet-web-{slot}",
        state=status,
        health=health,
        ready_since=iso(ready_since) if ready_since is not None else "",
        restarts=restarts,
        ports=ports or [],
        reason=reason,
        message=message,
    )
    stored = state.status.get(host)
    others = [
        c
        for c in (stored.value.containers if stored is not None else [])
        if (c.app, c.slot, c.revision) != ("web", slot, revision)
    ]
    state.status[host] = Versioned(
        StatusRecord(
            host_id=host,
            reported_at=iso(NOW),
            applied_version=1,
            usage=ResourceAmounts(),
            containers=[*others, container],
        ),
        30,
    )


def set_rollout(
    state: ClusterState,
    revision: int = 2,
    from_revision: int = 1,
    *,
    rollout_state: RolloutState = "progressing",
    progress_at: float = NOW - 10.0,
    paused: bool = False,
    rollback_of: int = 0,
    ready: int = 0,
) -> RolloutRecord:
    record = RolloutRecord(
        app="web",
        revision=revision,
        from_revision=from_revision,
        state=rollout_state,
        started_at=iso(NOW - 100.0),
        progress_at=iso(progress_at),
        updated_at=iso(progress_at),
        message=f"rolling out revision {revision}",
        paused=paused,
        rollback_of=rollback_of,
        ready=ready,
    )
    state.rollouts["web"] = Versioned(record, 40)
    return record


def after(state: ClusterState, plan: ReplicaPlan) -> dict[int, ReplicaRecord]:
    """``web``'s replica records once the plan's puts and deletes are written."""
    slots = {r.slot: r for r in state.replicas_of("web")}
    for slot, _ in plan.delete:
        slots.pop(slot, None)
    slots.update({record.slot: record for record, _ in plan.put})
    return slots


def wanted(slots: dict[int, ReplicaRecord]) -> set[Slot]:
    return {(i.slot, i.revision, i.host) for r in slots.values() for i in r.containers()}


def commit(state: ClusterState, plan: ReplicaPlan) -> ClusterState:
    """The state once the controller's transaction for ``plan`` is committed."""
    revision = state.revision + 1
    new = dataclasses.replace(
        state,
        revision=revision,
        apps=dict(state.apps),
        replicas=dict(state.replicas),
        rollouts=dict(state.rollouts),
    )
    for slot, _ in plan.delete:
        del new.replicas[("web", slot)]
    for record, _ in plan.put:
        new.replicas[("web", record.slot)] = Versioned(record, revision)
    if plan.rollout is not None:
        new.rollouts["web"] = Versioned(plan.rollout[0], revision)
    if plan.delete_rollout is not None:
        del new.rollouts["web"]
    if plan.app is not None:
        new.apps["web"] = Versioned(plan.app, revision)
    return new


class StaticInformer:
    """An informer that has synced and shows ``state`` (the API's handlers read it),
    caught up with every revision; a test may swap ``state`` for another."""

    def __init__(self, state: ClusterState) -> None:
        self.current = state

    async def wait_synced(self) -> None:
        pass

    async def wait_for_revision(self, revision: int) -> None:
        pass

    def state(self) -> ClusterState:
        return self.current
