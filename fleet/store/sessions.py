"""A host's session in etcd: the liveness key its serving replica binds to that
replica's lease, and the status and container reports the session writes under it.

A session is named by its liveness key's mod revision and guards every write of it; a
new connection of the host takes the keys over (``mark_alive``), and a session's end
takes them away (``mark_gone``). The seats of the replicas (``get_serving``) say which
lease a restarted replica takes over with its hosts' keys. ``Store`` is these methods
and the desired state's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from fleet.errors import Conflict, FleetError
from fleet.store import records
from fleet.store._etcd import Compare, Delete, DeletePrefix, Etcd, LeaseIs, Put
from fleet.store.keys import ALIVE, KeyLayout
from fleet.store.reportwrites import HostReport, write_reports
from fleet.store.written import Written

__all__ = ["Alive", "HostSessions"]


@dataclass(frozen=True)
class Alive:
    """A host's new session (``Store.mark_alive``): its number, the previous one's (0:
    none), whether it kept the previous one's keys (they were bound to the same lease)
    and the reports it kept (read back, unless the caller reads them itself)."""

    session: int
    previous: int
    reports: list[records.ContainerReport]
    kept: bool = False


class HostSessions:
    """The session keys' reads and writes (``Store`` has them, with what they need)."""

    etcd: Etcd
    keys: KeyLayout
    report_keys: int  # keys a transaction of agents' reports holds at most
    written: Written  # reports this process writes, for its informer

    async def grant_lease(self, ttl: int) -> int:
        """A lease for a control plane replica's hosts: their keys go when it expires."""
        return await self.etcd.grant(ttl)

    async def get_serving(self, seat: str) -> records.ServingRecord | None:
        """The lease the replica in ``seat`` bound its hosts' keys to, if it lives."""
        kv = await self.etcd.get(self.keys.serving(seat))
        return records.ServingRecord.model_validate_json(kv.value) if kv is not None else None

    async def put_serving(self, seat: str, record: records.ServingRecord) -> None:
        """Record the lease of the replica in ``seat``, bound to that lease (one writer:
        the replica in the seat)."""
        await self.etcd.put(self.keys.serving(seat), record.dump(), lease=record.lease)

    async def sessions_on(self, lease: int) -> list[tuple[str, int]]:
        """The hosts whose liveness key is bound to ``lease``, each with its session
        (the key's mod revision)."""
        kvs, _ = await self.etcd.get_prefix(self.keys.folder_prefix(ALIVE))
        sessions = []
        for kv in kvs:
            parsed = self.keys.parse_or_warn(kv.key)
            if kv.lease == lease and parsed is not None and parsed.folder is ALIVE:
                sessions.append((parsed.parts[0], kv.mod_revision))
        return sessions

    async def mark_alive(
        self, host_id: str, live: records.LiveRecord, lease: int, *, read_reports: bool = True
    ) -> Alive:
        """Mark a host connected, its liveness key bound to ``lease`` (its control plane
        replica's own); the key's new mod revision names the session and guards every
        later write of it.

        A new connection of the same host takes over. When the previous session's keys
        are bound to another lease, they go in the same transaction (an agent that
        reconnects to another replica need not wait for the old one's lease to expire).
        When they are bound to ``lease`` (a reconnect to the same replica, or to the one
        restarted in its seat), the host's status and reports stay, and are read back
        (unless not ``read_reports``: the caller reads them) for the new session's
        writer to start from: a reconnect writes only what changed. The transaction is
        guarded on the key as it was read, so two sessions racing cannot both hold it;
        a write of the previous session, guarded on it, can no longer land after it.
        """
        key = self.keys.alive(host_id)
        previous = await self.etcd.get(key)
        kept = previous is not None and previous.lease == lease
        ops: list[Put | Delete | DeletePrefix] = []
        if previous is not None and not kept:
            ops = self._session_ops(host_id)  # the liveness key itself is overwritten
        ops.append(Put(key, live.dump(), lease))
        guard = Compare(key, previous.mod_revision if previous is not None else 0)
        result = await self.etcd.txn([guard], ops)
        if not result.succeeded:
            raise Conflict(f"host {host_id!r} connected twice at once; retry")
        return Alive(
            session=result.revision,
            previous=previous.mod_revision if previous is not None else 0,
            reports=await self.reports_on(host_id) if kept and read_reports else [],
            kept=kept,
        )

    async def mark_alive_as_shown(
        self,
        host_id: str,
        live: records.LiveRecord,
        lease: int,
        *,
        host_revision: int,
        alive_revision: int,
    ) -> Alive | None:
        """``mark_alive`` in one round trip instead of three, for a host whose keys an
        informer shows: its record at ``host_revision`` (the caller found the
        registration changes nothing of it) and its liveness key at ``alive_revision``
        (0: none). Guarded on both as shown and, for a liveness key, on its being bound
        to ``lease`` (the previous session's keys are kept: a reconnect to this replica,
        or to the one restarted in its seat: a restart's storm of registrations). None
        when any of that is not so (the informer was behind, or the key is bound to
        another replica's lease): nothing was written, and ``mark_alive`` then reads
        what is there. The kept reports are the caller's to read (``read_reports``)."""
        key = self.keys.alive(host_id)
        guards: list[Compare | LeaseIs] = [
            Compare(key, alive_revision),
            Compare(self.keys.host(host_id), host_revision),
        ]
        if alive_revision:
            guards.append(LeaseIs(key, lease))
        result = await self.etcd.txn(guards, [Put(key, live.dump(), lease)])
        if not result.succeeded:
            return None
        return Alive(
            session=result.revision,
            previous=alive_revision,
            reports=[],
            kept=bool(alive_revision),
        )

    async def reports_on(self, host_id: str) -> list[records.ContainerReport]:
        """The container reports stored for ``host_id``. One this version cannot read
        (written by another) is left out: the agent's next report of it replaces it."""
        kvs, _ = await self.etcd.get_prefix(self.keys.reports(host_id))
        reports: list[records.ContainerReport] = []
        for kv in kvs:
            with contextlib.suppress(ValidationError):
                reports.append(records.ContainerReport.model_validate_json(kv.value))
        return reports

    async def mark_gone(self, host_id: str, session: int) -> bool:
        """The host's ``session`` is over: its liveness, status and report keys go,
        unless a newer session holds them. False when one did."""
        key = self.keys.alive(host_id)
        result = await self.etcd.txn(
            [Compare(key, session)], [Delete(key), *self._session_ops(host_id)]
        )
        return result.succeeded

    def _session_ops(self, host_id: str) -> list[Put | Delete | DeletePrefix]:
        """Deleting what a session reported: the host's status and container reports."""
        return [Delete(self.keys.status(host_id)), DeletePrefix(self.keys.reports(host_id))]

    async def report_many(self, reports: Sequence[HostReport]) -> list[FleetError | None]:
        """Agents' reports written (``fleet.store.reportwrites.write_reports``): each
        report's error, None for those written."""
        return await write_reports(
            self.etcd, self.keys, self.written, reports, most=self.report_keys
        )
