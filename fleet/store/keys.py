"""The etcd key layout: the one place that builds or parses fleet's key strings.

Every key lives under one configurable prefix (``/fleet/`` by default) so several fleets
can share an etcd. Desired state, observed state and liveness sit under separate
top-level folders, so a prefix read or watch of one never drags in the others::

    apps/<app>                      desired AppSpec, generation, current revision
    revisions/<app>/<n>             the spec of revision n (bounded history)
    replicas/<app>/<slot>           a desired replica: slot, revision, host (and its next)
    rollouts/<app>                  the app's current rollout: target, state, progress
    jobs/<app>                      a job's progress: what succeeded, what failed
    hosts/<host>                    registration: capacity (claimed and allowed), the
                                    agent's labels, facts, state
    host-labels/<host>              the labels admins set on it (fleet label host); never
                                    written by the host's agent session
    alive/<host>                    while its agent is connected; its revision names the
                                    session, and the serving replica's lease holds it
    status/<host>                   the agent's last report: usage, images (same session)
    reports/<host>/<app>/<slot>/<rev>  one container as its agent reports it (same session);
                                    written only when it changes, so a report costs
                                    what changed on the host, not all it runs
    secrets/<name>                  an encrypted secret (AES-GCM; the key is not in etcd)
    policy                          what containers may ask of hosts (fleet policy set)
    maintenance                     the semaphore of hosts out for maintenance (drains)
    upgrade                         the coordinated OS upgrade walk (fleet upgrade-hosts)
    leader                          the leading control plane, bound to its lease
    tokens/<id>                     a bearer token: its role and the hash of its secret
    denied/<serial>                 a certificate refused on every stream (fleet hosts
                                    remove): whose it was, who removed it and when
    events/<time>-<source>-<n>-<size>
                                    a batch of recent events, bound to a lease (kept about
                                    an hour, within a cap on their total size); not in the
                                    informer's cache (see EventLog)

Segments are validated before they become keys, so no input can escape its folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet._names import DNS_LABEL_TEXT, is_dns_label
from fleet.errors import InvalidArgument

__all__ = [
    "DEFAULT_PREFIX",
    "KeyLayout",
    "ParsedKey",
    "check_host_id",
    "check_name",
    "check_serial",
]

DEFAULT_PREFIX = "/fleet/"

# Host ids may be DNS names with dots (h1.example.com), never '/', '..' or NUL.
_HOST_ID = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# Certificate serials as lowercase hex without leading zeros (RFC 5280: at most 20 bytes).
_SERIAL = re.compile(r"[0-9a-f]{1,40}")
_SLOT_DIGITS = 6
_REVISION_DIGITS = 10


def check_name(name: str, what: str = "app name") -> str:
    """``name`` if it is a DNS label, else InvalidArgument saying what is expected."""
    if not is_dns_label(name):
        raise InvalidArgument(f"invalid {what} {name[:64]!r}: expected {DNS_LABEL_TEXT}")
    return name


def check_host_id(host_id: str) -> str:
    """``host_id`` if it is a lowercase DNS name, else InvalidArgument."""
    if not _HOST_ID.fullmatch(host_id) or ".." in host_id:
        raise InvalidArgument(
            f"invalid host id {host_id[:64]!r}: expected a lowercase DNS name (letters, digits, "
            "'-' and '.', at most 253 characters)"
        )
    return host_id


def check_serial(serial: str) -> str:
    """``serial`` if it is a certificate serial in lowercase hex, else InvalidArgument."""
    if not _SERIAL.fullmatch(serial):
        raise InvalidArgument(
            f"invalid certificate serial {serial[:64]!r}: expected lowercase hex digits "
            "(at most 40)"
        )
    return serial


@dataclass(frozen=True)
class ParsedKey:
    """What a key names: ``kind`` is its folder, ``parts`` the segments after it."""

    kind: str
    parts: tuple[str, ...]


class KeyLayout:
    """Builds and parses every key under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/") or "//" in prefix:
            raise InvalidArgument(f"etcd prefix must look like /name/ (got {prefix!r})")
        self.prefix = prefix
        self.root = prefix.encode()

    def _key(self, *segments: str) -> bytes:
        return (self.prefix + "/".join(segments)).encode()

    def _folder(self, *segments: str) -> bytes:
        return (self.prefix + "/".join(segments) + "/").encode()

    # apps and their revisions
    def app(self, name: str) -> bytes:
        return self._key("apps", check_name(name))

    def apps(self) -> bytes:
        return self._folder("apps")

    def revision(self, app: str, n: int) -> bytes:
        return self._key("revisions", check_name(app), f"{n:0{_REVISION_DIGITS}d}")

    def revisions(self, app: str) -> bytes:
        return self._folder("revisions", check_name(app))

    def rollout(self, app: str) -> bytes:
        return self._key("rollouts", check_name(app))

    def job(self, app: str) -> bytes:
        return self._key("jobs", check_name(app))

    # replicas
    def replica(self, app: str, slot: int) -> bytes:
        return self._key("replicas", check_name(app), f"{slot:0{_SLOT_DIGITS}d}")

    def replicas(self, app: str | None = None) -> bytes:
        if app is None:
            return self._folder("replicas")
        return self._folder("replicas", check_name(app))

    # hosts, liveness and reports
    def host(self, host_id: str) -> bytes:
        return self._key("hosts", check_host_id(host_id))

    def host_labels(self, host_id: str) -> bytes:
        return self._key("host-labels", check_host_id(host_id))

    def alive(self, host_id: str) -> bytes:
        return self._key("alive", check_host_id(host_id))

    def status(self, host_id: str) -> bytes:
        return self._key("status", check_host_id(host_id))

    def report(self, host_id: str, app: str, slot: int, revision: int) -> bytes:
        return self._key(
            "reports",
            check_host_id(host_id),
            check_name(app),
            f"{slot:0{_SLOT_DIGITS}d}",
            f"{revision:0{_REVISION_DIGITS}d}",
        )

    def reports(self, host_id: str | None = None) -> bytes:
        if host_id is None:
            return self._folder("reports")
        return self._folder("reports", check_host_id(host_id))

    def event(self, time_ns: int, source: str, seq: int, size: int = 0) -> bytes:
        """A batch of events: sorted by time; its value's ``size`` in bytes is in the
        name, so the kept total can be bounded from a keys-only read."""
        name = f"{time_ns:020d}-{check_host_id(source)}-{seq:06d}-{size:09d}"
        return self._key("events", name)

    def events(self) -> bytes:
        return self._folder("events")

    def events_since(self, time_ns: int) -> bytes:
        """The first key an event batch stored at ``time_ns`` or later can have."""
        return self._key("events", f"{max(0, time_ns):020d}")

    @staticmethod
    def event_size(key: bytes) -> int:
        """The value size an event key names (keys from before sizes: 128 KiB, more than
        a batch of 100 events of the longest message weighs)."""
        tail = key.rsplit(b"-", 1)[-1]
        return int(tail) if len(tail) == 9 and tail.isdigit() else 128 * 1024

    def token(self, token_id: str) -> bytes:
        return self._key("tokens", check_name(token_id, "token id"))

    def denied(self, serial: str) -> bytes:
        """A certificate serial refused on every stream (``fleet hosts remove``)."""
        return self._key("denied", check_serial(serial))

    def maintenance(self) -> bytes:
        return self._key("maintenance")

    def upgrade(self) -> bytes:
        return self._key("upgrade")

    def leader(self) -> bytes:
        return self._key("leader")

    def policy(self) -> bytes:
        return self._key("policy")

    # secrets
    def secret(self, name: str) -> bytes:
        return self._key("secrets", check_name(name, "secret name"))

    def parse(self, key: bytes) -> ParsedKey | None:
        """What ``key`` names, or None for a key that is not fleet's."""
        text = key.decode(errors="replace")
        if not text.startswith(self.prefix):
            return None
        kind, _, rest = text[len(self.prefix) :].partition("/")
        parts = tuple(rest.split("/")) if rest else ()
        return ParsedKey(kind, parts)
