"""Rollouts: ``fleet set image`` and ``fleet rollout`` (status, history, undo, pause,
restart). The controller steps a rollout (``controlplane.rollout``); here it is
started, paused or pointed back, by the rules of ``appchanges`` and ``revisions``."""

from __future__ import annotations

import json
import time

import grpc.aio

from fleet._time import now_iso
from fleet.controlplane.api._service import ServiceBase, app_change, plan_write
from fleet.controlplane.appchanges import plan_apply, plan_restart, plan_undo
from fleet.controlplane.appstatus import RolloutCounts, revision_outcome, rollout_counts
from fleet.controlplane.auth import Permission, rpc
from fleet.controlplane.revisions import kept_revisions, revisions_in_use, undo_target
from fleet.errors import FailedPrecondition
from fleet.proto import fleet_pb2 as pb
from fleet.spec import parse_spec_json
from fleet.store import AppWrite, ClusterState, check_name

__all__ = ["RolloutsApi"]


class RolloutsApi(ServiceBase):
    @rpc(Permission.APPS_WRITE)
    async def SetImage(
        self, request: pb.SetImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.AppChange:
        state, stored = await self._read_app(request.app)
        data = stored.value.spec.model_dump(mode="json")
        data["image"] = request.image
        spec = parse_spec_json(json.dumps(data), source=f"<image for {request.app}>")
        plan = plan_apply(
            stored.value,
            spec,
            time.time(),
            kept_revisions(state, request.app),
            cause=f"fleet set image {spec.image}",
            in_use=revisions_in_use(state, request.app),
        )
        if plan.action != "unchanged":
            await self._caught_up(
                await self._store.write_apps([plan_write(plan, stored.mod_revision)])
            )
        return app_change(plan)

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
        state, stored = await self._read_app(request.app)
        current = stored.value.revision
        revisions = sorted(
            (v.value for (a, _), v in state.revisions.items() if a == request.app),
            key=lambda r: r.revision,
        )
        rollout = state.rollouts.get(request.app)
        found = []
        for r in revisions:
            # Kept in the revision by the controller; else what the rollout record tells
            # (a revision from before outcomes were kept, or one still rolling out).
            outcome, why = r.outcome, r.outcome_reason
            if r.revision == current or not outcome:
                derived = revision_outcome(rollout.value if rollout else None, r.revision)
                outcome, why = derived if derived[0] else (outcome, why)
            found.append(
                pb.RevisionInfo(
                    revision=r.revision,
                    image=r.spec.image,
                    created_at=r.created_at,
                    cause=r.cause,
                    current=r.revision == current,
                    template_hash=r.template_hash,
                    outcome=outcome,
                    outcome_reason=why,
                )
            )
        return pb.RevisionList(app=request.app, revisions=found)

    @rpc(Permission.APPS_WRITE)
    async def RolloutUndo(
        self, request: pb.RolloutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RolloutInfo:
        state, stored = await self._read_app(request.app)
        name = request.app
        rollout = state.rollouts.get(name)
        to = undo_target(
            name,
            stored.value.revision,
            kept_revisions(state, name),
            rollout.value if rollout is not None else None,
            request.to_revision,
        )
        record = plan_undo(stored.value, state.revisions[(name, to)].value, time.time())
        await self._caught_up(await self._store.write_apps([AppWrite(record, stored.mod_revision)]))
        return self._rollout_info(self._informer.state(), name)

    @rpc(Permission.APPS_WRITE)
    async def RolloutPause(
        self, request: pb.RolloutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RolloutInfo:
        state, _ = await self._read_app(request.app)
        name = request.app
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
        state, stored = await self._read_app(request.app)
        name = request.app
        plan = plan_restart(
            stored.value, time.time(), kept_revisions(state, name), revisions_in_use(state, name)
        )
        await self._caught_up(await self._store.write_apps([plan_write(plan, stored.mod_revision)]))
        return self._rollout_info(self._informer.state(), name)
