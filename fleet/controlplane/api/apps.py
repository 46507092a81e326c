"""Apps: apply, scale and delete them; read them, their containers and endpoints.

Specs arrive as JSON and are validated by ``fleet.spec`` here, whatever the client
checked; what an apply writes, and what refuses it, is ``appchanges``' rule. An apply
is one etcd transaction: all of it, or nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

import grpc.aio

from fleet.controlplane.api._service import ServiceBase, app_change, plan_write
from fleet.controlplane.appchanges import (
    check_apply,
    plan_apply,
    plan_routes,
    plan_scale,
    routes_held,
    too_large,
    too_many,
)
from fleet.controlplane.appstatus import app_trouble, rollout_counts, rollout_word
from fleet.controlplane.auth import Permission, answer, authorize, rpc
from fleet.controlplane.endpointwatch import endpoints_of, watch_endpoints
from fleet.controlplane.planner import plan_replicas
from fleet.controlplane.reports import status_proto
from fleet.controlplane.revisions import kept_revisions, revisions_in_use
from fleet.errors import REQUEST, Conflict, FleetError, InvalidArgument, SpecError, SpecProblem
from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppSpec, parse_spec_json
from fleet.store import AppWrite, ClusterState, Versioned, check_name
from fleet.store.records import ReplicaRecord, RolloutRecord, usage_key

__all__ = ["MAX_REPLICAS", "AppsApi"]

MAX_REPLICAS = 10_000

log = logging.getLogger(__name__)

# Seconds a GetApps of every app counts before it lets the event loop turn.
TURN_SECONDS = 0.02

ReportKey = tuple[str, str, int, int]  # host, app, slot, revision


def _dry_run_state(state: ClusterState, writes: list[AppWrite]) -> ClusterState:
    """``state`` as it would be after ``writes``, for planning without writing."""
    apps = dict(state.apps)
    revisions = dict(state.revisions)
    for write in writes:
        apps[write.record.spec.name] = Versioned(write.record, 0)
        if write.new_revision is not None:
            key = (write.record.spec.name, write.new_revision.revision)
            revisions[key] = Versioned(write.new_revision, 0)
    return ClusterState(
        revision=state.revision,
        apps=apps,
        revisions=revisions,
        replicas=state.replicas,
        hosts=state.hosts,
        alive=state.alive,
        status=state.status,
    )


def _reports(
    state: ClusterState, app: str = "", host: str = ""
) -> dict[ReportKey, pb.ContainerStatus]:
    """Every reported fleet container (of ``app``, on ``host``: only those are read),
    keyed by (host, app, slot, revision)."""
    found: dict[ReportKey, pb.ContainerStatus] = {}
    if app:
        for (slot, revision, host_id), c in state.reports_of(app).items():
            status = state.status.get(host_id)
            if status is None or (host and host_id != host):
                continue
            usage = status.value.container_usage
            cpu, memory = usage.get(usage_key(app, slot, revision), (0.0, 0))
            found[(host_id, app, slot, revision)] = status_proto(c, cpu, memory)
        return found
    for host_id in [host] if host else state.status:
        versioned = state.status.get(host_id)
        if versioned is None:
            continue
        by_key = versioned.value.container_usage.as_dict()  # (a lookup in the table scans)
        for c in versioned.value.containers:
            cpu, memory = by_key.get(usage_key(c.app, c.slot, c.revision), (0.0, 0))
            found[(host_id, c.app, c.slot, c.revision)] = status_proto(c, cpu, memory)
    return found


def _rollout_trouble(rollout: RolloutRecord) -> tuple[str, str]:
    """Why the app's last rollout did not go through, until the next one starts."""
    if rollout.state == "failed":
        return "rollout-failed", rollout.message
    if rollout.rollback_of and rollout.failure:
        return "rolled-back", f"{rollout.failure}; rolled back to revision {rollout.revision}"
    return "", ""


