"""Builders shared by the store's unit tests: the default key layout and the records
written under it."""

from __future__ import annotations

from fleet.store import KeyLayout
from fleet.store.records import HostRecord, ResourceAmounts, StatusRecord

LAYOUT = KeyLayout()


def host_record(host: str, cpu: float = 4.0) -> HostRecord:
    return HostRecord(
        host_id=host, capacity=ResourceAmounts(cpu=cpu, memory=8 << 30), registered_at="t0"
    )


def status_record(host: str, cpu: float = 0.0) -> StatusRecord:
    return StatusRecord(
        host_id=host,
        reported_at="t0",
        applied_version=1,
        usage=ResourceAmounts(cpu=cpu, memory=1 << 30),
        container_usage={"web/0/1": (cpu, 1 << 20)},
    )
