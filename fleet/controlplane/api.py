"""The API the CLI speaks: apply, get, scale, delete.

Reads come from the informer's cache; every write is a compare-and-swap on the
revision it was planned on, and returns only once the cache has seen it, so a client
reads its own writes. Specs arrive as JSON and are validated by ``fleet.spec`` here,
whatever the client checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import secrets as secrets_module
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc.aio
from pydantic import ValidationError

from fleet._time import iso_seconds_ago, now_iso
from fleet.controlplane.apps import plan_apply, plan_restart, plan_scale, plan_undo, too_large
from fleet.controlplane.appstatus import (
    CountsCache,
    RolloutCounts,
    app_trouble,
    endpoints,
    rollout_counts,
)
from fleet.controlplane.auth import Permission, answer, authorize, caller, rpc
from fleet.controlplane.planner import plan_replicas
from fleet.controlplane.rollout import revisions_in_use
from fleet.controlplane.upgrades import selected_hosts
from fleet.controlplane.view import HostViews
from fleet.errors import (
    REQUEST,
    Conflict,
    FailedPrecondition,
    FleetError,
    InvalidArgument,
    NotFound,
    PolicyDenied,
    SpecError,
    SpecProblem,
    Unavailable,
)
from fleet.hostlabels import edit_labels
from fleet.pki.subjects import Identity, Kind, Role
from fleet.policy import Policy, refused_fields
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.secrets import SecretBox, scope_from, scope_refusals
from fleet.spec import AppSpec, Constraint, parse_spec_json
from fleet.store import (
    AppWrite,
    ClusterState,
    Informer,
    Store,
    Versioned,
    check_host_id,
    check_name,
)
from fleet.store.events import EventLog
from fleet.store.records import (
    AppRecord,
    ContainerReport,
    DeniedRecord,
    HostDrain,
    HostLabelsRecord,
    HostRecord,
    HostUpgrade,
    MaintenanceRecord,
    ReplicaRecord,
    RolloutRecord,
    SecretRecord,
    SecretScope,
    TokenRecord,
    UpgradeRecord,
    usage_key,
)

__all__ = ["FleetService", "Relay"]

# Sends a request to one host's agent and yields its answer (AgentService.relay).
Relay = Callable[[str, pb.ContainerRequest], AsyncIterator[pb.ContainerResponse]]

MAX_REPLICAS = 10_000
_CACHE_WAIT = 10.0
_PENDING_REUSE = 3.0  # seconds a follower reuses its plan of an app's pending slots

log = logging.getLogger(__name__)


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


def _reports(state: ClusterState) -> dict[tuple[str, str, int, int], pb.ContainerStatus]:
    """Every reported fleet container, keyed by (host, app, slot, revision)."""
    found: dict[tuple[str, str, int, int], pb.ContainerStatus] = {}
    for host_id, versioned in state.status.items():
        usage = versioned.value.container_usage
        for c in versioned.value.containers:
            cpu, memory = usage.get(usage_key(c.app, c.slot, c.revision), (0.0, 0))
            found[(host_id, c.app, c.slot, c.revision)] = _status_proto(c, cpu, memory)
    return found


def _rollout_trouble(rollout: RolloutRecord) -> tuple[str, str]:
    """Why the app's last rollout did not go through, until the next one starts."""
    if rollout.state == "failed":
        return "rollout-failed", rollout.message
    if rollout.rollback_of and rollout.failure:
        return "rolled-back", f"{rollout.failure}; rolled back to revision {rollout.revision}"
    return "", ""


def _status_proto(c: ContainerReport, cpu: float, memory: int) -> pb.ContainerStatus:
    """A container's report, with its live usage (from its host's status record)."""
    return pb.ContainerStatus(
        app=c.app,
        slot=c.slot,
        revision=c.revision,
        spec_hash=c.spec_hash,
        container_id=c.container_id,
        name=c.name,
        state=c.state,
        exit_code=c.exit_code,
        started_at=c.started_at,
        ports=[
            pb.PortMapping(
                host_port=p.host_port, container_port=p.container_port, protocol=p.protocol
            )
            for p in c.ports
        ],
        message=c.message,
        reason=c.reason,
        cpu=cpu,
        memory_bytes=memory,
        memory_limit=c.memory_limit,
        health=c.health,
        ready_since=c.ready_since,
        restarts=c.restarts,
    )


def _selector(values: Sequence[str]) -> list[str]:
    if len(values) > 16:
        raise InvalidArgument("at most 16 selector terms")
    try:
        return [str(Constraint.model_validate(v)) for v in values]
    except ValidationError as error:
        raise InvalidArgument(f"bad selector: {error.errors()[0]['msg']}") from None


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


def _drain_blocked(
    state: ClusterState, now: float, views: HostViews
) -> dict[str, list[pb.Pending]]:
    """For each draining host, the replicas that cannot move yet and why."""
    draining = {h for h, v in state.hosts.items() if v.value.state == "draining"}
    apps = sorted({r.value.app for r in state.replicas.values() if r.value.host in draining})
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


