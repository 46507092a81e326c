"""Typed reads and writes of fleet's state in etcd.

Every write of desired state is one transaction guarded by the mod revisions it was
based on (a compare-and-swap, as Kubernetes' ``GuaranteedUpdate``): if anything changed
since it was read, nothing is written and ``Conflict`` is raised for the caller to
re-read and decide again. Liveness and reports are guarded on the host's session
instead, and bound to the lease of the replica serving it (``fleet.store.sessions``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from fleet._time import now_iso
from fleet.errors import Conflict, Unavailable
from fleet.policy import Policy
from fleet.store import records
from fleet.store._etcd import Compare, Delete, DeletePrefix, Etcd, Put
from fleet.store.keys import KeyLayout
from fleet.store.reportwrites import HostReport
from fleet.store.sessions import Alive, HostSessions
from fleet.store.state import Versioned
from fleet.store.written import Written

__all__ = ["TXN_KEYS", "Alive", "AppWrite", "HostReport", "Store"]

# Replicas (or reported keys) per transaction: etcd refuses more guards or operations
# than its --max-txn-ops (128 by default), and a chunk of replicas also carries the app's
# guard, the leader's fence and the rollout, revision and job records with theirs
# (_TXN_EXTRA).
TXN_KEYS = 100
_TXN_EXTRA = 6  # app, fence, rollout, job, revision guards (a put each at most), spare
_CHUNKS_IN_FLIGHT = 8  # transactions of one plan sent at once


@dataclass(frozen=True)
class AppWrite:
    """One app's part of an apply: its new record, guarded on the revision it was read at."""

    record: records.AppRecord
    expected_mod_revision: int
    new_revision: records.RevisionRecord | None = None
    prune_revisions: tuple[int, ...] = ()
    # Ingress routes the app holds after the write, each with the mod revision its
    # claim was read at (0: taken now, so it must not exist), and those it gives up.
    routes: tuple[tuple[str, int], ...] = ()
    released_routes: tuple[tuple[str, int], ...] = ()


