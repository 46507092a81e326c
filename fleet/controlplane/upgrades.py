"""Coordinated OS upgrades, locksmith-style: walk the selected hosts a few at a time.

Each host goes ``waiting`` -> ``draining`` (it takes a slot of the maintenance semaphore
and is drained like ``fleet drain``) -> ``upgrading`` (host state ``maintenance``: its
agent runs the upgrade command, or ops do it by hand) -> ``canary`` (optional: once its
agent is back with a new boot id or OS version, one replica of a chosen app must run
healthy there) -> ``done``: it is uncordoned and gives its slot back. A failed canary
leaves the host out and stops the walk. At most ``max_parallel``
hosts are out at once, and never more than the semaphore allows (a manual drain holds a
slot too: ``maintenance.may_take_slot``). The walk lives in etcd (``upgrade``), so a
restarted control plane goes on where it was; ``step_upgrade`` is its pure step,
``plan_walk`` what starting, stopping or resuming it writes, and ``cancel_walk`` what
ending it early writes (``fleet upgrade-hosts --cancel``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from fleet._time import epoch, iso_at
from fleet.controlplane.availability import crash_reason
from fleet.controlplane.maintenance import may_take_slot
from fleet.errors import FailedPrecondition, InvalidArgument, NotFound
from fleet.spec import Constraint
from fleet.store import ClusterState, check_name
from fleet.store.records import (
    HostCommand,
    HostDrain,
    HostRecord,
    HostUpgrade,
    MaintenanceRecord,
    UpgradeRecord,
)

__all__ = [
    "CANARY_SLOT",
    "UpgradeStep",
    "canary_hosts",
    "cancel_walk",
    "check_selector",
    "plan_walk",
    "selected_hosts",
    "step_upgrade",
]

HOLDER = "upgrade-hosts"
# The canary is one replica of the chosen app, outside the app's own slots.
CANARY_SLOT = 999_999
CANARY_READY = 3.0  # seconds it must stay healthy
CANARY_TIMEOUT = 180.0  # seconds it has to get there


@dataclass
class UpgradeStep:
    upgrade: UpgradeRecord | None = None  # to write, None: unchanged
    hosts: dict[str, HostRecord] = field(default_factory=dict)  # host records to write
    maintenance: MaintenanceRecord | None = None  # to write, None: unchanged
    events: list[tuple[str, str, str]] = field(default_factory=list)  # kind, host, message

    def is_empty(self) -> bool:
        return self.upgrade is None and not self.hosts and self.maintenance is None


def is_over(walk: UpgradeRecord) -> bool:
    """Whether the walk ended, every host done or failed, or cancelled."""
    return walk.state in ("done", "cancelled")


def check_selector(values: Sequence[str]) -> list[str]:
    """A walk's host selector, each term as constraints write it (InvalidArgument)."""
    if len(values) > 16:
        raise InvalidArgument("at most 16 selector terms")
    try:
        return [str(Constraint.model_validate(v)) for v in values]
    except ValidationError as error:
        raise InvalidArgument(f"bad selector: {error.errors()[0]['msg']}") from None


def selected_hosts(state: ClusterState, selector: list[str]) -> list[str]:
    """Registered hosts whose selectable labels (admin labels, ``agent.*`` and facts, as
    constraints see them) match every ``k=v``, ``k!=v`` or ``k``."""
    constraints = [Constraint.model_validate(s) for s in selector]
    chosen = []
    for host_id in sorted(state.hosts):
        labels = state.selectable_labels(host_id)
        if all(c.matches(labels) for c in constraints):
            chosen.append(host_id)
    return chosen


def plan_walk(
    state: ClusterState,
    action: str,
    *,
    selector: Sequence[str] = (),
    max_parallel: int = 0,
    command: str = "",
    canary_app: str = "",
    now: float,
) -> UpgradeRecord:
    """The walk ``fleet upgrade-hosts`` writes: a new one over the selected hosts
    (``start``, refused while one is not done), or the current one stopped or resumed;
    ``now`` (epoch seconds) stamps it and names a new one."""
    stored = state.upgrade
    stamp = iso_at(now)
    if action == "start":
        if stored is not None and not is_over(stored.value):
            raise FailedPrecondition(
                f"upgrade walk {stored.value.id} is {stored.value.state}; resume it "
                "(`fleet upgrade-hosts --resume`) and let it finish, or end it "
                "(`fleet upgrade-hosts --cancel`)"
            )
        if not 1 <= (max_parallel or 1) <= 100:
            raise InvalidArgument("--max-parallel must be from 1 to 100")
        if len(command) > 4096 or "\0" in command:
            raise InvalidArgument("the command must be at most 4096 characters, without NUL")
        terms = check_selector(selector)
        if canary_app:
            check_name(canary_app)
            if canary_app not in state.apps:
                raise NotFound(
                    f"the canary app {canary_app!r} does not exist (see `fleet get apps`)"
                )
        chosen = selected_hosts(state, terms)
        if not chosen:
            raise InvalidArgument(f"no host matches {' '.join(terms) or 'the selector'}")
        return UpgradeRecord(
            id=f"u{int(now)}",
            selector=terms,
            max_parallel=max_parallel or 1,
            command=command,
            canary_app=canary_app,
            created_at=stamp,
            updated_at=stamp,
            hosts={h: HostUpgrade() for h in chosen},
        )
    if action in ("stop", "resume"):
        if stored is None or is_over(stored.value):
            raise FailedPrecondition("there is no upgrade walk to stop or resume")
        wanted = "stopped" if action == "stop" else "running"
        return stored.value.model_copy(update={"state": wanted, "updated_at": stamp})
    raise InvalidArgument(f"unknown action {action[:32]!r}: use start, stop, resume or cancel")


