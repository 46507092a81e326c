"""An agent's heartbeats turned into what is stored, and only what changed.

A heartbeat carries everything the host runs. Stored whole at every heartbeat, 5,000
hosts would rewrite (and every control plane decode) all 100,000 containers every few
seconds. So each container is its own key, written when what its agent says of it
changes (state, health, restarts: not its live usage), and the host's small status
record (usage, images, each container's usage) is rewritten when the containers change
or every ``refresh`` seconds. The cost of a report is then what changed on the host.

A container's report crosses here both ways, by one field table: ``container_report``
stores what an agent sent, ``status_proto`` shows it to clients.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from fleet._names import container_name
from fleet._text import strip_control
from fleet._time import epoch, now_iso
from fleet.controlplane.reportprints import EMPTY, ContainerPrints, ReportKey
from fleet.errors import InvalidArgument
from fleet.proto import fleet_pb2 as pb
from fleet.store import check_name
from fleet.store.records import (
    ContainerReport,
    PortBinding,
    ResourceAmounts,
    StatusRecord,
    UsageTable,
    shared,
    usage_key,
)

__all__ = ["MAX_REPORT_BYTES", "Report", "ReportWriter", "container_report", "status_proto"]

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 512 * 1024  # a heartbeat; etcd takes values up to about 1.5 MiB
_MAX_IMAGES = 1000
_MAX_TEXT = 1024
_HEALTH = frozenset({"", "starting", "healthy", "unhealthy"})


def _check_health(value: str) -> str:
    if value not in _HEALTH:
        raise InvalidArgument(
            f"health must be one of starting, healthy, unhealthy, got {value[:32]!r}"
        )
    return value


_REASON = re.compile(r"[a-z][a-z0-9-]{0,39}")


def _check_reason(value: str) -> str:
    """A short word (image-not-found, create-failed): shown in a column of ``fleet ps``."""
    if value and _REASON.fullmatch(value) is None:
        raise InvalidArgument(
            f"reason must be a short lowercase word like image-not-found, got {value[:40]!r}"
        )
    return value


_OFFSET = re.compile(r"(Z|[+-]\d\d:\d\d)\Z")


def _check_stamp(value: str) -> str:
    """An RFC 3339 time with its offset (without one, it would be read in the control
    plane's local time)."""
    if value and (len(value) > 40 or not _OFFSET.search(value) or epoch(value) is None):
        raise InvalidArgument(
            f"ready_since must be an RFC 3339 time with an offset (2026-01-02T03:04:05Z), "
            f"got {value[:40]!r}"
        )
    return value


# The fields a container's report carries as they are, both ways (pb.ContainerStatus
# and ContainerReport name them alike); the ports, the name and the checked ones go by
# hand.
_AS_IS = (
    "app",
    "slot",
    "revision",
    "spec_hash",
    "container_id",
    "state",
    "exit_code",
    "started_at",
    "restarts",
)
_PORT = ("host_port", "container_port", "protocol")
_as_is, _port = attrgetter(*_AS_IS), attrgetter(*_PORT)


def _fields(names: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(names, values, strict=True))


def _stored_name(c: pb.ContainerStatus) -> str:
    """A container's name as its report stores it: "" for the name its agent gives a
    replica's container (``container_name``), which ``status_proto`` puts back. At
    100,000 replicas each name held was 70 bytes of the control plane's memory (6.6 MiB,
    #24 item 3), and of each report's value in etcd. Any other name (one another pool's
    container held, to which this pool's id was added) is stored as it is."""
    return "" if c.name == container_name(c.app, c.slot, c.spec_hash) else c.name


def container_report(c: pb.ContainerStatus, *, checked: bool = False) -> ContainerReport:
    """One container as stored (live usage aside: that goes in the host's record). Its
    fields are protobuf's (typed) or checked here (not again if ``checked``: a
    ``ReportWriter`` checks every container of a heartbeat before it works out its
    report), so the record is made without validating them again (``model_construct``):
    a large apply makes one for each change of every container."""
    if not checked:
        _check_reason(c.reason)
        _check_health(c.health)
        _check_stamp(c.ready_since)
    return ContainerReport.model_construct(
        **_fields(_AS_IS, _as_is(c)),
        name=_stored_name(c),
        ports=[PortBinding(**_fields(_PORT, _port(p))) for p in c.ports] if c.ports else [],
        message=strip_control(c.message[:_MAX_TEXT]),  # shown on operators' terminals
        reason=c.reason,
        health=c.health,
        ready_since=c.ready_since,
        memory_limit=max(0, c.memory_limit),
    )


def status_proto(c: ContainerReport, cpu: float, memory: int) -> pb.ContainerStatus:
    """A stored report as the API shows it, with its live usage (from its host's status
    record)."""
    return pb.ContainerStatus(
        **_fields(_AS_IS, _as_is(c)),
        name=c.name or container_name(c.app, c.slot, c.spec_hash),
        ports=[pb.PortMapping(**_fields(_PORT, _port(p))) for p in c.ports],
        message=c.message,
        reason=c.reason,
        health=c.health,
        ready_since=c.ready_since,
        memory_limit=c.memory_limit,
        cpu=cpu,
        memory_bytes=memory,
    )


@dataclass
class Report:
    """What one heartbeat changes: to be written, then confirmed with ``written``."""

    status: StatusRecord | None  # None: the host's record stays as written
    changed: list[ContainerReport]
    gone: list[ReportKey]
    prints: ContainerPrints  # every container as now reported (``_print``)
    host_print: bytes
    digest: bytes = b""  # the heartbeat's ``containers_digest``


# A print is 60 bits of Python's hash of the message (SipHash, keyed per process; the
# prints are never compared across processes): an int of 32 bytes, where a 16-byte
# BLAKE2b digest was a bytes object of 56 (2.3 MiB at 100,000 containers), and a tenth
# of its cost. A change goes unseen if its print equals the one before, once in 2**60.
_PRINT_BITS = (1 << 60) - 1


def _print(status: pb.ContainerStatus) -> int:
    """What tells a container's report changed: a hash of its message (usage zeroed by
    the caller). A session holds one per container, 100,000 at 100,000 replicas: the
    message itself was 210 bytes each."""
    return hash(status.SerializeToString(deterministic=True)) & _PRINT_BITS


def _host_part(heartbeat: pb.Heartbeat) -> tuple[list[str], bytes]:
    """The host's images as stored, and what tells the host's part of a report changed
    (its applied version and images)."""
    images = sorted(i[:512] for i in heartbeat.images[:_MAX_IMAGES])
    return images, repr((heartbeat.applied_version, images)).encode()


def _as_stored(c: pb.ContainerStatus, stored: ContainerReport | None) -> bool:
    """Whether the agent's report ``c`` says what ``stored`` does (its live usage aside):
    the fields ``status_proto`` shows, compared one by one. A session's first report
    compares every container with its kept report: printing each of those as the
    agent's message would be was 5 us a container, 100,000 of them (half a second of
    the event loop and more) in a restart's storm of reconnects; this is a third of
    that. A report that was stored changed (a message cut short, say) only differs, and
    is written again."""
    return (
        stored is not None
        and _as_is(c) == _as_is(stored)
        and _stored_name(c) == stored.name
        and c.message == stored.message
        and c.reason == stored.reason
        and c.health == stored.health
        and c.ready_since == stored.ready_since
        and c.memory_limit == stored.memory_limit
        and [_port(p) for p in c.ports] == [_port(p) for p in stored.ports]
    )


class ReportWriter:
    """One agent session's view of what it has written, to write only the difference."""

    def __init__(self, host_id: str, refresh: float) -> None:
        self.host_id = host_id
        self.refresh = refresh
        self._prints = EMPTY
        self._kept: dict[ReportKey, ContainerReport] | None = None  # (``start_from``)
        self._host_print = b""
        # The agent's digest of the containers the prints stand for (b"": none): a
        # heartbeat with the same digest says nothing new of them (``report``).
        self._digest = b""
        self._written_at = -math.inf
        # Made when first needed: an idle host's session holds neither.
        self._skipped: set[str] | None = None  # apps not named as fleet names them (logged)
        self._stamps: set[str] | None = None  # ready_since values already checked

    def start_from(self, stored: Iterable[ContainerReport]) -> None:
        """Start from the reports ``stored`` of the host (its previous session's, kept
        for this one): a container its agent reports as stored is not written again
        (``_as_stored``), one it no longer reports is removed. Until the first report is
        written; then the prints are this session's."""
        self._kept = {(report.app, report.slot, report.revision): report for report in stored}

    def check(self, heartbeat: pb.Heartbeat) -> bool:
        """Refuse a heartbeat that is malformed or too large for etcd: at once, in the
        session (the report is worked out later, when it is written). Whether its
        containers were checked one by one: not when its digest says they are the ones
        stored (``report`` then stores nothing of them but their usage, and checks them
        if it must after all)."""
        if heartbeat.ByteSize() > MAX_REPORT_BYTES:
            raise InvalidArgument(f"a heartbeat may hold at most {MAX_REPORT_BYTES} bytes")
        numbers = [heartbeat.usage.cpu] + [c.cpu for c in heartbeat.containers]
        if not all(math.isfinite(n) and n >= 0 for n in numbers):
            raise InvalidArgument("cpu usage must be a finite number, 0 or more")
        if self._unchanged(heartbeat):
            return False
        self._check_containers(heartbeat)
        return True

    def _unchanged(self, heartbeat: pb.Heartbeat) -> bool:
        """Whether the agent says its containers are those the prints stand for. Taken
        on its word: a digest that lies keeps its own host's reports from being stored,
        nothing else (nothing of the containers is stored on that word but their usage,
        by the keys already stored)."""
        digest = heartbeat.containers_digest
        return bool(digest) and digest == self._digest and self._kept is None

    def _check_containers(self, heartbeat: pb.Heartbeat) -> None:
        if not heartbeat.containers:
            return
        stamps = self._stamps
        if stamps is None or len(stamps) > 4 * len(heartbeat.containers) + 64:
            # A container keeps its stamp: this only drops old ones.
            stamps = self._stamps = set()
        for c in heartbeat.containers:
            _check_health(c.health)
            _check_reason(c.reason)
            if c.ready_since not in stamps:
                stamps.add(_check_stamp(c.ready_since))

    def report(
        self, heartbeat: pb.Heartbeat, now: float, *, checked: bool = False
    ) -> Report | None:
        """What to write for ``heartbeat`` at ``now`` (monotonic seconds); None when
        nothing changed and the usage was written less than ``refresh`` ago. A heartbeat
        whose containers were not ``checked`` one by one already (the session checks each
        heartbeat as it comes: ``check`` says) is checked first."""
        if self._unchanged(heartbeat):
            return self._usage_only(heartbeat, now)
        if not checked:
            self.check(heartbeat)  # (one by one: not ``_unchanged``)
        current: dict[ReportKey, pb.ContainerStatus] = {}
        for c in heartbeat.containers:
            try:
                check_name(c.app)
                if c.slot < 0 or c.revision < 0:
                    raise InvalidArgument(
                        f"slot and revision must not be negative, got {c.slot} and {c.revision}"
                    )
            except InvalidArgument as error:
                if self._skipped is None:
                    self._skipped = set()
                if c.app not in self._skipped:
                    self._skipped.add(c.app)
                    log.warning("host %s: not storing a container report: %s", self.host_id, error)
                continue
            # The last of a key wins. The key's app is interned and its numbers shared: a
            # session keeps the keys of its last heartbeat, and each message has its own
            # copy of each name and each number past 256 (56 bytes a key).
            current[(sys.intern(c.app), shared(c.slot), shared(c.revision))] = c
        prints: list[int] = []
        changed: list[ContainerReport] = []
        kept = self._kept
        before_prints = self._prints
        known = 0  # keys of ``current`` that the prints have
        for key, c in current.items():
            # The print leaves the usage out: the usage alone is written every ``refresh``.
            # Zeroed in place and put back (a copy of each container of every heartbeat
            # was the largest part of working out a report).
            cpu, memory = c.cpu, c.memory_bytes
            c.cpu, c.memory_bytes = 0.0, 0
            now_print = _print(c)
            c.cpu, c.memory_bytes = cpu, memory
            prints.append(now_print)
            before = before_prints.get(key)
            known += before is not None
            if before != now_print and not (
                before is None and kept is not None and _as_stored(c, kept.get(key))
            ):
                changed.append(container_report(c, checked=True))  # (``check`` above)
        if kept is not None:
            gone = [key for key in kept if key not in current]
        elif known < len(before_prints):  # (its keys are read back only then)
            gone = [key for key in before_prints if key not in current]
        else:
            gone = []
        images, host_print = _host_part(heartbeat)
        due = now - self._written_at >= self.refresh
        if not changed and not gone and host_print == self._host_print and not due:
            if kept is None:
                self._digest = heartbeat.containers_digest  # the prints stand for these
            return None
        status = None
        if host_print != self._host_print or due:
            status = self._status(heartbeat, images, current.items())
        return Report(
            status,
            changed,
            gone,
            ContainerPrints(list(current), prints),
            host_print,
            heartbeat.containers_digest,
        )

    def _usage_only(self, heartbeat: pb.Heartbeat, now: float) -> Report | None:
        """``report`` of a heartbeat whose containers are those stored (``_unchanged``):
        only the host's record may be due, with the usage of the containers stored."""
        images, host_print = _host_part(heartbeat)
        if host_print == self._host_print and now - self._written_at < self.refresh:
            return None
        stored = self._prints
        usage = (((c.app, c.slot, c.revision), c) for c in heartbeat.containers)
        status = self._status(heartbeat, images, ((k, c) for k, c in usage if k in stored))
        return Report(status, [], [], stored, host_print, self._digest)

    def _status(
        self,
        heartbeat: pb.Heartbeat,
        images: list[str],
        containers: Iterable[tuple[ReportKey, pb.ContainerStatus]],
    ) -> StatusRecord:
        """The host's record (and every container's usage): rewritten when the host
        applied a new set or pulled images, and every ``refresh``; not whenever a
        container changes, which is most reports while a host starts its work."""
        return StatusRecord(
            host_id=self.host_id,
            reported_at=now_iso(),
            applied_version=heartbeat.applied_version,
            usage=ResourceAmounts(
                cpu=heartbeat.usage.cpu, memory=max(0, heartbeat.usage.memory_bytes)
            ),
            images=images,
            container_usage=UsageTable(
                {usage_key(*key): (c.cpu, max(0, c.memory_bytes)) for key, c in containers}
            ),
        )

    def written(self, report: Report, now: float) -> None:
        self._prints, self._host_print = report.prints, report.host_print
        self._digest = report.digest
        self._kept = None  # what is stored is what the prints say now
        if report.status is not None:
            self._written_at = now