class Store(HostSessions):
    """fleet's state in one etcd under one prefix."""

    def __init__(
        self,
        etcd: Etcd,
        layout: KeyLayout | None = None,
        *,
        fence: Compare | None = None,
        written: Written | None = None,
    ) -> None:
        self.etcd = etcd
        self.keys = layout or KeyLayout()
        # Keys per chunk of a large write: TXN_KEYS unless etcd takes fewer at once.
        self.txn_keys = min(TXN_KEYS, etcd.max_txn_ops - _TXN_EXTRA)
        # Keys per transaction of agents' reports: as many as etcd takes, for they carry
        # no fence and one guard per host, fewer than their keys. A report of 100
        # containers and the host's status record is one transaction, not two.
        self.report_keys = etcd.max_txn_ops
        # The leader's fence (see fleet.store.election): guards every write of this
        # store, so a deposed leader's controllers cannot write at all.
        self.fence = fence
        # Reports this process writes, for its informer to take as they come back.
        self.written = written if written is not None else Written()

    def fenced(self, fence: Compare) -> Store:
        """This store for a leader's controllers: every write also carries ``fence``."""
        return Store(self.etcd, self.keys, fence=fence, written=self.written)

    async def check_txn_limit(self) -> None:
        """Raise ``InvalidArgument`` unless etcd takes transactions as large as we were
        told it does (``Etcd.max_txn_ops``): a read-only one of that many guards."""
        await self.etcd.txn([Compare(self.keys.root, 0)] * self.etcd.max_txn_ops, [])

    # ------------------------------------------------------------------ apps

    async def write_apps(self, changes: Sequence[AppWrite]) -> int:
        """Create or update several apps in one transaction: all or none.

        Each app's key must still be at the mod revision its change was planned on (0:
        it must not exist yet); returns the new etcd revision. ``apps_txn_size`` says
        beforehand whether etcd takes that transaction.
        """
        guards, ops = self._apps_txn(changes)
        names = ", ".join(repr(c.record.spec.name) for c in changes)
        return await self._guarded(
            guards, ops, f"app {names} changed since this change was planned; run it again"
        )

    def apps_txn_size(self, changes: Sequence[AppWrite]) -> int:
        """The size of ``write_apps(changes)``'s one transaction as etcd counts it against
        its --max-txn-ops (``etcd.max_txn_ops``): its guards or its operations, the more."""
        guards, ops = self._apps_txn(changes)
        return max(len(guards) + (self.fence is not None), len(ops))

    def _apps_txn(
        self, changes: Sequence[AppWrite]
    ) -> tuple[list[Compare], list[Put | Delete | DeletePrefix]]:
        """Each app's guard; its record, its new revision and the revisions it prunes."""
        guards: list[Compare] = []
        ops: list[Put | Delete | DeletePrefix] = []
        for change in changes:
            name = change.record.spec.name
            guards.append(Compare(self.keys.app(name), change.expected_mod_revision))
            ops.append(Put(self.keys.app(name), change.record.dump()))
            if change.new_revision is not None:
                revision = change.new_revision
                ops.append(Put(self.keys.revision(name, revision.revision), revision.dump()))
            ops.extend(Delete(self.keys.revision(name, n)) for n in change.prune_revisions)
            # A route is taken only if nobody holds it, and kept or given up only while
            # it is still as it was read: two applies cannot both take one.
            claim = records.RouteRecord(app=name).dump()
            for route, mod in change.routes:
                guards.append(Compare(self.keys.route(route), mod))
                if mod == 0:
                    ops.append(Put(self.keys.route(route), claim))
            for route, mod in change.released_routes:
                guards.append(Compare(self.keys.route(route), mod))
                ops.append(Delete(self.keys.route(route)))
        return guards, ops

    async def delete_app(
        self, name: str, *, expected_mod_revision: int, routes: Sequence[tuple[str, int]] = ()
    ) -> int:
        """Delete an app with its revisions and replicas (the agents then stop them),
        and give up the ingress ``routes`` it holds (each with its claim's mod revision)."""
        return await self._guarded(
            [
                Compare(self.keys.app(name), expected_mod_revision),
                *(Compare(self.keys.route(route), mod) for route, mod in routes),
            ],
            [
                Delete(self.keys.app(name)),
                Delete(self.keys.rollout(name)),
                Delete(self.keys.job(name)),
                DeletePrefix(self.keys.revisions(name)),
                DeletePrefix(self.keys.replicas(name)),
                *(Delete(self.keys.route(route)) for route, _ in routes),
            ],
            f"app {name!r} changed while it was being deleted",
        )

    async def commit_replicas(
        self,
        app: str,
        *,
        app_mod_revision: int,
        put: Sequence[tuple[records.ReplicaRecord, int]],
        delete: Sequence[tuple[int, int]],
        rollout: tuple[records.RolloutRecord, int] | None = None,
        delete_rollout: int | None = None,
        app_record: records.AppRecord | None = None,
        job: tuple[records.JobRecord, int] | None = None,
        delete_job: int | None = None,
        revision: tuple[records.RevisionRecord, int] | None = None,
    ) -> int:
        """Write and delete replicas of one app, with its rollout and job records and
        (for an automatic rollback) the app itself.

        ``put`` pairs each record with the mod revision its key had when the plan was
        made (0 for a new slot); ``delete`` pairs slots with theirs, and so do
        ``rollout`` and ``delete_rollout``. The app's own mod revision guards against
        planning on a spec that has since changed. etcd takes at most 128 operations
        per transaction, so a large plan goes in transactions of ``txn_keys`` replicas,
        each guarded the same way, the records last: a conflict midway leaves the
        chunks before it, each a consistent step that the next round builds on.
        """
        replica_guards: list[Compare] = []
        replica_ops: list[Put | Delete | DeletePrefix] = []
        for record, mod in put:
            key = self.keys.replica(app, record.slot)
            replica_guards.append(Compare(key, mod))
            replica_ops.append(Put(key, record.dump()))
        for slot, mod in delete:
            key = self.keys.replica(app, slot)
            replica_guards.append(Compare(key, mod))
            replica_ops.append(Delete(key))
        app_guard = Compare(self.keys.app(app), app_mod_revision)
        conflict = f"replicas of {app!r} changed meanwhile"
        # The chunks but the last go together (etcd folds concurrent proposals into one
        # raft entry and one fsync: one at a time, a 2,000-replica app took 20 round
        # trips); each is guarded on its own, so any that failed fails the whole.
        limit = asyncio.Semaphore(_CHUNKS_IN_FLIGHT)

        size = self.txn_keys

        async def chunk(start: int) -> int:
            async with limit:
                end = start + size
                return await self._guarded(
                    [app_guard, *replica_guards[start:end]], replica_ops[start:end], conflict
                )

        last = max(0, (len(replica_ops) - 1) // size * size)
        results = await asyncio.gather(
            *(chunk(start) for start in range(0, last, size)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        replica_guards, replica_ops = replica_guards[last:], replica_ops[last:]
        guards = [app_guard, *replica_guards]
        ops: list[Put | Delete | DeletePrefix] = list(replica_ops)
        if app_record is not None:
            ops.append(Put(self.keys.app(app), app_record.dump()))
        if rollout is not None:
            rollout_record, rollout_mod = rollout
            guards.append(Compare(self.keys.rollout(app), rollout_mod))
            ops.append(Put(self.keys.rollout(app), rollout_record.dump()))
        if delete_rollout is not None:
            guards.append(Compare(self.keys.rollout(app), delete_rollout))
            ops.append(Delete(self.keys.rollout(app)))
        if revision is not None:  # its rollout's outcome
            revision_record, revision_mod = revision
            key = self.keys.revision(app, revision_record.revision)
            guards.append(Compare(key, revision_mod))
            ops.append(Put(key, revision_record.dump()))
        if job is not None:
            job_record, job_mod = job
            guards.append(Compare(self.keys.job(app), job_mod))
            ops.append(Put(self.keys.job(app), job_record.dump()))
        if delete_job is not None:
            guards.append(Compare(self.keys.job(app), delete_job))
            ops.append(Delete(self.keys.job(app)))
        return await self._guarded(guards, ops, conflict)

    async def write_rollout(
        self, rollout: records.RolloutRecord, *, expected_mod_revision: int
    ) -> int:
        """Pause or resume a rollout (the controller writes it otherwise)."""
        return await self._guarded(
            [Compare(self.keys.rollout(rollout.app), expected_mod_revision)],
            [Put(self.keys.rollout(rollout.app), rollout.dump())],
            f"the rollout of {rollout.app!r} changed meanwhile; run it again",
        )

    async def write_policy(self, policy: Policy, *, expected_mod_revision: int) -> int:
        return await self._guarded(
            [Compare(self.keys.policy(), expected_mod_revision)],
            [Put(self.keys.policy(), policy.model_dump_json().encode())],
            "the policy changed meanwhile; run it again",
        )

    async def write_registry_mirror(
        self, mirror: records.RegistryMirrorRecord | None, *, expected_mod_revision: int
    ) -> int:
        """Set the pool's registry mirror (None: clear it)."""
        key = self.keys.registry_mirror()
        return await self._guarded(
            [Compare(key, expected_mod_revision)],
            [Put(key, mirror.dump()) if mirror is not None else Delete(key)],
            "the registry mirror changed meanwhile; run it again",
        )

    async def write_token(self, token: records.TokenRecord) -> int:
        return await self._guarded(
            [Compare(self.keys.token(token.id), 0)],
            [Put(self.keys.token(token.id), token.dump())],
            f"token {token.id!r} exists already",
        )

    async def delete_token(self, token_id: str, *, expected_mod_revision: int) -> int:
        return await self._guarded(
            [Compare(self.keys.token(token_id), expected_mod_revision)],
            [Delete(self.keys.token(token_id))],
            f"token {token_id!r} changed meanwhile",
        )

    # ------------------------------------------------------------------ join tokens

    async def write_join_token(self, token: records.JoinTokenRecord) -> int:
        return await self._guarded(
            [Compare(self.keys.join_token(token.id), 0)],
            [Put(self.keys.join_token(token.id), token.dump())],
            f"join token {token.id!r} exists already",
        )

    async def use_join_token(
        self,
        token: records.JoinTokenRecord,
        *,
        expected_mod_revision: int,
        host_id: str,
        labels: records.HostLabelsRecord | None,
        labels_mod_revision: int,
    ) -> int:
        """A host joins with ``token`` (its ``used`` counted): in one transaction with
        the admin labels the token gives it, and only while no host ``host_id`` is
        registered, so two hosts never join under one id."""
        ops: list[Put | Delete | DeletePrefix] = [Put(self.keys.join_token(token.id), token.dump())]
        guards = [
            Compare(self.keys.join_token(token.id), expected_mod_revision),
            Compare(self.keys.host(host_id), 0),
        ]
        if labels is not None:
            guards.append(Compare(self.keys.host_labels(host_id), labels_mod_revision))
            ops.append(Put(self.keys.host_labels(host_id), labels.dump()))
        return await self._guarded(
            guards, ops, f"join token {token.id!r} or host {host_id!r} changed meanwhile"
        )

    async def delete_join_token(self, token_id: str, *, expected_mod_revision: int) -> int:
        return await self._guarded(
            [Compare(self.keys.join_token(token_id), expected_mod_revision)],
            [Delete(self.keys.join_token(token_id))],
            f"join token {token_id!r} changed meanwhile",
        )

    # ------------------------------------------------------------------ secrets

    async def write_secret(
        self, secret: records.SecretRecord, *, expected_mod_revision: int
    ) -> int:
        return await self._guarded(
            [Compare(self.keys.secret(secret.name), expected_mod_revision)],
            [Put(self.keys.secret(secret.name), secret.dump())],
            f"secret {secret.name!r} changed meanwhile; run it again",
        )

    async def get_secrets_key(self) -> records.SecretsKeyRecord | None:
        """The id of the key this pool's secrets are sealed with, read from etcd now."""
        kv = await self.etcd.get(self.keys.secrets_key())
        return records.SecretsKeyRecord.model_validate_json(kv.value) if kv else None

    async def record_secrets_key(self, record: records.SecretsKeyRecord) -> bool:
        """Record the pool's key id unless one is recorded already (False then)."""
        key = self.keys.secrets_key()
        result = await self.etcd.txn([Compare(key, 0)], [Put(key, record.dump())])
        return result.succeeded

    async def pool_identity(self, server_id: str) -> records.PoolRecord:
        """The pool's identity: read, or made now if etcd has none (only if absent, so
        control-plane replicas starting together agree on the first one written)."""
        key = self.keys.pool()
        made = records.PoolRecord(
            pool_id=uuid.uuid4().hex, created_by=server_id, created_at=now_iso()
        )
        result = await self.etcd.txn([Compare(key, 0)], [Put(key, made.dump())])
        if result.succeeded:
            return made
        kv = await self.etcd.get(key)
        if kv is None:
            raise Unavailable("the pool's identity was deleted while it was being read")
        return records.PoolRecord.model_validate_json(kv.value)

    async def delete_secret(self, name: str, *, expected_mod_revision: int) -> int:
        return await self._guarded(
            [Compare(self.keys.secret(name), expected_mod_revision)],
            [Delete(self.keys.secret(name))],
            f"secret {name!r} changed meanwhile; run it again",
        )

    # ------------------------------------------------------------------ hosts

    async def get_host(self, host_id: str) -> Versioned[records.HostRecord] | None:
        """One host's record, read from etcd now (not from a cache)."""
        kv = await self.etcd.get(self.keys.host(host_id))
        if kv is None:
            return None
        return Versioned(records.HostRecord.model_validate_json(kv.value), kv.mod_revision)

    async def write_host(self, host: records.HostRecord, *, expected_mod_revision: int) -> int:
        """A host's record; when it names the certificate it registered with, only while
        that certificate is not denied (a removal racing the registration wins)."""
        guards = [Compare(self.keys.host(host.host_id), expected_mod_revision)]
        if host.cert_serial:
            guards.append(Compare(self.keys.denied(host.cert_serial), 0))
        return await self._guarded(
            guards,
            [Put(self.keys.host(host.host_id), host.dump())],
            f"host {host.host_id!r} changed while it was being registered",
        )

    async def get_denied(self, serial: str) -> records.DeniedRecord | None:
        """Whether the certificate ``serial`` is denied, read from etcd now."""
        kv = await self.etcd.get(self.keys.denied(serial))
        return records.DeniedRecord.model_validate_json(kv.value) if kv is not None else None

    async def deny_certificate(self, denied: records.DeniedRecord) -> int:
        """Refuse a certificate serial on every stream (one not denied yet)."""
        return await self._guarded(
            [Compare(self.keys.denied(denied.serial), 0)],
            [Put(self.keys.denied(denied.serial), denied.dump())],
            f"certificate serial {denied.serial} is denied already",
        )

    async def remove_host(
        self,
        host_id: str,
        denied: Sequence[records.DeniedRecord],
        *,
        host_mod_revision: int,
        maintenance: tuple[records.MaintenanceRecord, int] | None = None,
    ) -> int:
        """Take a host out of the pool in one transaction: its certificates' serials
        are denied, and its record, admin labels, liveness and reports go (its replicas
        are then placed elsewhere, as a lost host's). ``maintenance``: the semaphore
        without the host's slot, with the mod revision it was read at."""
        guards = [Compare(self.keys.host(host_id), host_mod_revision)]
        ops: list[Put | Delete | DeletePrefix] = [
            Put(self.keys.denied(record.serial), record.dump()) for record in denied
        ]
        ops += [
            Delete(self.keys.host(host_id)),
            Delete(self.keys.host_labels(host_id)),
            Delete(self.keys.alive(host_id)),
            *self._session_ops(host_id),
        ]
        if maintenance is not None:
            guards.append(Compare(self.keys.maintenance(), maintenance[1]))
            ops.append(Put(self.keys.maintenance(), maintenance[0].dump()))
        return await self._guarded(
            guards, ops, f"host {host_id!r} changed while it was being removed; run it again"
        )

    async def write_host_labels(
        self, labels: records.HostLabelsRecord, *, expected_mod_revision: int
    ) -> int:
        """The labels admins set on a host (never part of its registration)."""
        return await self._guarded(
            [Compare(self.keys.host_labels(labels.host_id), expected_mod_revision)],
            [Put(self.keys.host_labels(labels.host_id), labels.dump())],
            f"the labels of host {labels.host_id!r} changed meanwhile; run it again",
        )

    async def write_host_maintenance(
        self,
        host: records.HostRecord,
        maintenance: records.MaintenanceRecord,
        *,
        host_mod_revision: int,
        maintenance_mod_revision: int,
    ) -> int:
        """A host's state with the maintenance semaphore (a drain takes a slot, an
        uncordon gives it back): one transaction, so the two never disagree."""
        return await self._guarded(
            [
                Compare(self.keys.host(host.host_id), host_mod_revision),
                Compare(self.keys.maintenance(), maintenance_mod_revision),
            ],
            [
                Put(self.keys.host(host.host_id), host.dump()),
                Put(self.keys.maintenance(), maintenance.dump()),
            ],
            f"host {host.host_id!r} or the maintenance semaphore changed meanwhile; run it again",
        )

    async def commit_upgrade(
        self,
        upgrade: records.UpgradeRecord | None,
        upgrade_mod_revision: int,
        hosts: Sequence[tuple[records.HostRecord, int]],
        maintenance: records.MaintenanceRecord | None,
        maintenance_mod_revision: int,
    ) -> int:
        """A step of the upgrade walk: its record, the hosts it drains or uncordons and
        the semaphore, in one transaction guarded on what the step was planned on."""
        guards = [Compare(self.keys.upgrade(), upgrade_mod_revision)]
        ops: list[Put | Delete | DeletePrefix] = []
        if upgrade is not None:
            ops.append(Put(self.keys.upgrade(), upgrade.dump()))
        for host, mod in hosts:
            guards.append(Compare(self.keys.host(host.host_id), mod))
            ops.append(Put(self.keys.host(host.host_id), host.dump()))
        if maintenance is not None:
            guards.append(Compare(self.keys.maintenance(), maintenance_mod_revision))
            ops.append(Put(self.keys.maintenance(), maintenance.dump()))
        return await self._guarded(guards, ops, "the upgrade walk's state changed meanwhile")

    # ------------------------------------------------------------------

    async def _guarded(
        self, guards: list[Compare], ops: Sequence[Put | Delete | DeletePrefix], conflict: str
    ) -> int:
        if self.fence is not None:
            guards = [*guards, self.fence]
        result = await self.etcd.txn(guards, ops)
        if not result.succeeded:
            raise Conflict(conflict)
        return result.revision