def cancel_walk(state: ClusterState, now: float) -> UpgradeStep:
    """End the walk now (``fleet upgrade-hosts --cancel``) and give back what it holds:
    every slot of the maintenance semaphore it took, and the hosts it took out. A host
    still waiting is never touched; one draining or back for its canary is uncordoned
    (its replicas may stay or return); one upgrading, or whose canary failed, is left
    cordoned, since its upgrade command or reboot may still be under way: ops uncordon
    it once it is back. Hosts done or failed keep their phase. ``now`` stamps it."""
    stored = state.upgrade
    if stored is None or is_over(stored.value):
        raise FailedPrecondition(
            "there is no upgrade walk to cancel (see `fleet upgrade-hosts --status`)"
        )
    stamp = iso_at(now)
    walk = stored.value
    step = UpgradeStep()
    semaphore = state.maintenance.value if state.maintenance else MaintenanceRecord()
    holders = {
        h: who for h, who in semaphore.holders.items() if who != HOLDER or h not in walk.hosts
    }
    hosts = dict(walk.hosts)
    for host_id, progress in walk.hosts.items():
        found = state.hosts.get(host_id)
        record = found.value if found else None
        taken = semaphore.holders.get(host_id) == HOLDER
        if progress.phase in ("waiting", "draining", "upgrading", "canary"):
            message = {
                "waiting": "cancelled before it started",
                "draining": "cancelled while draining: uncordoned",
                "canary": "cancelled during its canary: uncordoned",
                "upgrading": "cancelled while upgrading: left cordoned; "
                f"`fleet uncordon {host_id}` once it is back",
            }[progress.phase]
            hosts[host_id] = progress.model_copy(
                update={"phase": "cancelled", "finished_at": stamp, "message": message}
            )
            step.events.append(("host-upgrade-cancelled", host_id, message))
        if record is None or not taken:
            continue
        if progress.phase in ("draining", "canary"):
            state_after = "ready"
        elif record.state in ("draining", "drained", "maintenance"):
            state_after = "cordoned"
        else:
            state_after = record.state
        step.hosts[host_id] = record.model_copy(
            update={"state": state_after, "drain": None, "command": None}
        )
    step.upgrade = walk.model_copy(
        update={"hosts": hosts, "state": "cancelled", "updated_at": stamp}
    )
    if holders != semaphore.holders:
        step.maintenance = semaphore.model_copy(update={"holders": holders})
    return step


def canary_hosts(state: ClusterState) -> dict[str, str]:
    """Hosts running an upgrade walk's canary now, and the app it is of."""
    stored = state.upgrade
    if stored is None or not stored.value.canary_app:
        return {}
    return {
        host_id: stored.value.canary_app
        for host_id, progress in stored.value.hosts.items()
        if progress.phase == "canary"
    }


def _canary(state: ClusterState, app: str, host_id: str, progress: HostUpgrade, now: float) -> str:
    """ "passed", a reason it failed, or "" while it is still on its way."""
    status = state.status.get(host_id)
    report = next(
        (
            c
            for c in (status.value.containers if status else [])
            if c.app == app and c.slot == CANARY_SLOT
        ),
        None,
    )
    crashed = crash_reason(report)
    if crashed is not None:
        return crashed
    if report is not None and report.state == "running" and report.health in ("", "healthy"):
        since = epoch(report.ready_since) if report.ready_since else None
        if since is not None and now - since >= CANARY_READY:
            return "passed"
    started = epoch(progress.canary_at) or now
    if now - started > CANARY_TIMEOUT:
        return f"not healthy within {CANARY_TIMEOUT:g}s"
    return ""