def _job_info(state: ClusterState, app: str, running: int) -> pb.JobInfo | None:
    stored = state.apps[app].value.spec
    if stored.mode != "job":
        return None
    found = state.jobs.get(app)
    info = pb.JobInfo(
        state="running",
        completions=stored.job_completions,
        parallelism=stored.job_parallelism,
        backoff_limit=stored.job_backoff_limit,
        running=running,
    )
    if found is not None:
        job = found.value
        info.state, info.message = job.state, job.message
        info.succeeded, info.failed = len(job.succeeded), job.failure_count
        info.started_at, info.finished_at = job.started_at, job.finished_at
        for slot, code in job.exit_codes.items():
            info.exit_codes[slot] = code
    return info


class AppsApi(ServiceBase):
    def _pending(
        self, state: ClusterState, name: str, now: float, gone: set[str], *, explain: bool
    ) -> dict[int, str]:
        """Why ``name``'s unplaced slots wait (``gone``: hosts that replicas name but
        that were removed, whose replicas wait to move)."""
        spec = state.apps[name].value.spec
        complete = (
            spec.mode == "replicated"
            and state.replica_count(name) >= spec.replicas
            and not (gone and any(r.host in gone for r in state.replicas_of(name)))
        )
        # With every slot placed there is nothing pending to explain.
        return {} if complete else self.pending.of(state, name, now, explain=explain)

    @rpc(Permission.APPS_WRITE)
    async def Apply(
        self, request: pb.ApplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyResponse:
        if not request.specs_json:
            raise InvalidArgument("apply needs at least one app spec")
        # An apply is one etcd transaction (all or nothing), as large as etcd takes.
        limit = self._store.etcd.max_txn_ops
        if len(request.specs_json) > limit:
            message = too_many(len(request.specs_json), limit)
            raise SpecError([SpecProblem(REQUEST, 0, "", None, message)])
        specs: list[AppSpec] = []
        for i, text in enumerate(request.specs_json, start=1):
            spec = parse_spec_json(text, source=f"<request spec {i}>")
            if any(s.name == spec.name for s in specs):
                raise InvalidArgument(f"app {spec.name!r} appears twice in one apply")
            specs.append(spec)

        state = await self._state()
        check_apply(specs, state, request.base_generations)
        routes = plan_routes(specs, state)
        now = time.time()
        changes: list[pb.AppChange] = []
        writes: list[AppWrite] = []
        for spec in specs:
            stored = state.apps.get(spec.name)
            plan = plan_apply(
                stored.value if stored else None,
                spec,
                now,
                kept_revisions(state, spec.name),
                in_use=revisions_in_use(state, spec.name),
            )
            changes.append(app_change(plan))
            if plan.action != "unchanged":
                write = plan_write(plan, stored.mod_revision if stored else 0)
                route_plan = routes[spec.name]
                writes.append(
                    dataclasses.replace(
                        write, routes=route_plan.held, released_routes=route_plan.released
                    )
                )
        size = self._store.apps_txn_size(writes)
        if size > limit:
            most = max(self._store.apps_txn_size([write]) for write in writes)
            message = too_large(len(writes), size, limit, most)
            raise SpecError([SpecProblem(REQUEST, 0, "", None, message)])
        if request.dry_run:
            future = _dry_run_state(state, writes)
            for change in changes:
                replica_plan = plan_replicas(future, change.app, time.time())
                change.placements.extend(
                    pb.Placement(app=change.app, slot=r.slot, host=r.host)
                    for r, mod in replica_plan.put
                    if mod == 0
                )
                change.pending.extend(
                    pb.Pending(app=change.app, slot=slot, reason=reason)
                    for slot, reason in sorted(replica_plan.pending.items())
                )
        elif writes:
            try:
                revision = await self._store.write_apps(writes)
            except Conflict:
                # Another apply may have taken a route first: say whose it is now, not
                # only that something changed.
                log.info("apply of %s lost a race; re-reading to say why", [s.name for s in specs])
                await self._caught_up(await self._store.etcd.revision())
                plan_routes(specs, await self._state())
                raise
            await self._caught_up(revision)
        return pb.ApplyResponse(changes=changes)

    @rpc(Permission.APPS_WRITE)
    async def Scale(
        self, request: pb.ScaleRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScaleResponse:
        name = check_name(request.name)
        if request.replicas > MAX_REPLICAS:
            raise InvalidArgument(f"replicas must be at most {MAX_REPLICAS}")
        stored = self._app(await self._state(), name)
        previous = stored.value.spec.replicas
        if previous == request.replicas:
            return pb.ScaleResponse(generation=stored.value.generation, previous=previous)
        record = plan_scale(stored.value, request.replicas, time.time())
        await self._caught_up(await self._store.write_apps([AppWrite(record, stored.mod_revision)]))
        return pb.ScaleResponse(generation=record.generation, previous=previous)

    @rpc(Permission.APPS_WRITE)
    async def DeleteApp(
        self, request: pb.DeleteAppRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAppResponse:
        name = check_name(request.name)
        state = await self._state()
        stored = self._app(state, name)
        revision = await self._store.delete_app(
            name,
            expected_mod_revision=stored.mod_revision,
            routes=sorted(routes_held(state, name).items()),
        )
        await self._caught_up(revision)
        return pb.DeleteAppResponse(deleted=True)

    @rpc(Permission.APPS_READ)
    async def GetApps(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppList:
        state = await self._state()
        names = [check_name(request.name)] if request.name else sorted(state.apps)
        if request.name:
            self._app(state, request.name)
        now = time.time()
        apps = []
        # Hosts that replicas name but that are gone (removed): their replicas wait to
        # move, pending (a cheap set of hosts; an app's replicas are walked only then).
        gone = set(state.hosts_with_replicas()) - state.hosts.keys()
        turned = time.monotonic()
        for name in names:
            if time.monotonic() - turned >= TURN_SECONDS:
                # The loop turns: the first count after a restart (50 apps of 2,000
                # replicas) held it for over a second, every agent's heartbeat waiting.
                # The apps after the turn are read from the newest state: the counts'
                # cache goes forward, and an older state would be counted from scratch.
                await asyncio.sleep(0)
                turned = time.monotonic()
                if (newer := self._informer.state()) is not state:
                    state = newer
                    gone = set(state.hosts_with_replicas()) - state.hosts.keys()
                if name not in state.apps:
                    continue  # deleted meanwhile
            record = state.apps[name].value
            placed = state.replica_count(name)
            pending = self._pending(state, name, now, gone, explain=bool(request.name))
            counts = rollout_counts(state, name, now, self.counts)
            rollout = state.rollouts.get(name)
            # Only an app with a container not up can have one in trouble (a walk of
            # its replicas is then worth it; at 100,000 replicas most apps are up).
            reason, message = (
                app_trouble(state, name, self.counts)
                if counts.available < counts.total
                else ("", "")
            )
            if not reason and rollout is not None:
                reason, message = _rollout_trouble(rollout.value)
            spec = record.spec
            desired = spec.replicas
            if spec.mode == "global":
                desired = placed + len(pending)
            elif spec.mode == "job":
                desired = spec.job_parallelism
            apps.append(
                pb.AppInfo(
                    name=name,
                    spec_json=record.spec.model_dump_json(),
                    generation=record.generation,
                    revision=record.revision,
                    desired=desired,
                    mode=spec.mode,
                    job=_job_info(state, name, counts.running),
                    placed=placed,
                    running=counts.running,
                    available=counts.available,
                    updated=counts.updated,
                    rollout=rollout_word(
                        rollout.value if rollout else None, counts.available, desired
                    ),
                    reason=reason,
                    message=message,
                    pending=[
                        pb.Pending(app=name, slot=slot, reason=reason)
                        for slot, reason in sorted(pending.items())
                    ],
                    created_at=record.created_at,
                    updated_at=record.updated_at,
                )
            )
        return pb.AppList(apps=apps)

    @rpc(Permission.APPS_READ)
    async def GetContainers(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.ContainerList:
        state = await self._state()
        app_filter = request.app or request.name
        if app_filter:
            check_name(app_filter)
        # Only the app's (the host's) replicas and reports are read: at 100,000 replicas
        # `fleet ps APP` no longer walks every container of every app.
        reports = _reports(state, app_filter, request.host)
        containers: list[pb.ContainerInfo] = []
        desired_keys: set[ReportKey] = set()
        replicas: list[ReplicaRecord]
        if app_filter:
            replicas = state.replicas_of(app_filter)
        elif request.host:
            replicas = state.replicas_on(request.host)
        else:
            replicas = [v.value for v in state.replicas.values()]
        for replica in sorted(replicas, key=lambda r: (r.app, r.slot)):
            for container in replica.containers():
                revision, host = container.revision, container.host
                key = (host, replica.app, replica.slot, revision)
                desired_keys.add(key)
                if (app_filter and replica.app != app_filter) or (
                    request.host and host != request.host
                ):
                    continue
                info = pb.ContainerInfo(
                    app=replica.app,
                    slot=replica.slot,
                    host=host,
                    revision=revision,
                    desired="running",
                    replacement=container.next,
                )
                if key in reports:
                    info.status.CopyFrom(reports[key])
                containers.append(info)
        if not request.host:
            containers.extend(self._unplaced(state, app_filter, containers))
        # Containers a host still runs although they are no longer desired there.
        for (host_id, app, slot, revision), report in sorted(reports.items()):
            if (host_id, app, slot, revision) in desired_keys:
                continue
            if (app_filter and app != app_filter) or (request.host and host_id != request.host):
                continue
            containers.append(
                pb.ContainerInfo(
                    app=app, slot=slot, host=host_id, revision=report.revision, status=report
                )
            )
        # By replica: its own container, its replacement, then what still runs of it.
        containers.sort(key=lambda c: (c.app, c.slot, c.replacement, not c.desired))
        return pb.ContainerList(containers=containers)

    def _unplaced(
        self, state: ClusterState, app_filter: str, listed: list[pb.ContainerInfo]
    ) -> list[pb.ContainerInfo]:
        """A row for each slot no host takes yet, with why (``fleet ps`` lists every
        replica, as ``kubectl get pods`` lists Pending ones); a slot placed on a host
        that is gone keeps its row, and is told why it waits."""
        now = time.time()
        gone = set(state.hosts_with_replicas()) - state.hosts.keys()
        rows = {(c.app, c.slot): c for c in listed if not c.replacement}
        found: list[pb.ContainerInfo] = []
        for name in [app_filter] if app_filter else sorted(state.apps):
            if name not in state.apps or state.apps[name].value.spec.mode == "global":
                continue  # a global app wants one per fitting host: none is "unplaced"
            pending = self._pending(state, name, now, gone, explain=bool(app_filter))
            for slot, reason in sorted(pending.items()):
                row = rows.get((name, slot))
                if row is not None:
                    row.pending = reason
                else:
                    found.append(pb.ContainerInfo(app=name, slot=slot, pending=reason))
        return found

    @rpc(Permission.APPS_READ)
    async def Endpoints(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndpointList:
        # No name: every app's (an unknown name is NotFound, not an empty list).
        state = (await self._read_app(request.name))[0] if request.name else await self._state()
        return pb.EndpointList(
            endpoints=endpoints_of(state, request.name, time.time(), self.endpoint_cache)
        )

    async def WatchEndpoints(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.EndpointList]:
        """The app's endpoints now, then whenever they change (``endpointwatch``)."""
        try:
            authorize(self, context, Permission.APPS_READ, request)
            if request.name:
                await self._read_app(request.name)  # an unknown app: NotFound, not silence
        except FleetError as error:
            answer(context, error)
            return
        async for found in watch_endpoints(self._informer, request.name, cache=self.endpoint_cache):
            yield found
