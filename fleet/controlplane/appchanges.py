"""What an apply, a scale, a restart or an undo writes: pure decisions over the stored
app record.

The generation rises with every change of the spec; the revision rises only when the
container template changes (a change of ``replicas`` alone makes none), as Kubernetes
does for Deployments and their ReplicaSets. How revisions are numbered and pruned is
``revisions``' rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fleet._time import iso_at
from fleet.controlplane.revisions import REVISION_HISTORY, next_revision, pruned, revision_hash
from fleet.errors import REQUEST, Conflict, NotFound, PolicyDenied, SpecError, SpecProblem
from fleet.policy import refused_fields
from fleet.secrets import scope_refusals
from fleet.spec import AppSpec, template_of
from fleet.store import ClusterState
from fleet.store.records import AppRecord, RevisionRecord

__all__ = [
    "AppChangePlan",
    "RoutePlan",
    "check_apply",
    "plan_apply",
    "plan_restart",
    "plan_routes",
    "plan_scale",
    "plan_undo",
    "routes_held",
    "too_large",
    "too_many",
]

Action = Literal["created", "changed", "unchanged"]


@dataclass(frozen=True)
class AppChangePlan:
    action: Action
    record: AppRecord
    fields: tuple[str, ...]  # top-level spec fields that differ
    new_revision: RevisionRecord | None
    prune_revisions: tuple[int, ...]


def _changed_fields(old: AppSpec, new: AppSpec) -> tuple[str, ...]:
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return tuple(name for name in after if before.get(name) != after[name])


def check_apply(
    specs: Sequence[AppSpec], state: ClusterState, base_generations: Mapping[str, int]
) -> None:
    """Refuse an apply of ``specs`` on ``state`` before it is planned: Conflict when an
    app changed since the generation the client planned on (``base_generations``: app
    -> generation, 0 for new), NotFound when it uses a secret that does not exist, and
    PolicyDenied with every field of every app that the policy refuses or that uses a
    secret outside its scope, each named by its app's place in the request and its
    path, for the client to point at its line."""
    for spec in specs:
        if spec.name in base_generations:
            stored = state.apps.get(spec.name)
            now_at = stored.value.generation if stored else 0
            based_on = base_generations[spec.name]
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
    policy = state.current_policy
    refused = [
        SpecProblem(REQUEST, i, field, None, message)
        for i, spec in enumerate(specs, start=1)
        for field, message in [*refused_fields(spec, policy), *scope_refusals(spec, state)]
    ]
    if refused:
        raise PolicyDenied(refused)


@dataclass(frozen=True)
class RoutePlan:
    """An app's ingress routes after an apply: those it holds, each with the mod
    revision its claim was read at (0: taken by this apply), and those it gives up."""

    held: tuple[tuple[str, int], ...] = ()
    released: tuple[tuple[str, int], ...] = ()


def routes_held(state: ClusterState, app: str) -> dict[str, int]:
    """The routes ``app`` holds, with their claims' mod revisions."""
    return {r: v.mod_revision for r, v in state.routes.items() if v.value.app == app}


def _route_words(route: str) -> str:
    kind, _, rest = route.partition(":")
    if kind == "tcp":
        return f"tcp port {rest} of the edges"
    host, _, path = rest.partition("/")
    return f"host {host} path /{path}"


def plan_routes(specs: Sequence[AppSpec], state: ClusterState) -> dict[str, RoutePlan]:
    """Each app's routes after an apply of ``specs`` on ``state``, by app name; a
    ``SpecError`` naming every route another app holds (or that two apps of the
    request claim), at its app's place in the request, with the holder and the way
    out. The claims are written in the apply's own transaction (``Store.write_apps``),
    created only if absent, so of two concurrent applies claiming one route one wins
    and the other is refused on the state it then re-reads."""
    plans: dict[str, RoutePlan] = {}
    problems: list[SpecProblem] = []
    claimed_here: dict[str, str] = {}  # route -> the app of this request claiming it
    for i, spec in enumerate(specs, start=1):
        ingress = spec.ingress
        wanted = ingress.route_names(spec.name) if ingress is not None else []
        field = "ingress" if ingress is None else "ingress.tcp" if ingress.tcp else "ingress.host"
        for route in wanted:
            holder = state.routes.get(route)
            other = holder.value.app if holder is not None else claimed_here.get(route)
            claimed_here.setdefault(route, spec.name)
            if other is None or other == spec.name:
                continue
            where = "" if holder is not None else " in this same apply"
            fix = (
                "choose another port for tcp"
                if route.startswith("tcp:")
                else "choose another host name or path"
            )
            problems.append(
                SpecProblem(
                    REQUEST,
                    i,
                    field,
                    None,
                    f"the ingress route {_route_words(route)} is already claimed by app "
                    f"{other!r}{where}: {fix}, or first remove the ingress of {other!r} "
                    f"(apply it without one, or `fleet delete app {other}`)",
                )
            )
        own = routes_held(state, spec.name)
        plans[spec.name] = RoutePlan(
            held=tuple((route, own.get(route, 0)) for route in wanted),
            released=tuple((r, mod) for r, mod in sorted(own.items()) if r not in wanted),
        )
    if problems:
        raise SpecError(problems)
    return plans