def step_upgrade(state: ClusterState, now: float) -> UpgradeStep:
    """What the walk does next on ``state`` at ``now`` (epoch seconds, which also stamps
    what it writes)."""
    stamp = iso_at(now)
    step = UpgradeStep()
    stored = state.upgrade
    if stored is None or is_over(stored.value):
        return step
    walk = stored.value
    semaphore = state.maintenance.value if state.maintenance else MaintenanceRecord()
    holders = dict(semaphore.holders)
    hosts = dict(walk.hosts)

    def host_record(host_id: str) -> HostRecord | None:
        if host_id in step.hosts:
            return step.hosts[host_id]
        found = state.hosts.get(host_id)
        return found.value if found else None

    def release(host_id: str, record: HostRecord) -> None:
        step.hosts[host_id] = record.model_copy(
            update={"state": "ready", "drain": None, "command": None}
        )
        if holders.get(host_id) == HOLDER:
            del holders[host_id]

    for host_id, progress in hosts.items():
        record = host_record(host_id)
        if progress.phase in ("done", "failed"):
            continue
        if record is None:
            hosts[host_id] = progress.model_copy(
                update={"phase": "failed", "message": "the host is gone", "finished_at": stamp}
            )
            if holders.get(host_id) == HOLDER:
                del holders[host_id]
            step.events.append(("host-upgrade-failed", host_id, "the host is gone"))
            continue
        if progress.phase == "waiting":
            continue
        if progress.phase == "draining":
            if record.state == "drained":
                hosts[host_id] = progress.model_copy(
                    update={
                        "phase": "upgrading",
                        "boot_id": record.facts.get("boot_id", ""),
                        "os_version": record.facts.get("os_version", ""),
                        "message": "running the upgrade command"
                        if walk.command
                        else "drained: upgrade and reboot it; fleet waits for a new boot id "
                        "or OS version",
                    }
                )
                # Out for its upgrade: "maintenance" until it is back and uncordoned.
                command = (
                    HostCommand(id=f"{walk.id}-{host_id}", command=walk.command, issued_at=stamp)
                    if walk.command
                    else None
                )
                step.hosts[host_id] = record.model_copy(
                    update={"state": "maintenance", "command": command}
                )
                step.events.append(("host-upgrading", host_id, hosts[host_id].message))
            elif record.state not in ("draining", "maintenance"):
                hosts[host_id] = progress.model_copy(
                    update={
                        "phase": "failed",
                        "finished_at": stamp,
                        "message": f"the drain ended before the upgrade (host is {record.state})",
                    }
                )
                if holders.get(host_id) == HOLDER:
                    del holders[host_id]
                step.events.append(("host-upgrade-failed", host_id, hosts[host_id].message))
        elif progress.phase == "upgrading":
            back = host_id in state.alive and (
                record.facts.get("boot_id", "") != progress.boot_id
                or record.facts.get("os_version", "") != progress.os_version
            )
            if back and walk.canary_app and walk.canary_app in state.apps:
                version = record.facts.get("os_version", "") or "?"
                message = f"back with OS version {version}; running a canary of {walk.canary_app}"
                hosts[host_id] = progress.model_copy(
                    update={"phase": "canary", "canary_at": stamp, "message": message}
                )
                step.events.append(("host-canary", host_id, message))
            elif back:
                version = record.facts.get("os_version", "") or "?"
                message = f"back with OS version {version}; uncordoned"
                hosts[host_id] = progress.model_copy(
                    update={"phase": "done", "finished_at": stamp, "message": message}
                )
                release(host_id, record)
                step.events.append(("host-upgraded", host_id, message))
        elif progress.phase == "canary":
            verdict = _canary(state, walk.canary_app, host_id, progress, now)
            if verdict == "passed":
                version = record.facts.get("os_version", "") or "?"
                message = (
                    f"back with OS version {version}; a canary of {walk.canary_app} ran "
                    "healthy; uncordoned"
                )
                hosts[host_id] = progress.model_copy(
                    update={"phase": "done", "finished_at": stamp, "message": message}
                )
                release(host_id, record)
                step.events.append(("host-upgraded", host_id, message))
            elif verdict:
                # The host stays out (maintenance) and the walk stops: ops look first.
                message = f"the canary of {walk.canary_app} failed: {verdict}; walk stopped"
                hosts[host_id] = progress.model_copy(
                    update={"phase": "failed", "finished_at": stamp, "message": message}
                )
                walk = walk.model_copy(update={"state": "stopped"})
                step.events.append(("host-upgrade-failed", host_id, message))

    if walk.state == "running":
        out = sum(1 for p in hosts.values() if p.phase in ("draining", "upgrading"))
        limit = max(1, walk.max_parallel)
        for host_id, progress in hosts.items():
            if out >= limit:
                break
            if progress.phase != "waiting":
                continue
            record = host_record(host_id)
            if record is None:
                continue
            if not may_take_slot(semaphore, holders, host_id, walk_parallel=limit):
                break  # the semaphore is full (a manual drain holds a slot): wait
            holders[host_id] = HOLDER
            step.hosts[host_id] = record.model_copy(
                update={
                    "state": "draining",
                    "drain": HostDrain(started_at=stamp, by=HOLDER),
                    "command": None,
                }
            )
            hosts[host_id] = progress.model_copy(
                update={"phase": "draining", "started_at": stamp, "message": "draining"}
            )
            step.events.append(("host-draining", host_id, "drained for its OS upgrade"))
            out += 1

    finished = all(p.phase in ("done", "failed") for p in hosts.values())
    changed = walk.model_copy(update={"hosts": hosts, "state": "done" if finished else walk.state})
    if changed != stored.value:
        step.upgrade = changed.model_copy(update={"updated_at": stamp})
    wanted = semaphore.model_copy(
        update={"holders": holders, "max": max(semaphore.max, walk.max_parallel)}
    )
    if wanted != semaphore:
        step.maintenance = wanted
    return step
