"""Hosts: read them; cordon, label, drain and remove them; the OS upgrade walk.

A drain and the walk take slots of the maintenance semaphore (``maintenance``);
uncordoning or removing a host gives its slot back. The walk's steps are the
controller's (``upgrades.step_upgrade``); here it is started, stopped, resumed or
cancelled.
"""

from __future__ import annotations

import logging
import math
import time

import grpc.aio

from fleet._time import now_iso
from fleet.controlplane.api._service import ServiceBase
from fleet.controlplane.auth import Permission, caller, rpc
from fleet.controlplane.maintenance import (
    drain_record,
    may_take_slot,
    release_slot,
    semaphore_full,
)
from fleet.controlplane.planner import moves_held, moves_held_message, plan_replicas
from fleet.controlplane.registration import denied_serials
from fleet.controlplane.upgrades import cancel_walk, plan_walk
from fleet.controlplane.view import HostViews
from fleet.errors import FailedPrecondition, FleetError, InvalidArgument, NotFound
from fleet.hostlabels import edit_labels
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, Versioned, check_host_id
from fleet.store.records import (
    DeniedRecord,
    HostLabelsRecord,
    HostRecord,
    MaintenanceRecord,
    UpgradeRecord,
)

__all__ = ["HostsApi"]

log = logging.getLogger(__name__)

_MAX_DEADLINE = 7 * 86400  # seconds: the longest drain deadline


def _drain_blocked(
    state: ClusterState, now: float, views: HostViews
) -> dict[str, list[pb.Pending]]:
    """For each draining host, the replicas that cannot move yet and why."""
    draining = {h for h, v in state.hosts.items() if v.value.state == "draining"}
    # The replicas on draining hosts through the per-host index: a walk of every
    # replica cost `get hosts` a fifth of a second at 100,000, with nothing draining.
    apps = sorted(
        {app for h in draining for (app, _), r in state.host_replicas(h).items() if r.host == h}
    )
    found: dict[str, list[pb.Pending]] = {}
    for app in apps:
        if app not in state.apps:
            continue
        for slot, reason in sorted(
            plan_replicas(state, app, now, views=views).drain_blocked.items()
        ):
            replica = state.replicas.get((app, slot))
            if replica is not None:
                pending = pb.Pending(app=app, slot=slot, reason=reason)
                found.setdefault(replica.value.host, []).append(pending)
    return found


def _upgrade_info(walk: UpgradeRecord) -> pb.UpgradeInfo:
    return pb.UpgradeInfo(
        id=walk.id,
        state=walk.state,
        selector=walk.selector,
        max_parallel=walk.max_parallel,
        command=walk.command,
        canary_app=walk.canary_app,
        created_at=walk.created_at,
        updated_at=walk.updated_at,
        hosts=[
            pb.HostUpgradeInfo(
                host_id=h,
                phase=p.phase,
                message=p.message,
                started_at=p.started_at,
                finished_at=p.finished_at,
            )
            for h, p in walk.hosts.items()
        ],
    )


def _not_found(host_id: str) -> NotFound:
    return NotFound(f"host {host_id!r} not found (see `fleet get hosts`)")


def _host(state: ClusterState, host_id: str) -> Versioned[HostRecord]:
    stored = state.hosts.get(host_id)
    if stored is None:
        raise _not_found(host_id)
    return stored