def too_many(apps: int, limit: int) -> str:
    """Why an apply of ``apps`` apps is refused before it is read further: etcd takes at
    most ``limit`` operations in one transaction, and each app takes at least one."""
    return (
        f"this apply has {apps} apps, and etcd takes at most "
        f"{limit} operations in one transaction (its --max-txn-ops, as `fleet "
        "server --etcd-max-txn-ops` says), each app at least one; an apply is "
        f"stored whole or not at all: split the file into applies of at most "
        f"{limit // 2} apps"
    )


def too_large(apps: int, operations: int, limit: int, per_app: int) -> str:
    """Why an apply is refused whole: its ``apps`` apps take ``operations`` etcd
    operations (the most one of them: ``per_app``), and etcd takes at most ``limit`` in
    one transaction (its --max-txn-ops). An apply is one transaction: all or nothing."""
    fit = max(1, limit // max(1, per_app))
    return (
        f"this apply writes {apps} apps in {operations} etcd operations (each app's record, "
        f"its new revision and the old ones it prunes), and etcd takes at most {limit} in "
        "one transaction (its --max-txn-ops, as `fleet server --etcd-max-txn-ops` says); "
        "an apply is stored whole or not at all, so nothing was: split the file into "
        f"applies of at most {fit} apps"
    )


def plan_apply(
    old: AppRecord | None,
    spec: AppSpec,
    now: float,
    kept_revisions: Iterable[int] = (),
    history: int = REVISION_HISTORY,
    *,
    cause: str = "fleet apply",
    in_use: Iterable[int] = (),
) -> AppChangePlan:
    """Decide what applying ``spec`` over ``old`` writes (``now`` stamps new records);
    a new template makes a new revision (``revisions.next_revision``)."""
    stamp = iso_at(now)
    if old is None:
        record = AppRecord(spec=spec, generation=1, revision=1, created_at=stamp, updated_at=stamp)
        revision = RevisionRecord(
            app=spec.name,
            revision=1,
            template_hash=spec.template_hash(),
            spec=spec,
            created_at=stamp,
            cause=cause,
        )
        return AppChangePlan("created", record, tuple(type(spec).model_fields), revision, ())
    fields = _changed_fields(old.spec, spec)
    if not fields:
        return AppChangePlan("unchanged", old, (), None, ())
    new_revision: RevisionRecord | None = None
    number = old.revision
    prune: tuple[int, ...] = ()
    kept = set(kept_revisions)
    if spec.template_hash() != old.spec.template_hash():
        number = next_revision(kept, old.revision)
        new_revision = RevisionRecord(
            app=spec.name,
            revision=number,
            template_hash=revision_hash(spec, old.restarted_at),
            spec=spec,
            created_at=stamp,
            cause=cause,
        )
        prune = pruned(kept, number, {*in_use, old.revision}, history)
    record = old.model_copy(
        update={
            "spec": spec,
            "generation": old.generation + 1,
            "revision": number,
            "updated_at": stamp,
        }
    )
    return AppChangePlan("changed", record, fields, new_revision, prune)


def plan_restart(
    old: AppRecord,
    now: float,
    kept_revisions: Iterable[int],
    in_use: Iterable[int] = (),
    history: int = REVISION_HISTORY,
) -> AppChangePlan:
    """``fleet rollout restart``: a new revision of the same template, so every replica
    is replaced (gated like any rollout)."""
    stamp = iso_at(now)
    kept = set(kept_revisions)
    number = next_revision(kept, old.revision)
    revision = RevisionRecord(
        app=old.spec.name,
        revision=number,
        template_hash=revision_hash(old.spec, stamp),
        spec=old.spec,
        created_at=stamp,
        cause="fleet rollout restart",
    )
    record = old.model_copy(
        update={
            "generation": old.generation + 1,
            "revision": number,
            "restarted_at": stamp,
            "updated_at": stamp,
        }
    )
    prune = pruned(kept, number, {*in_use, old.revision}, history)
    return AppChangePlan("changed", record, ("restarted_at",), revision, prune)


def plan_undo(old: AppRecord, to: RevisionRecord, now: float) -> AppRecord:
    """Point the app back at revision ``to``: its template, today's count and placement."""
    stamp = iso_at(now)
    return old.model_copy(
        update={
            "spec": template_of(old.spec, to.spec),
            "revision": to.revision,
            "generation": old.generation + 1,
            "updated_at": stamp,
        }
    )


def plan_scale(old: AppRecord, replicas: int, now: float) -> AppRecord:
    """The record after ``fleet scale``: same template, same revision."""
    stamp = iso_at(now)
    spec = old.spec.model_copy(update={"replicas": replicas})
    return old.model_copy(
        update={"spec": spec, "generation": old.generation + 1, "updated_at": stamp}
    )