class FleetService(pb_grpc.FleetServiceServicer):
    def __init__(
        self,
        store: Store,
        informer: Informer,
        events: EventLog,
        relay: Relay,
        *,
        insecure: bool = False,
        secrets: SecretBox | None = None,
    ) -> None:
        self._store = store
        self._informer = informer
        self._events = events
        self._relay = relay
        self._secrets = secrets
        self.insecure = insecure  # every caller is an anonymous admin (logged at start)
        # The leading replica's controller: why each unplaced slot is pending, from its
        # last round (None while this replica does not lead).
        self.controller_pending: Callable[[], dict[str, dict[int, str]] | None] = lambda: None
        # app -> (when, why its slots are pending): a follower's own plans, reused for
        # a few seconds, since each costs a scheduling run over the app's missing slots.
        self._pending_plans: dict[str, tuple[float, dict[int, str]]] = {}
        # The control plane's memos of host views and app counts (its controller and
        # its metrics use them too).
        self.views = HostViews()
        self.counts = CountsCache()

    def _pending(
        self, state: ClusterState, app: str, now: float, *, explain: bool
    ) -> dict[int, str]:
        """Why ``app``'s unplaced slots are pending: the leader's controller knows from
        its last round. A follower asked about one app (``explain``) plans it itself, at
        most every few seconds; asked about all, it says only which slots wait, since a
        plan of every app at 100,000 replicas took seconds of the server's one thread."""
        leading = self.controller_pending()
        if leading is not None:
            return leading.get(app, {})
        # Replicas on a host that is gone (removed) wait to move, as the leader plans.
        lost = frozenset(set(state.hosts_with_replicas()) - state.hosts.keys())
        if not explain:
            spec = state.apps[app].value.spec
            if spec.mode != "replicated":
                return {}
            placed = state.replica_slots(app)
            return {
                slot: "waiting for the leading control plane to place it"
                for slot in range(spec.replicas)
                if slot not in placed or placed[slot].value.host in lost
            }
        found = self._pending_plans.get(app)
        if found is None or now - found[0] > _PENDING_REUSE:
            found = self._pending_plans[app] = (
                now,
                plan_replicas(state, app, now, lost, views=self.views).pending,
            )
        for gone in self._pending_plans.keys() - state.apps.keys():
            del self._pending_plans[gone]
        return found[1]

    async def _state(self) -> ClusterState:
        await self._informer.wait_synced()
        return self._informer.state()

    async def _caught_up(self, revision: int) -> None:
        try:
            await asyncio.wait_for(self._informer.wait_for_revision(revision), _CACHE_WAIT)
        except TimeoutError:
            raise Unavailable(
                "the change was stored, but this server's view of etcd is behind; "
                "check `fleet get` again shortly"
            ) from None

    # ------------------------------------------------------------------ writes

    @rpc(Permission.APPS_WRITE)
    async def Apply(
        self, request: pb.ApplyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyResponse:
        if not request.specs_json:
            raise InvalidArgument("apply needs at least one app spec")
        # An apply is one etcd transaction (all or nothing), as large as etcd takes.
        limit = self._store.etcd.max_txn_ops
        if len(request.specs_json) > limit:
            message = (
                f"this apply has {len(request.specs_json)} apps, and etcd takes at most "
                f"{limit} operations in one transaction (its --max-txn-ops, as `fleet "
                "server --etcd-max-txn-ops` says), each app at least one; an apply is "
                f"stored whole or not at all: split the file into applies of at most "
                f"{limit // 2} apps"
            )
            raise SpecError([SpecProblem(REQUEST, 0, "", None, message)])
        specs: list[AppSpec] = []
        for i, text in enumerate(request.specs_json, start=1):
            spec = parse_spec_json(text, source=f"<request spec {i}>")
            if any(s.name == spec.name for s in specs):
                raise InvalidArgument(f"app {spec.name!r} appears twice in one apply")
            specs.append(spec)

        state = await self._state()
        for spec in specs:
            if spec.name in request.base_generations:
                stored_app = state.apps.get(spec.name)
                now_at = stored_app.value.generation if stored_app else 0
                based_on = request.base_generations[spec.name]
                if now_at != based_on:
                    raise Conflict(
                        f"app {spec.name!r} changed since this apply was planned (generation "
                        f"{based_on}, now {now_at}): someone else applied meanwhile; "
                        "run it again to plan on the new state"
                    )
            missing = sorted(spec.secret_names() - state.secrets.keys())
            if missing:
                raise NotFound(
                    f"app {spec.name!r} uses secret {missing[0]!r}, which does not exist; "
                    f"create it with `fleet secrets set {missing[0]}`"
                )
        # Every refused field of every app at once (what the policy refuses, secrets
        # outside their scope), each named by its app's place in the request and its
        # path, for the client to point at its line.
        policy = state.current_policy
        refused = [
            SpecProblem(REQUEST, i, field, None, message)
            for i, spec in enumerate(specs, start=1)
            for field, message in [*refused_fields(spec, policy), *scope_refusals(spec, state)]
        ]
        if refused:
            raise PolicyDenied(refused)
        now = now_iso()
        changes: list[pb.AppChange] = []
        writes: list[AppWrite] = []
        for spec in specs:
            stored = state.apps.get(spec.name)
            kept = [n for (app, n) in state.revisions if app == spec.name]
            plan = plan_apply(
                stored.value if stored else None,
                spec,
                now,
                kept,
                in_use=revisions_in_use(state, spec.name),
            )
            changes.append(
                pb.AppChange(
                    app=spec.name,
                    action=plan.action,
                    fields=plan.fields,
                    generation=plan.record.generation,
                    revision=plan.record.revision,
                )
            )
            if plan.action != "unchanged":
                writes.append(
                    AppWrite(
                        plan.record,
                        stored.mod_revision if stored else 0,
                        plan.new_revision,
                        plan.prune_revisions,
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
            await self._caught_up(await self._store.write_apps(writes))
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
        record = plan_scale(stored.value, request.replicas, now_iso())
        await self._caught_up(await self._store.write_apps([AppWrite(record, stored.mod_revision)]))
        return pb.ScaleResponse(generation=record.generation, previous=previous)

    @rpc(Permission.APPS_WRITE)
    async def DeleteApp(
        self, request: pb.DeleteAppRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAppResponse:
        name = check_name(request.name)
        stored = self._app(await self._state(), name)
        revision = await self._store.delete_app(name, expected_mod_revision=stored.mod_revision)
        await self._caught_up(revision)
        return pb.DeleteAppResponse(deleted=True)

    # ------------------------------------------------------------------ rollouts

    @rpc(Permission.APPS_WRITE)
    async def SetImage(
        self, request: pb.SetImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppChange:
        state = await self._state()
        stored = self._app(state, check_name(request.app))
        data = stored.value.spec.model_dump(mode="json")
        data["image"] = request.image
        spec = parse_spec_json(json.dumps(data), source=f"<image for {request.app}>")
        plan = plan_apply(
            stored.value,
            spec,
            now_iso(),
            [n for (a, n) in state.revisions if a == request.app],
            cause=f"fleet set image {spec.image}",
            in_use=revisions_in_use(state, request.app),
        )
        if plan.action != "unchanged":
            write = AppWrite(
                plan.record, stored.mod_revision, plan.new_revision, plan.prune_revisions
            )
            await self._caught_up(await self._store.write_apps([write]))
        return pb.AppChange(
            app=request.app,
            action=plan.action,
            fields=plan.fields,
            generation=plan.record.generation,
            revision=plan.record.revision,
        )

    def _rollout_info(self, state: ClusterState, name: str) -> pb.RolloutInfo:
        record = self._app(state, name).value
        counts: RolloutCounts = rollout_counts(state, name, time.time(), self.counts)
        info = pb.RolloutInfo(
            app=name,
            replicas=record.spec.replicas,
            updated=counts.updated,
            available=counts.available,
            updated_available=counts.updated_available,
            total=counts.total,
            image=record.spec.image,
            generation=record.generation,
            min_ready_seconds=record.spec.update.min_ready,
        )
        stored = state.rollouts.get(name)
        if stored is None or stored.value.revision != record.revision:
            # The controller has not picked this revision up yet.
            info.revision, info.state = record.revision, "progressing"
            info.message = f"waiting for the controller to start revision {record.revision}"
            return info
        rollout = stored.value
        info.revision = rollout.revision
        info.from_revision = rollout.from_revision
        info.state = rollout.state
        info.message = rollout.message
        info.failure = rollout.failure
        info.paused = rollout.paused
        info.rollback_of = rollout.rollback_of
        info.started_at = rollout.started_at
        info.updated_at = rollout.updated_at
        return info

    @rpc(Permission.APPS_READ)
    async def RolloutStatus(
        self, request: pb.RolloutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RolloutInfo:
        return self._rollout_info(await self._state(), check_name(request.app))

    @rpc(Permission.APPS_READ)
    async def RolloutHistory(
        self, request: pb.RolloutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevisionList:
        state = await self._state()
        current = self._app(state, check_name(request.app)).value.revision
        revisions = sorted(
            (v.value for (a, _), v in state.revisions.items() if a == request.app),
            key=lambda r: r.revision,
        )
        return pb.RevisionList(
            app=request.app,
            revisions=[
                pb.RevisionInfo(
                    revision=r.revision,
                    image=r.spec.image,
                    created_at=r.created_at,
                    cause=r.cause,
                    current=r.revision == current,
                    template_hash=r.template_hash,
                )
                for r in revisions
            ],
        )

    @rpc(Permission.APPS_WRITE)
    async def RolloutUndo(
        self, request: pb.RolloutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RolloutInfo:
        state = await self._state()
        name = check_name(request.app)
        stored = self._app(state, name)
        current = stored.value.revision
        kept = sorted(n for (a, n) in state.revisions if a == name)
        if request.to_revision < 0:
            raise InvalidArgument("--to-revision must be a revision number (see rollout history)")
        if request.to_revision:
            to = request.to_revision
            if (name, to) not in state.revisions:
                raise NotFound(
                    f"app {name!r} has no revision {to} (kept: "
                    f"{', '.join(map(str, kept)) or 'none'}; see `fleet rollout history {name}`)"
                )
        else:
            rollout = state.rollouts.get(name)
            older = [n for n in kept if n < current]
            if rollout is not None and rollout.value.from_revision != current:
                to = rollout.value.from_revision
            elif older:
                to = older[-1]
            else:
                raise FailedPrecondition(
                    f"app {name!r} has no revision before {current} to go back to"
                )
        if to == current:
            raise FailedPrecondition(f"app {name!r} already runs revision {to}")
        record = plan_undo(stored.value, state.revisions[(name, to)].value, now_iso())
        await self._caught_up(await self._store.write_apps([AppWrite(record, stored.mod_revision)]))
        return self._rollout_info(self._informer.state(), name)

    @rpc(Permission.APPS_WRITE)
    async def RolloutPause(
        self, request: pb.RolloutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RolloutInfo:
        state = await self._state()
        name = check_name(request.app)
        self._app(state, name)
        stored = state.rollouts.get(name)
        if stored is None:
            raise FailedPrecondition(
                f"app {name!r} has no rollout yet; try again once the controller started it"
            )
        if stored.value.paused != request.paused:
            now = now_iso()
            changed = stored.value.model_copy(
                update={"paused": request.paused, "updated_at": now, "progress_at": now}
            )
            revision = await self._store.write_rollout(
                changed, expected_mod_revision=stored.mod_revision
            )
            await self._caught_up(revision)
        return self._rollout_info(self._informer.state(), name)

    @rpc(Permission.APPS_WRITE)
    async def RolloutRestart(
        self, request: pb.RolloutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RolloutInfo:
        state = await self._state()
        name = check_name(request.app)
        stored = self._app(state, name)
        plan = plan_restart(
            stored.value,
            now_iso(),
            [n for (a, n) in state.revisions if a == name],
            revisions_in_use(state, name),
        )
        write = AppWrite(plan.record, stored.mod_revision, plan.new_revision, plan.prune_revisions)
        await self._caught_up(await self._store.write_apps([write]))
        return self._rollout_info(self._informer.state(), name)

    @rpc(Permission.APPS_READ)
    async def Endpoints(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndpointList:
        state = await self._state()
        name = check_name(request.name)
        self._app(state, name)
        return pb.EndpointList(endpoints=endpoints(state, name, time.time()))

    @staticmethod
    def _app(state: ClusterState, name: str) -> Versioned[AppRecord]:
        stored = state.apps.get(name)
        if stored is None:
            raise NotFound(f"app {name!r} not found (see `fleet get apps`)")
        return stored

    # ------------------------------------------------------------------ reads

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
        for name in names:
            record = state.apps[name].value
            placed = state.replica_count(name)
            complete = (
                record.spec.mode == "replicated"
                and placed >= record.spec.replicas
                and not (gone and any(r.host in gone for r in state.replicas_of(name)))
            )
            # With every slot placed there is nothing pending to explain.
            pending = (
                {} if complete else self._pending(state, name, now, explain=bool(request.name))
            )
            counts = rollout_counts(state, name, now, self.counts)
            rollout = state.rollouts.get(name)
            # Only an app with a container not up can have one in trouble (a walk of
            # its replicas is then worth it; at 100,000 replicas most apps are up).
            reason, message = (
                app_trouble(state, name) if counts.available < counts.total else ("", "")
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
                    rollout=rollout.value.state if rollout else "",
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

    @rpc(Permission.HOSTS_READ)
    async def GetHosts(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.HostList:
        state = await self._state()
        if request.name and request.name not in state.hosts:
            raise NotFound(f"host {request.name!r} not found (see `fleet get hosts`)")
        holders = state.maintenance.value.holders if state.maintenance else {}
        blocked = _drain_blocked(state, time.time(), self.views)
        hosts = []
        for host_id in [request.name] if request.name else sorted(state.hosts):
            record = state.hosts[host_id].value
            replicas = [r for r, _ in state.containers_on(host_id)]
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
                    reserved=pb.Resources(
                        cpu=sum(r.resources.cpu for r in replicas),
                        memory_bytes=sum(r.resources.memory for r in replicas),
                    ),
                    usage=pb.Resources(
                        cpu=status.value.usage.cpu if status else 0.0,
                        memory_bytes=status.value.usage.memory if status else 0,
                    ),
                    labels=state.admin_labels(host_id),
                    agent_labels=record.labels,
                    facts=record.facts,
                    reported_capacity=pb.Resources(
                        cpu=(record.reported or record.capacity).cpu,
                        memory_bytes=(record.reported or record.capacity).memory,
                    ),
                    containers=len(replicas),
                    registered_at=record.registered_at,
                    last_heartbeat_at=status.value.reported_at if status else "",
                    address=record.address,
                    maintenance=holders.get(host_id, ""),
                    remaining=sum(1 for r in replicas if r.host == host_id),
                    blocked=blocked.get(host_id, []),
                    drain_deadline=record.drain.deadline_at if record.drain else "",
                    drain_force=record.drain.force if record.drain else False,
                    cert_serial=record.cert_serial,
                )
            )
        return pb.HostList(hosts=hosts)

    @rpc(Permission.APPS_READ)
    async def GetContainers(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.ContainerList:
        state = await self._state()
        app_filter = request.app or request.name
        if app_filter:
            check_name(app_filter)
        reports = _reports(state)
        containers: list[pb.ContainerInfo] = []
        desired_keys: set[tuple[str, str, int, int]] = set()
        replicas: list[ReplicaRecord] = [v.value for v in state.replicas.values()]
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
                )
                if key in reports:
                    info.status.CopyFrom(reports[key])
                containers.append(info)
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
        return pb.ContainerList(containers=containers)

    # ------------------------------------------------------------------ secrets

    @rpc(Permission.SECRETS_WRITE)
    async def SetSecret(
        self, request: pb.SetSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretInfo:
        name = check_name(request.name, "secret name")
        if self._secrets is None:
            raise FailedPrecondition(
                "this control plane has no secrets key; start it with --secrets-key-file"
            )
        state = await self._state()
        stored = state.secrets.get(name)
        # A new secret names who may use it; a new value keeps the scope unless given.
        scope: SecretScope | None
        if request.HasField("scope"):
            scope = scope_from(request.scope.apps, request.scope.all_apps)
        elif stored is None:
            raise InvalidArgument(
                f"secret {name!r} is new: say which apps may use it, with "
                f"`fleet secrets set {name} --apps APP[,APP...]` (or --all-apps)"
            )
        else:
            scope = stored.value.scope
        nonce, ciphertext = self._secrets.seal(name, request.value)
        now = now_iso()
        record = SecretRecord(
            name=name,
            key_id=self._secrets.key_id,
            nonce=nonce,
            ciphertext=ciphertext,
            version=stored.value.version + 1 if stored else 1,
            created_at=stored.value.created_at if stored else now,
            updated_at=now,
            scope=scope,
        )
        revision = await self._store.write_secret(
            record, expected_mod_revision=stored.mod_revision if stored else 0
        )
        await self._caught_up(revision)
        return _secret_info(record, _users(self._informer.state(), name))

    @rpc(Permission.SECRETS_WRITE)
    async def SetSecretScope(
        self, request: pb.SetSecretScopeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretInfo:
        """Replace which apps may use a secret, keeping its value. Apps outside the new
        scope keep what runs; their new containers are held (``fleet.secrets``)."""
        name = check_name(request.name, "secret name")
        scope = scope_from(request.scope.apps, request.scope.all_apps)
        state = await self._state()
        stored = state.secrets.get(name)
        if stored is None:
            raise NotFound(f"secret {name!r} not found (see `fleet secrets list`)")
        record = stored.value.model_copy(update={"scope": scope, "updated_at": now_iso()})
        await self._caught_up(
            await self._store.write_secret(record, expected_mod_revision=stored.mod_revision)
        )
        return _secret_info(record, _users(self._informer.state(), name))

    @rpc(Permission.SECRETS_READ)
    async def ListSecrets(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretList:
        state = await self._state()
        return pb.SecretList(
            secrets=[
                _secret_info(record.value, _users(state, name))
                for name, record in sorted(state.secrets.items())
                if not request.name or name == request.name
            ]
        )

    @rpc(Permission.SECRETS_WRITE)
    async def DeleteSecret(
        self, request: pb.DeleteSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSecretResponse:
        name = check_name(request.name, "secret name")
        state = await self._state()
        stored = state.secrets.get(name)
        if stored is None:
            raise NotFound(f"secret {name!r} not found (see `fleet secrets list`)")
        users = _users(state, name)
        if users:
            raise FailedPrecondition(
                f"secret {name!r} is used by app {', '.join(users)}; change those apps first"
            )
        await self._caught_up(
            await self._store.delete_secret(name, expected_mod_revision=stored.mod_revision)
        )
        return pb.DeleteSecretResponse()

    # ------------------------------------------------------------------ policy

    @rpc(Permission.APPS_READ)
    async def GetPolicy(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.Policy:
        return (await self._state()).current_policy.to_proto()

    @rpc(Permission.POLICY_WRITE)
    async def SetPolicy(self, request: pb.Policy, context: grpc.aio.ServicerContext) -> pb.Policy:
        policy = Policy.from_proto(request)
        for prefix in policy.allow_bind_mounts:
            if not prefix.startswith("/") or ".." in prefix.split("/") or "\0" in prefix:
                raise InvalidArgument(f"bind mount prefix {prefix!r} must be an absolute path")
        state = await self._state()
        stored = state.policy
        await self._caught_up(
            await self._store.write_policy(
                policy, expected_mod_revision=stored.mod_revision if stored else 0
            )
        )
        return policy.to_proto()

    # ------------------------------------------------------------------ events

    async def Events(
        self, request: pb.EventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        """Recent events, filtered, read a page at a time (the whole history may be tens
        of megabytes); the last ``limit`` only, if set; with ``follow``, then every new
        one as it is stored."""
        try:
            authorize(self, context, Permission.APPS_READ, request)
            if not math.isfinite(request.since_seconds) or request.since_seconds < 0:
                raise InvalidArgument("since_seconds must be a finite number, 0 or more")
        except FleetError as error:
            answer(context, error)
            return
        since, since_ns = "", 0
        if request.since_seconds > 0:
            since = iso_seconds_ago(request.since_seconds)
            # A batch is keyed by when it was stored, after its events happened: a
            # minute's margin, then each event's own time decides.
            since_ns = time.time_ns() - int((request.since_seconds + 60) * 1e9)

        def wanted(event: pb.Event) -> bool:
            return (
                (not request.app or event.app == request.app)
                and (not request.host or event.host == request.host)
                and event.time >= since
            )

        revision = 0
        if request.limit:
            newest, revision = await self._events.newest(request.limit, wanted, since_ns)
            for event in newest:
                yield event
        else:
            async for page, revision in self._events.pages(since_ns):  # noqa: B007
                for event in page:
                    if wanted(event):
                        yield event
        if request.follow:
            async for event in self._events.follow(revision):
                if wanted(event):
                    yield event

    # ------------------------------------------------------------------ logs, exec, top

    def _replicas(self, app: str, slot: int = -1, host: str = "") -> list[ReplicaRecord]:
        state = self._informer.state()
        self._app(state, check_name(app))
        found = [
            r
            for r in state.replicas_of(app)
            if (slot < 0 or r.slot == slot) and (not host or r.host == host)
        ]
        if not found:
            which = "" if slot < 0 else f" {slot}"
            raise NotFound(f"app {app!r} has no replica{which} placed")
        return found

    async def Logs(
        self, request: pb.LogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LogChunk]:
        """The replicas' logs, interleaved as they come (one stream per replica)."""
        try:
            authorize(self, context, Permission.LOGS, request)
            await self._informer.wait_synced()
            replicas = self._replicas(request.app, request.slot)
        except FleetError as error:
            answer(context, error)
            return
        merged: asyncio.Queue[pb.LogChunk | None] = asyncio.Queue(maxsize=1024)

        async def follow(replica: ReplicaRecord) -> None:
            ask = pb.ContainerRequest(
                app=replica.app,
                slot=replica.slot,
                logs=pb.LogsRequest(
                    follow=request.follow, tail=request.tail, timestamps=request.timestamps
                ),
            )

            def chunk(data: bytes) -> pb.LogChunk:
                return pb.LogChunk(app=replica.app, slot=replica.slot, host=replica.host, data=data)

            try:
                async for piece in self._relay(replica.host, ask):
                    if piece.data:
                        await merged.put(chunk(piece.data))
            except FleetError as error:
                await merged.put(chunk(f"fleet: {error}\n".encode()))
            finally:
                await merged.put(None)

        readers = [asyncio.create_task(follow(r)) for r in replicas]
        try:
            remaining = len(readers)
            while remaining:
                chunk = await merged.get()
                if chunk is None:
                    remaining -= 1
                else:
                    yield chunk
        finally:
            for reader in readers:
                reader.cancel()

    @rpc(Permission.EXEC)
    async def Exec(
        self, request: pb.ExecRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecResponse:
        if not request.command:
            raise InvalidArgument("exec needs a command")
        await self._informer.wait_synced()
        replica = self._replicas(request.app, request.slot)[0]
        ask = pb.ContainerRequest(
            app=replica.app, slot=replica.slot, exec=pb.ExecRequest(command=request.command)
        )
        answer = pb.ExecResponse(host=replica.host, slot=replica.slot)
        async for piece in self._relay(replica.host, ask):
            answer.output += piece.data
            if not piece.done:
                answer.exit_code = piece.exit_code
        return answer

    @rpc(Permission.PROCESSES)  # command lines may hold secrets: not for viewers
    async def Top(self, request: pb.TopRequest, context: grpc.aio.ServicerContext) -> pb.TopList:
        await self._informer.wait_synced()
        if request.app:
            replicas = self._replicas(request.app, host=request.host)
        else:
            replicas = self._informer.state().replicas_on(check_host_id(request.host))
        entries = []
        for replica in replicas:
            ask = pb.ContainerRequest(app=replica.app, slot=replica.slot, top=pb.TopRequest())
            async for piece in self._relay(replica.host, ask):
                if piece.HasField("top"):
                    piece.top.host = replica.host
                    entries.append(piece.top)
        return pb.TopList(entries=entries)

    # ------------------------------------------------------------------ hosts

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
        stored = state.hosts.get(host_id)
        if stored is None:
            raise NotFound(f"host {host_id!r} not found (see `fleet get hosts`)")
        record = stored.value.model_copy(update={"state": request.state, "drain": None})
        maintenance = state.maintenance
        holders = dict(maintenance.value.holders) if maintenance else {}
        if host_id in holders:
            assert maintenance is not None
            del holders[host_id]
            released = maintenance.value.model_copy(update={"holders": holders})
            revision = await self._store.write_host_maintenance(
                record,
                released,
                host_mod_revision=stored.mod_revision,
                maintenance_mod_revision=maintenance.mod_revision,
            )
            await self._caught_up(revision)
        elif record != stored.value:
            await self._caught_up(
                await self._store.write_host(record, expected_mod_revision=stored.mod_revision)
            )
        [info] = (await self.GetHosts(pb.GetRequest(name=host_id), context)).hosts
        return info

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
            raise NotFound(f"host {host_id!r} not found (see `fleet get hosts`)")
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
        [info] = (await self.GetHosts(pb.GetRequest(name=host_id), context)).hosts
        return info

    @rpc(Permission.HOSTS_WRITE)
    async def DrainHost(
        self, request: pb.DrainRequest, context: grpc.aio.ServicerContext
    ) -> pb.HostInfo:
        """Cordon a host and move its replicas elsewhere, make-before-break, within each
        app's disruption budget; it takes a slot of the maintenance semaphore."""
        host_id = check_host_id(request.host_id)
        if not (
            math.isfinite(request.deadline_seconds) and 0 <= request.deadline_seconds <= 7 * 86400
        ):
            raise InvalidArgument("the deadline must be from 0 (none) to 7 days, in seconds")
        state = await self._state()
        stored = state.hosts.get(host_id)
        if stored is None:
            raise NotFound(f"host {host_id!r} not found (see `fleet get hosts`)")
        record = await self._drain_record(state, host_id, request, "fleet drain")
        maintenance = state.maintenance
        semaphore = maintenance.value if maintenance else MaintenanceRecord()
        holders = dict(semaphore.holders)
        if host_id not in holders:
            if len(holders) >= semaphore.max:
                held = ", ".join(f"{h} ({why})" for h, why in sorted(holders.items()))
                raise FailedPrecondition(
                    f"the maintenance semaphore is full: {len(holders)} of {semaphore.max} "
                    f"slot(s) held by {held}; uncordon a host when it is back, or raise the "
                    "limit with `fleet upgrade-hosts --max-parallel`"
                )
            holders[host_id] = "fleet drain"
        revision = await self._store.write_host_maintenance(
            record,
            semaphore.model_copy(update={"holders": holders}),
            host_mod_revision=stored.mod_revision,
            maintenance_mod_revision=maintenance.mod_revision if maintenance else 0,
        )
        await self._caught_up(revision)
        [info] = (await self.GetHosts(pb.GetRequest(name=host_id), context)).hosts
        return info

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
        stored = state.hosts.get(host_id)
        if stored is None:
            raise NotFound(f"host {host_id!r} not found (see `fleet get hosts`)")
        placed = len(state.containers_on(host_id))
        if placed and not request.force:
            raise FailedPrecondition(
                f"host {host_id} still has {placed} replica(s): drain it first (`fleet drain "
                f"{host_id} --wait`), or remove it with --force and they are placed "
                "elsewhere as a lost host's (without waiting for their replacements)"
            )
        who = caller(context, insecure=self.insecure, tokens=self.token_identity).name
        at = now_iso()
        record = stored.value
        serials = dict.fromkeys(s for s in [*record.past_serials, record.cert_serial] if s)
        denied = [DeniedRecord(serial=s, host_id=host_id, by=who, at=at) for s in serials]
        maintenance = state.maintenance
        released = None
        if maintenance is not None and host_id in maintenance.value.holders:
            holders = {h: w for h, w in maintenance.value.holders.items() if h != host_id}
            released = (
                maintenance.value.model_copy(update={"holders": holders}),
                maintenance.mod_revision,
            )
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
            denied_serials=list(serials),
            replicas=placed,
            was_connected=host_id in state.alive,
            removed_by=who,
            removed_at=at,
        )

    @rpc(Permission.HOSTS_WRITE)
    async def UpgradeHosts(
        self, request: pb.UpgradeRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpgradeInfo:
        """Start, stop or resume the coordinated OS upgrade walk."""
        state = await self._state()
        stored = state.upgrade
        now = now_iso()
        if request.action == "start":
            if stored is not None and stored.value.state != "done":
                raise FailedPrecondition(
                    f"upgrade walk {stored.value.id} is {stored.value.state}; resume it "
                    "(`fleet upgrade-hosts --resume`) or let it finish first"
                )
            if not 1 <= (request.max_parallel or 1) <= 100:
                raise InvalidArgument("--max-parallel must be from 1 to 100")
            if len(request.command) > 4096 or "\0" in request.command:
                raise InvalidArgument("the command must be at most 4096 characters, without NUL")
            selector = _selector(request.selector)
            canary = request.canary_app
            if canary:
                check_name(canary)
                if canary not in state.apps:
                    raise NotFound(
                        f"the canary app {canary!r} does not exist (see `fleet get apps`)"
                    )
            chosen = selected_hosts(state, selector)
            if not chosen:
                raise InvalidArgument(f"no host matches {' '.join(selector) or 'the selector'}")
            walk = UpgradeRecord(
                id=f"u{int(time.time())}",
                selector=selector,
                max_parallel=request.max_parallel or 1,
                command=request.command,
                canary_app=request.canary_app,
                created_at=now,
                updated_at=now,
                hosts={h: HostUpgrade() for h in chosen},
            )
        elif request.action in ("stop", "resume"):
            if stored is None or stored.value.state == "done":
                raise FailedPrecondition("there is no upgrade walk to stop or resume")
            wanted = "stopped" if request.action == "stop" else "running"
            walk = stored.value.model_copy(update={"state": wanted, "updated_at": now})
        else:
            raise InvalidArgument(
                f"unknown action {request.action[:32]!r}: use start, stop or resume"
            )
        revision = await self._store.commit_upgrade(
            walk, stored.mod_revision if stored else 0, [], None, 0
        )
        await self._caught_up(revision)
        return _upgrade_info(walk)

    @rpc(Permission.HOSTS_READ)
    async def GetUpgrade(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpgradeInfo:
        stored = (await self._state()).upgrade
        return _upgrade_info(stored.value) if stored else pb.UpgradeInfo()

    async def _drain_record(
        self, state: ClusterState, host_id: str, request: pb.DrainRequest, by: str
    ) -> HostRecord:
        host = state.hosts[host_id].value
        if host.state == "drained" and host.drain is not None:
            return host  # already empty: draining again changes nothing
        deadline = ""
        if request.deadline_seconds:
            deadline = iso_seconds_ago(-request.deadline_seconds)
        drain = HostDrain(
            started_at=host.drain.started_at if host.drain else now_iso(),
            deadline_at=deadline,
            force=request.force,
            include_global=request.include_global,
            by=by,
        )
        return host.model_copy(update={"state": "draining", "drain": drain})

    # ------------------------------------------------------------------ tokens

    def token_identity(self, token: str) -> Identity | None:
        """Who a bearer token ``fleet_<id>_<secret>`` stands for, if it is one of ours."""
        prefix, _, rest = token.partition("_")
        token_id, _, secret = rest.partition("_")
        if prefix != "fleet" or not token_id or not secret:
            return None
        stored = self._informer.state().tokens.get(token_id)
        if stored is None:
            return None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if not hmac.compare_digest(digest, stored.value.secret_sha256):
            return None
        return Identity(
            kind=Kind.client, name=f"token:{stored.value.name}", role=Role(stored.value.role)
        )

    @rpc(Permission.TOKENS)
    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        name = check_name(request.name, "token name")
        if request.role not in ("admin", "deployer", "viewer"):
            raise InvalidArgument(f"role {request.role[:32]!r}: use admin, deployer or viewer")
        token_id = secrets_module.token_hex(6)
        secret = secrets_module.token_urlsafe(32).replace("_", "-")
        record = TokenRecord(
            id=token_id,
            name=name,
            role=request.role,
            secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
            created_at=now_iso(),
        )
        await self._caught_up(await self._store.write_token(record))
        return pb.CreateTokenResponse(id=token_id, token=f"fleet_{token_id}_{secret}")

    @rpc(Permission.TOKENS)
    async def ListTokens(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenList:
        state = await self._state()
        return pb.TokenList(
            tokens=[
                pb.TokenInfo(
                    id=t.value.id,
                    name=t.value.name,
                    role=t.value.role,
                    created_at=t.value.created_at,
                )
                for _, t in sorted(state.tokens.items())
            ]
        )

    @rpc(Permission.TOKENS)
    async def DeleteToken(
        self, request: pb.DeleteTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTokenResponse:
        token_id = check_name(request.id, "token id")
        stored = (await self._state()).tokens.get(token_id)
        if stored is None:
            raise NotFound(f"token {token_id!r} not found (see `fleet tokens list`)")
        await self._caught_up(
            await self._store.delete_token(token_id, expected_mod_revision=stored.mod_revision)
        )
        return pb.DeleteTokenResponse()


def _users(state: ClusterState, secret: str) -> list[str]:
    return sorted(n for n, a in state.apps.items() if secret in a.value.spec.secret_names())


def _secret_info(record: SecretRecord, used_by: list[str]) -> pb.SecretInfo:
    scope = record.scope
    return pb.SecretInfo(
        name=record.name,
        version=record.version,
        created_at=record.created_at,
        updated_at=record.updated_at,
        used_by=used_by,
        # One stored before scopes is used by every app, and says so.
        scope=pb.SecretScope(apps=scope.apps, all_apps=scope.all_apps)
        if scope is not None
        else pb.SecretScope(all_apps=True),
        unscoped=scope is None,
    )
