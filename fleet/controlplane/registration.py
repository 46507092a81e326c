"""What a host's registration stores, and the certificates a removal denies: pure
rules over the Register message and the host record (the agent stream, ``agents``,
writes them).

An agent reports its own capacity, labels and facts: placement counts the capacity
capped (``HostLimits``), facts fleet does not know are dropped, and nothing it sends
sets the operator's state or labels. The record keeps the certificate serials the host
registered with, for ``fleet hosts remove`` to deny them all.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass

from fleet._time import now_iso
from fleet.errors import InvalidArgument
from fleet.hostlabels import MAX_LABELS, known_facts
from fleet.ingress import check_ingress
from fleet.proto import fleet_pb2 as pb
from fleet.store import ClusterState, Versioned, check_host_id
from fleet.store.records import DeniedRecord, HostRecord, ResourceAmounts

__all__ = [
    "MAX_TEXT",
    "DaemonIndex",
    "HostLimits",
    "check_ingress",
    "daemon_taken",
    "denied_message",
    "denied_serials",
    "host_record",
    "unchanged_registration",
]

MAX_TEXT = 1024  # the longest text an agent may send in a field
_PAST_SERIALS = 8  # earlier certificate serials a host record keeps (fleet hosts remove)


@dataclass(frozen=True)
class HostLimits:
    """The most any one host is taken to have (``fleet server --max-host-cpus`` and
    ``--max-host-memory``): an agent reports its capacity itself, so a compromised host
    could claim 1,000 cores to attract work; placement counts the claim capped to these.
    None: counted as claimed."""

    cpus: float | None = None
    memory: int | None = None

    def cap(self, claimed: ResourceAmounts) -> ResourceAmounts:
        """``claimed`` capped to these limits."""
        cpu = claimed.cpu if self.cpus is None else min(claimed.cpu, self.cpus)
        memory = claimed.memory if self.memory is None else min(claimed.memory, self.memory)
        return ResourceAmounts(cpu=cpu, memory=memory)


def _check_map(what: str, values: dict[str, str]) -> dict[str, str]:
    if len(values) > MAX_LABELS:
        raise InvalidArgument(f"too many {what}: {len(values)} (at most {MAX_LABELS})")
    for key, value in values.items():
        if not key or len(key) > 253 or len(value) > MAX_TEXT or "\0" in key + value:
            raise InvalidArgument(f"invalid {what} entry {key[:64]!r}")
    return dict(values)


def _check_address(value: str) -> str:
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidArgument(f"address must be an IP address, got {value[:64]!r}") from None


def host_record(
    register: pb.Register,
    old: HostRecord | None,
    limits: HostLimits = HostLimits(),
    serial: str = "",
    cert_expires: str = "",
) -> HostRecord:
    """The registration as stored: the capacity placement counts is the claim capped to
    ``limits`` (the claim is kept beside it); facts fleet does not know are dropped; the
    operator-set state (and a drain in progress) survives re-registration. Admin labels
    are not in it (they have a key of their own), so nothing a host sends can set or
    remove them. ``serial`` is the certificate it registered with (the ones before it
    are kept, a few, for a removal to deny them all)."""
    host_id = check_host_id(register.host_id)
    if not (math.isfinite(register.capacity.cpu) and 0 <= register.capacity.cpu <= 1e6):
        raise InvalidArgument("capacity cpu must be a number of cores, 0 or more")
    if register.capacity.memory_bytes < 0:
        raise InvalidArgument("capacity memory must not be negative")
    claimed = ResourceAmounts(cpu=register.capacity.cpu, memory=register.capacity.memory_bytes)
    facts = _check_map("facts", dict(register.facts))
    past = list(old.past_serials) if old else []
    if old and old.cert_serial and old.cert_serial != serial:
        past = [s for s in past if s != old.cert_serial] + [old.cert_serial]
    past = [s for s in past if s != serial][-_PAST_SERIALS:]
    return HostRecord(
        host_id=host_id,
        capacity=limits.cap(claimed),
        reported=claimed,
        labels=_check_map("labels", dict(register.labels)),
        facts=known_facts(facts),
        state=old.state if old else "ready",
        # A drain in progress goes on through a reconnect: without its record (deadline,
        # --force) a draining host would never be found drained.
        drain=old.drain if old else None,
        registered_at=now_iso(),
        address=_check_address(register.address),
        ingress=check_ingress(register.ingress),
        cert_serial=serial,
        past_serials=past,
        cert_expires=cert_expires,
    )


def unchanged_registration(stored: HostRecord, registered: HostRecord) -> bool:
    """Whether ``registered`` (``host_record`` of a new registration) says nothing the
    stored record does not: only its time differs."""
    return registered.model_copy(update={"registered_at": stored.registered_at}) == stored


def denied_serials(record: HostRecord) -> list[str]:
    """The certificate serials ``fleet hosts remove`` denies: every one the host is
    known to have registered with, oldest first, without repeats."""
    return list(dict.fromkeys(s for s in [*record.past_serials, record.cert_serial] if s))


def denied_message(record: DeniedRecord) -> str:
    """Why a denied certificate is refused, and how its host can rejoin."""
    return (
        f"certificate serial {record.serial} of host {record.host_id} was removed from the "
        f"pool by {record.by} at {record.at}; to rejoin, issue the host a new certificate "
        f"(`fleet certs issue agent {record.host_id} --force`) and start its agent with it"
    )


class DaemonIndex:
    """Which hosts say they manage which Docker daemon (their ``docker_daemon`` fact), to
    tell at a registration whether another connected host has its daemon
    (``daemon_taken``). Worked out again only when the hosts' table changes (an
    informer's snapshots share a table nothing changed): a walk of every host at every
    registration was 0.8 ms at 5,000 hosts, 4 s of the event loop in a restart's storm
    of reconnects, where no host record changes."""

    def __init__(self) -> None:
        self._table: Mapping[str, Versioned[HostRecord]] | None = None
        self._hosts: dict[str, list[str]] = {}  # daemon -> host ids

    def hosts_of(self, state: ClusterState, daemon: str) -> list[str]:
        """The hosts (connected or not) whose records name ``daemon``, sorted."""
        if self._table is not state.hosts:
            # (No more than the walk it replaces: while hosts join, each registration
            # writes a host record, and each finds a new table.)
            found: dict[str, list[str]] = {}
            for host_id, stored in state.hosts.items():
                named = stored.value.facts.get("docker_daemon")
                if named:
                    found.setdefault(named, []).append(host_id)
            self._table, self._hosts = state.hosts, found
        return sorted(self._hosts.get(daemon, ()))


def daemon_taken(
    state: ClusterState,
    host_id: str,
    facts: dict[str, str],
    index: DaemonIndex | None = None,
) -> str | None:
    """Why ``host_id`` may not register with these facts: another host, connected now,
    whose agent manages the same Docker daemon (the ``docker_daemon`` fact). Two agents
    on one daemon would each take the other's containers for leftovers and remove them;
    the first keeps it. None when it may. (Checked against the informer's view: two
    agents registering within the same instant are not told apart, which takes two
    starts at once, not a second agent started by mistake.) ``index``: the caller's,
    kept between registrations (a state whose tables change in place, as a test's, wants
    a new one)."""
    daemon = facts.get("docker_daemon", "")
    if not daemon:
        return None  # an agent of a version before the fact: nothing to compare
    for other in (index or DaemonIndex()).hosts_of(state, daemon):
        if other != host_id and other in state.alive:
            return (
                f"the Docker daemon of agent {host_id!r} is already managed by host "
                f"{other!r}, connected now: two agents must never manage one daemon (each "
                f"would remove the other's containers); stop the other agent, or run this "
                f"one as --host-id {other}"
            )
    return None
