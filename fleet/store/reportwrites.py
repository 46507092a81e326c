"""Agents' reports written to etcd for many hosts at once (``Store.report_many``).

Each host's keys (its status record first, then its containers' reports) are guarded on
its session and bound to the lease of the control-plane replica serving it; many hosts
share a transaction, and a shared transaction that fails (one host's session just
ended) is written again host by host, so no host fails another's report. Each report
written is held for the informer (``Written``) until the watch brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleet.errors import Conflict, FleetError
from fleet.store import records
from fleet.store._etcd import Compare, Delete, DeletePrefix, Etcd, Put
from fleet.store.keys import KeyLayout
from fleet.store.written import Written

__all__ = ["HostReport", "write_reports"]

_Op = Put | Delete | DeletePrefix


@dataclass(frozen=True)
class HostReport:
    """What one host's report changes (see ``Store.report_many``): the host's record
    (None: unchanged) and the containers that ``changed`` or are ``gone`` (app, slot,
    revision), for its ``session``, bound to ``lease``."""

    host_id: str
    session: int
    lease: int
    status: records.StatusRecord | None
    changed: Sequence[records.ContainerReport] = ()
    gone: Sequence[tuple[str, int, int]] = ()


async def write_reports(
    etcd: Etcd, keys: KeyLayout, written: Written, reports: Sequence[HostReport], *, most: int
) -> list[FleetError | None]:
    """``reports`` in transactions many hosts share, up to ``most`` keys each (a host's
    keys stay together and in order). Returns each report's error, None for those
    written. Only the session's writer writes these keys."""
    ops = [_report_ops(keys, written, report) for report in reports]
    errors: list[FleetError | None] = [None] * len(reports)
    groups: list[list[int]] = []  # indexes of reports that share a transaction
    size = most
    for index, host_ops in enumerate(ops):
        if size + len(host_ops) > most:
            groups.append([])
            size = 0
        groups[-1].append(index)
        size += len(host_ops)

    def guard(index: int) -> Compare:
        return Compare(keys.alive(reports[index].host_id), reports[index].session)

    async def write_alone(index: int) -> None:
        try:
            for start in range(0, len(ops[index]), most):
                chunk = ops[index][start : start + most]
                if not (await etcd.txn([guard(index)], chunk)).succeeded:
                    raise Conflict(f"host {reports[index].host_id}'s session is over")
        except FleetError as error:
            errors[index] = error

    async def write_group(group: list[int]) -> None:
        if len(group) > 1:
            shared = [op for index in group for op in ops[index]]
            with contextlib.suppress(FleetError):
                if (await etcd.txn([guard(i) for i in group], shared)).succeeded:
                    return
        await asyncio.gather(*(write_alone(index) for index in group))

    try:
        await asyncio.gather(*(write_group(group) for group in groups))
    except BaseException:
        _let_go(written, (op for host_ops in ops for op in host_ops))
        raise
    # What was not written never comes back from the watch.
    _let_go(written, (op for index, e in enumerate(errors) if e is not None for op in ops[index]))
    return errors


def _let_go(written: Written, ops: Iterable[_Op]) -> None:
    for op in ops:
        if isinstance(op, Put):
            written.drop(op.key, op.value)


def _report_ops(keys: KeyLayout, written: Written, report: HostReport) -> list[_Op]:
    ops: list[_Op] = []
    host_id, lease = report.host_id, report.lease
    if report.status is not None:
        # First: containers count (in every view of the state) once their host has a
        # record, and a report of many containers takes several transactions.
        ops.append(Put(keys.status(host_id), report.status.dump(), lease))
    for c in report.changed:
        key, value = keys.report(host_id, c.app, c.slot, c.revision), c.dump()
        written.hold(key, value, c)  # for the informer, as the watch brings it back
        ops.append(Put(key, value, lease))
    ops.extend(Delete(keys.report(host_id, *g)) for g in report.gone)
    return ops
