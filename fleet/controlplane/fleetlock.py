"""FleetLock, the reboot-lock protocol Zincati's ``fleet_lock`` strategy speaks, answered
from fleet's maintenance semaphore. Pure: a request in, an answer and what to write out.

The protocol (coreos/zincati ``docs/development/fleetlock/protocol.md``): ``POST
{base}/v1/pre-reboot`` (take a slot, recursive) and ``POST {base}/v1/steady-state``
(give it back if held), header ``fleet-lock-protocol: true``, body
``{"client_params": {"id": ID, "group": GROUP}}``; 200 is success and anything else a
failure Zincati retries later, with a JSON ``{"kind", "value"}`` body whose ``kind`` is
one of a few fixed words (Zincati counts them in its metrics).

What fleet adds to a slot: ``pre-reboot`` drains the host as ``fleet drain`` does
(make-before-break, within every app's budget) and answers 200 only once it is drained;
``steady-state`` gives the slot back only once the host's agent is back with a new boot
id (or OS version) and uncordons it. Every answer is computed from the stored records,
so another or a restarted control plane answers the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Literal

from fleet._time import iso_at
from fleet.controlplane.maintenance import drain_record, may_take_slot, release_slot
from fleet.store import ClusterState
from fleet.store.records import FleetLockHold, HostRecord, MaintenanceRecord

__all__ = [
    "DEFAULT_GROUP",
    "HOLDER",
    "PRE_REBOOT",
    "STEADY_STATE",
    "Answer",
    "Credentials",
    "LockRequest",
    "Refused",
    "authorize",
    "find_host",
    "host_group",
    "parse_request",
    "parse_tokens",
    "pre_reboot",
    "steady_state",
]

PRE_REBOOT = "/v1/pre-reboot"
STEADY_STATE = "/v1/steady-state"
HEADER = "fleet-lock-protocol"
DEFAULT_GROUP = "default"  # Zincati's, and fleet's for hosts without the group label
HOLDER = "fleetlock"  # who holds a slot taken here (the semaphore's holders value starts so)
MAX_BODY = 8192
_GROUP = re.compile(r"^[a-zA-Z0-9.-]+$")  # the protocol's own rule for a group
_MAX_ID = 256


class Refused(Exception):
    """A request answered with the protocol's error body: ``status``, ``kind`` (a fixed
    word) and ``value`` (what happened and what to do)."""

    def __init__(self, status: int, kind: str, value: str) -> None:
        super().__init__(value)
        self.status, self.kind, self.value = status, kind, value


@dataclass(frozen=True)
class LockRequest:
    """A well-formed FleetLock request: which operation, for which client and group."""

    operation: Literal["pre-reboot", "steady-state"]
    id: str
    group: str


@dataclass(frozen=True)
class Answer:
    """What to answer (200, or a refusal's status and kind) and what to write first:
    the host record and the semaphore, in one compare-and-swap (None: nothing)."""

    status: int
    kind: str
    value: str
    host: HostRecord | None = None
    maintenance: MaintenanceRecord | None = None

    @property
    def writes(self) -> bool:
        return self.host is not None and self.maintenance is not None


def _operation(path: str) -> Literal["pre-reboot", "steady-state"] | None:
    """The operation a path names. Zincati joins ``v1/pre-reboot`` onto its base_url,
    so a base with a path of its own (``https://lb/fleet/``) keeps it: any prefix
    counts."""
    path = path.split("?", 1)[0]
    if path.endswith(PRE_REBOOT):
        return "pre-reboot"
    if path.endswith(STEADY_STATE):
        return "steady-state"
    return None


def parse_request(method: str, path: str, headers: dict[str, str], body: bytes) -> LockRequest:
    """The request, or Refused with the protocol's error (``headers`` by lowercase name)."""
    operation = _operation(path)
    if operation is None:
        raise Refused(
            404, "not_found", f"no such endpoint {path[:80]!r}: use {PRE_REBOOT} or {STEADY_STATE}"
        )
    if method != "POST":
        raise Refused(405, "method_not_allowed", f"{method[:16]} {path[:80]}: FleetLock is POST")
    if headers.get(HEADER, "").strip().lower() != "true":
        raise Refused(400, "missing_header", f"a FleetLock request carries '{HEADER}: true'")
    try:
        document = json.loads(body.decode())
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "bad_body", "the body is not JSON") from None
    params = document.get("client_params") if isinstance(document, dict) else None
    if not isinstance(params, dict):
        raise Refused(400, "bad_body", 'the body needs a "client_params" object')
    # Zincati's first releases (2019) sent the id as "node_uuid", before the protocol
    # named it "id".
    client_id = params.get("id", params.get("node_uuid"))
    group = params.get("group")
    if not isinstance(client_id, str) or not 0 < len(client_id) <= _MAX_ID:
        raise Refused(
            400, "bad_body", f"client_params.id must be a non-empty string (<= {_MAX_ID})"
        )
    if not client_id.isprintable():
        raise Refused(400, "bad_body", "client_params.id must be printable")
    if not isinstance(group, str) or not _GROUP.match(group) or len(group) > 63:
        raise Refused(400, "bad_body", "client_params.group must match ^[a-zA-Z0-9.-]+$ (<= 63)")
    return LockRequest(operation, client_id, group)


# --- who may ask ---------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What a request showed: the host its agent certificate names (the TLS handshake
    checked it against fleet's CA), and its Authorization header."""

    cert_host: str | None = None
    authorization: str | None = None


def parse_tokens(text: str) -> dict[str, str]:
    """A token file: ``GROUP TOKEN`` a line (``#`` comments), into group -> the token's
    SHA-256 (hex), so no token is kept in memory in clear. ValueError says which line."""
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not _GROUP.match(parts[0]) or len(parts[1]) < 16:
            raise ValueError(
                f"line {number}: write 'GROUP TOKEN' (a group as Zincati names it, a token "
                "of at least 16 characters)"
            )
        tokens[parts[0]] = hashlib.sha256(parts[1].encode()).hexdigest()
    return tokens


def _presented_token(authorization: str | None) -> str | None:
    """The secret of ``Bearer TOKEN`` or ``Basic base64(USER:TOKEN)`` (what Zincati sends
    for a base_url ``https://USER:TOKEN@host/``: its HTTP client makes URL userinfo
    Basic auth)."""
    value = (authorization or "").strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return rest.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, secret = decoded.partition(":")
        return secret if sep and secret else None
    return None


def authorize(
    credentials: Credentials, group: str, tokens: dict[str, str], *, open_to_all: bool
) -> str | None:
    """Whether the request may act for ``group``: None if so (any host, or only the
    certificate's, which the caller checks), else Refused (401). A per-group token
    counts for its group; an agent certificate for its own host."""
    if credentials.cert_host is not None:
        return credentials.cert_host
    presented = _presented_token(credentials.authorization)
    if presented is not None:
        wanted = tokens.get(group)
        digest = hashlib.sha256(presented.encode()).hexdigest()
        if wanted is not None and hmac.compare_digest(wanted, digest):
            return None
        raise Refused(401, "unauthorized", f"the token is not group {group!r}'s")
    if open_to_all:
        return None
    raise Refused(
        401,
        "unauthorized",
        "credentials needed: the group's token in base_url (https://GROUP:TOKEN@host:port) "
        "or the host's agent certificate",
    )


# --- the host a request is for --------------------------------------------------------


def find_host(state: ClusterState, client_id: str) -> str:
    """The host ``client_id`` names: the one whose agent reported it as ``zincati_id``
    (Zincati's default id, from its /etc/machine-id), else the host of that id (for a
    Zincati configured with ``[identity] node_uuid`` = the fleet host id)."""
    matches = [h for h, v in state.hosts.items() if v.value.facts.get("zincati_id") == client_id]
    if len(matches) > 1:
        raise Refused(
            409,
            "ambiguous_client",
            f"hosts {', '.join(sorted(matches))} report the same machine id: give each "
            "its own /etc/machine-id",
        )
    if matches:
        return matches[0]
    if client_id in state.hosts:
        return client_id
    raise Refused(
        404,
        "unknown_client",
        f"no fleet host has Zincati id {client_id[:64]!r}: is its agent registered (it "
        "reports the id), or set [identity] node_uuid to its fleet host id",
    )


def host_group(state: ClusterState, host_id: str, label: str) -> str:
    """The FleetLock group of a host: its admin label ``label``, else its agent's, else
    "default"."""
    if not label:
        return DEFAULT_GROUP
    found = state.admin_labels(host_id).get(label) or state.hosts[host_id].value.labels.get(label)
    return found or DEFAULT_GROUP


# --- the state machine of a host's lock -----------------------------------------------


def _semaphore(state: ClusterState) -> MaintenanceRecord:
    return state.maintenance.value if state.maintenance else MaintenanceRecord()


def _holds(semaphore: MaintenanceRecord, host_id: str) -> bool:
    """Whether ``host_id``'s slot is FleetLock's (the upgrade walk may have taken the
    host over since: then the slot is the walk's to give back)."""
    holder = semaphore.holders.get(host_id, "")
    return host_id in semaphore.fleetlock and holder.startswith(HOLDER)


def _not_yet(kind: str, value: str) -> Answer:
    return Answer(409, kind, value)


def pre_reboot(state: ClusterState, host_id: str, group: str, now: float) -> Answer:
    """``pre-reboot`` for ``host_id``: take a slot and start its drain (answered "not
    yet"), "not yet" while it drains, 200 once it is drained; refused while the
    semaphore is full or another holder (a manual drain, the upgrade walk) has the host."""
    record = state.hosts[host_id].value
    semaphore = _semaphore(state)
    holder = semaphore.holders.get(host_id)
    if _holds(semaphore, host_id):
        if record.state == "drained":
            return Answer(200, "", f"host {host_id} is drained: reboot")
        if record.state == "draining":
            return _not_yet("failed_lock_draining", f"host {host_id} holds a slot and is draining")
    elif holder is not None:
        return _not_yet(
            "failed_lock_held_elsewhere",
            f"host {host_id} is out for maintenance by {holder}; FleetLock waits for it to "
            "be uncordoned",
        )
    elif not may_take_slot(semaphore, semaphore.holders, host_id):
        held = ", ".join(f"{h} ({why})" for h, why in sorted(semaphore.holders.items()))
        return _not_yet(
            "failed_lock_semaphore_full",
            f"all {semaphore.max} maintenance slot(s) are held: {held}",
        )
    drained = drain_record(
        record, deadline_seconds=0, force=False, include_global=False, by=HOLDER, now=now
    )
    holders = {**semaphore.holders, host_id: f"{HOLDER} group {group}"}
    locks = {
        **semaphore.fleetlock,
        host_id: FleetLockHold(
            group=group,
            boot_id=record.facts.get("boot_id", ""),
            os_version=record.facts.get("os_version", ""),
            taken_at=iso_at(now),
        ),
    }
    return Answer(
        409,
        "failed_lock_draining",
        f"host {host_id} took a maintenance slot and is draining",
        host=drained,
        maintenance=semaphore.model_copy(update={"holders": holders, "fleetlock": locks}),
    )


def steady_state(state: ClusterState, host_id: str) -> Answer:
    """``steady-state`` for ``host_id``: 200 if it holds no FleetLock slot; once its
    agent is back with a new boot id or OS version (or it never got its 200: it did not
    reboot for us), uncordon it and give the slot back; else "not yet"."""
    record = state.hosts[host_id].value
    semaphore = _semaphore(state)
    hold = semaphore.fleetlock.get(host_id)
    if hold is None or not _holds(semaphore, host_id):
        return Answer(200, "", f"host {host_id} holds no FleetLock slot")
    if record.state in ("drained", "maintenance"):
        back = host_id in state.alive and (
            record.facts.get("boot_id", "") != hold.boot_id
            or record.facts.get("os_version", "") != hold.os_version
        )
        if not back:
            return _not_yet(
                "failed_unlock_not_back",
                f"host {host_id} holds its slot until its agent is back with a new boot id",
            )
    uncordoned = record.model_copy(update={"state": "ready", "drain": None})
    return Answer(
        200,
        "",
        f"host {host_id} is back: uncordoned, its slot given back",
        host=uncordoned,
        maintenance=release_slot(semaphore, host_id),
    )