class HostsApi(ServiceBase):
    @rpc(Permission.HOSTS_READ)
    async def GetHosts(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.HostList:
        state = await self._state()
        if request.name and request.name not in state.hosts:
            raise _not_found(request.name)
        holders = state.maintenance.value.holders if state.maintenance else {}
        blocked = _drain_blocked(state, time.time(), self.views)
        hosts = []
        for host_id in [request.name] if request.name else sorted(state.hosts):
            record = state.hosts[host_id].value
            sums = self.host_sums.of(state, host_id)
            status = state.status.get(host_id)
            connected = host_id in state.alive
            hosts.append(
                pb.HostInfo(
                    host_id=host_id,
                    state=record.state if connected else "down",
                    connected=connected,
                    capacity=pb.Resources(
                        cpu=record.capacity.cpu, memory_bytes=record.capacity.memory
                    ),
                    reserved=pb.Resources(cpu=sums.cpu, memory_bytes=sums.memory),
                    usage=pb.Resources(
                        cpu=status.value.usage.cpu if status else 0.0,
                        memory_bytes=status.value.usage.memory if status else 0,
                    ),
                    labels=state.admin_labels(host_id),
                    agent_labels=record.labels,
                    facts=record.facts,
                    ingress=record.ingress,
                    reported_capacity=pb.Resources(
                        cpu=(record.reported or record.capacity).cpu,
                        memory_bytes=(record.reported or record.capacity).memory,
                    ),
                    containers=sums.containers,
                    registered_at=record.registered_at,
                    last_heartbeat_at=status.value.reported_at if status else "",
                    address=record.address,
                    maintenance=holders.get(host_id, ""),
                    remaining=sums.remaining,
                    blocked=blocked.get(host_id, []),
                    drain_deadline=record.drain.deadline_at if record.drain else "",
                    drain_force=record.drain.force if record.drain else False,
                    cert_serial=record.cert_serial,
                    cert_expires=record.cert_expires,
                    past_serials=record.past_serials,
                )
            )
        return pb.HostList(hosts=hosts, moves_held=self._moves_held(state))

    def _moves_held(self, state: ClusterState) -> str:
        """What the leader's hold says while it holds (``planner.moves_held``), from the
        state as any replica sees it: the registered hosts without their liveness key."""
        threshold = self.hold_moves_when_down
        registered = len(state.hosts)
        down = len(state.hosts.keys() - state.alive.keys())
        if threshold is None or not moves_held(down, registered, threshold):
            return ""
        return moves_held_message(down, registered, threshold)

    @rpc(Permission.HOSTS_WRITE)
    async def RevokeCertificate(
        self, request: pb.RevokeCertificateRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeCertificateResponse:
        """Deny one of the certificates a host registered with before (one it renewed):
        no replica accepts it again. The one it connects with now is refused here:
        ``fleet hosts remove`` takes a host out."""
        host_id = check_host_id(request.host_id)
        serial = request.serial.strip().lower().removeprefix("0x")
        state = await self._state()
        stored = _host(state, host_id)
        if serial == stored.value.cert_serial:
            raise FailedPrecondition(
                f"serial {serial} is the certificate host {host_id} connects with now: to "
                f"take the host out, `fleet hosts remove {host_id}`"
            )
        if serial not in stored.value.past_serials:
            known = ", ".join(stored.value.past_serials) or "none"
            raise NotFound(
                f"host {host_id} registered with no certificate of serial {serial!r} before "
                f"(its earlier serials: {known})"
            )
        if serial in state.denied:
            return pb.RevokeCertificateResponse()  # done already: asking twice is no error
        who = caller(context, insecure=self.insecure, tokens=self.token_identity).name
        record = DeniedRecord(serial=serial, host_id=host_id, by=who, at=now_iso())
        await self._caught_up(await self._store.deny_certificate(record))
        log.warning("host %s: certificate serial %s denied by %s", host_id, serial, who)
        return pb.RevokeCertificateResponse()

    async def _host_info(self, host_id: str, context: grpc.aio.ServicerContext) -> pb.HostInfo:
        """The host as ``GetHosts`` shows it: what a change of it answers."""
        [info] = (await self.GetHosts(pb.GetRequest(name=host_id), context)).hosts
        return info

    @rpc(Permission.HOSTS_WRITE)
    async def SetHostState(
        self, request: pb.SetHostStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.HostInfo:
        """Cordon (no new replicas; what runs stays) or uncordon a host. Either ends a
        drain and gives its maintenance slot back."""
        host_id = check_host_id(request.host_id)
        if request.state not in ("ready", "cordoned"):
            raise InvalidArgument(f"host state {request.state!r}: use ready or cordoned")
        state = await self._state()
        stored = _host(state, host_id)
        record = stored.value.model_copy(update={"state": request.state, "drain": None})
        maintenance = state.maintenance
        if maintenance is not None and host_id in maintenance.value.holders:
            revision = await self._store.write_host_maintenance(
                record,
                release_slot(maintenance.value, host_id),
                host_mod_revision=stored.mod_revision,
                maintenance_mod_revision=maintenance.mod_revision,
            )
            await self._caught_up(revision)
        elif record != stored.value:
            await self._caught_up(
                await self._store.write_host(record, expected_mod_revision=stored.mod_revision)
            )
        return await self._host_info(host_id, context)

    @rpc(Permission.HOSTS_WRITE)
    async def LabelHost(
        self, request: pb.LabelHostRequest, context: grpc.aio.ServicerContext
    ) -> pb.HostInfo:
        """Set or remove the labels admins give a host, by kubectl label's rules. They
        are a key of their own, which no agent session writes: a host cannot label
        itself, and its registration never undoes them."""
        host_id = check_host_id(request.host_id)
        state = await self._state()
        if host_id not in state.hosts:
            raise _not_found(host_id)
        stored = state.host_labels.get(host_id)
        current = stored.value.labels if stored else {}
        labels = edit_labels(
            current, request.set, request.remove, overwrite=request.overwrite, host=host_id
        )
        if labels != current:
            who = caller(context, insecure=self.insecure, tokens=self.token_identity)
            record = HostLabelsRecord(
                host_id=host_id, labels=labels, updated_at=now_iso(), updated_by=who.name
            )
            revision = await self._store.write_host_labels(
                record, expected_mod_revision=stored.mod_revision if stored else 0
            )
            await self._caught_up(revision)
        return await self._host_info(host_id, context)

    @rpc(Permission.HOSTS_WRITE)
    async def DrainHost(
        self, request: pb.DrainRequest, context: grpc.aio.ServicerContext
    ) -> pb.HostInfo:
        """Cordon a host and move its replicas elsewhere, make-before-break, within each
        app's disruption budget; it takes a slot of the maintenance semaphore."""
        host_id = check_host_id(request.host_id)
        deadline = request.deadline_seconds
        if not (math.isfinite(deadline) and 0 <= deadline <= _MAX_DEADLINE):
            raise InvalidArgument("the deadline must be from 0 (none) to 7 days, in seconds")
        state = await self._state()
        stored = _host(state, host_id)
        record = drain_record(
            stored.value,
            deadline_seconds=deadline,
            force=request.force,
            include_global=request.include_global,
            by="fleet drain",
            now=time.time(),
        )
        maintenance = state.maintenance
        semaphore = maintenance.value if maintenance else MaintenanceRecord()
        holders = dict(semaphore.holders)
        if not may_take_slot(semaphore, holders, host_id):
            raise FailedPrecondition(semaphore_full(semaphore, holders))
        holders.setdefault(host_id, "fleet drain")
        revision = await self._store.write_host_maintenance(
            record,
            semaphore.model_copy(update={"holders": holders}),
            host_mod_revision=stored.mod_revision,
            maintenance_mod_revision=maintenance.mod_revision if maintenance else 0,
        )
        await self._caught_up(revision)
        return await self._host_info(host_id, context)

    @rpc(Permission.HOSTS_WRITE)
    async def RemoveHost(
        self, request: pb.RemoveHostRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveHostResponse:
        """Take a host out of the pool (``fleet hosts remove``): every certificate serial
        it registered with is denied, so its stream ends on every replica and no new one
        opens; its record, labels, liveness and reports go, and its replicas are placed
        elsewhere as a lost host's. Refused while replicas are placed on it, unless
        ``force``: draining it first moves them make-before-break."""
        host_id = check_host_id(request.host_id)
        state = await self._state()
        stored = _host(state, host_id)
        placed = len(state.containers_on(host_id))
        if placed and not request.force:
            raise FailedPrecondition(
                f"host {host_id} still has {placed} replica(s): drain it first (`fleet drain "
                f"{host_id} --wait`), or remove it with --force and they are placed "
                "elsewhere as a lost host's (without waiting for their replacements)"
            )
        who = caller(context, insecure=self.insecure, tokens=self.token_identity).name
        at = now_iso()
        serials = denied_serials(stored.value)
        denied = [DeniedRecord(serial=s, host_id=host_id, by=who, at=at) for s in serials]
        maintenance = state.maintenance
        released = None
        if maintenance is not None and host_id in maintenance.value.holders:
            released = (release_slot(maintenance.value, host_id), maintenance.mod_revision)
        revision = await self._store.remove_host(
            host_id, denied, host_mod_revision=stored.mod_revision, maintenance=released
        )
        log.warning(
            "host %s removed from the pool by %s (%d replica(s) to place elsewhere); "
            "certificate serial(s) denied: %s",
            host_id,
            who,
            placed,
            ", ".join(serials) or "none known",
        )
        shown = ", ".join(serials) or "no certificate (a plaintext control plane)"
        event = pb.Event(
            time=at,
            source="controlplane",
            host=host_id,
            kind="host-removed",
            message=f"removed from the pool by {who}; certificate serial(s) denied: {shown}",
        )
        try:
            await self._events.append("controlplane", [event])
        except FleetError as error:
            log.warning("host %s: the removal's event was not stored: %s", host_id, error)
        await self._caught_up(revision)
        return pb.RemoveHostResponse(
            host_id=host_id,
            denied_serials=serials,
            replicas=placed,
            was_connected=host_id in state.alive,
            removed_by=who,
            removed_at=at,
        )

    @rpc(Permission.HOSTS_WRITE)
    async def UpgradeHosts(
        self, request: pb.UpgradeRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpgradeInfo:
        """Start, stop, resume or cancel the coordinated OS upgrade walk."""
        state = await self._state()
        stored = state.upgrade
        if request.action == "cancel":
            return await self._cancel_walk(state, context)
        walk = plan_walk(
            state,
            request.action,
            selector=request.selector,
            max_parallel=request.max_parallel,
            command=request.command,
            canary_app=request.canary_app,
            now=time.time(),
        )
        revision = await self._store.commit_upgrade(
            walk, stored.mod_revision if stored else 0, [], None, 0
        )
        await self._caught_up(revision)
        return _upgrade_info(walk)

    async def _cancel_walk(
        self, state: ClusterState, context: grpc.aio.ServicerContext
    ) -> pb.UpgradeInfo:
        step = cancel_walk(state, time.time())
        assert step.upgrade is not None and state.upgrade is not None
        revision = await self._store.commit_upgrade(
            step.upgrade,
            state.upgrade.mod_revision,
            [(h, state.hosts[h.host_id].mod_revision) for h in step.hosts.values()],
            step.maintenance,
            state.maintenance.mod_revision if state.maintenance else 0,
        )
        who = caller(context, insecure=self.insecure, tokens=self.token_identity).name
        log.warning("upgrade walk %s cancelled by %s", step.upgrade.id, who)
        at = now_iso()
        events = [
            pb.Event(time=at, source="controlplane", host=h, kind=k, message=f"{m} (by {who})")
            for k, h, m in step.events
        ]
        try:
            await self._events.append("controlplane", events)
        except FleetError as error:
            log.warning("the cancelled walk's events were not stored: %s", error)
        await self._caught_up(revision)
        return _upgrade_info(step.upgrade)

    @rpc(Permission.HOSTS_READ)
    async def GetUpgrade(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpgradeInfo:
        stored = (await self._state()).upgrade
        return _upgrade_info(stored.value) if stored else pb.UpgradeInfo()

    @rpc(Permission.HOSTS_WRITE)
    async def ReleaseHost(
        self, request: pb.ReleaseHostRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseHostResponse:
        """Give back the maintenance slot ``host_id`` took through FleetLock and never
        returned (it did not come back from its reboot): the next host may go. It stays
        cordoned (its drain ended), so nothing is placed on it until an admin uncordons
        it; a slot of ``fleet drain`` or the upgrade walk is theirs to give back."""
        host_id = check_host_id(request.host_id)
        state = await self._state()
        stored = _host(state, host_id)
        maintenance = state.maintenance
        semaphore = maintenance.value if maintenance else MaintenanceRecord()
        holder = semaphore.holders.get(host_id, "")
        hold = semaphore.fleetlock.get(host_id)
        connected = host_id in state.alive
        if holder and hold is None:
            raise FailedPrecondition(
                f"host {host_id}'s maintenance slot is held by {holder}, not FleetLock: "
                f"uncordon it (`fleet uncordon {host_id}`) to give it back"
            )
        if not holder or maintenance is None:
            return pb.ReleaseHostResponse(
                host_id=host_id, state=stored.value.state, connected=connected
            )
        record = stored.value.model_copy(update={"state": "cordoned", "drain": None})
        revision = await self._store.write_host_maintenance(
            record,
            release_slot(semaphore, host_id),
            host_mod_revision=stored.mod_revision,
            maintenance_mod_revision=maintenance.mod_revision,
        )
        who = caller(context, insecure=self.insecure, tokens=self.token_identity).name
        log.warning(
            "host %s: its FleetLock slot released by %s (held since %s)",
            host_id,
            who,
            hold.taken_at if hold else "?",
        )
        await self._caught_up(revision)
        return pb.ReleaseHostResponse(
            host_id=host_id,
            holder=holder,
            group=hold.group if hold else "",
            taken_at=hold.taken_at if hold else "",
            state=record.state,
            connected=connected,
        )
