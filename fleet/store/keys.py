"""The etcd key layout: the one place that builds or parses fleet's key strings.

Every key lives under one configurable prefix (``/fleet/`` by default) so several fleets
can share an etcd. Desired state, observed state and liveness sit under separate
top-level folders, so a prefix read or watch of one never drags in the others::

    apps/<app>                      desired AppSpec, generation, current revision
    revisions/<app>/<revision>      the spec of a revision (bounded history)
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
    reports/<host>/<app>/<slot>/<revision>
                                    one container as its agent reports it (same session);
                                    written only when it changes, so a report costs
                                    what changed on the host, not all it runs
    routes/<route>                  the app that holds an ingress route: http:<host><path>
                                    (its '/' and '%' escaped as %2F and %25) or tcp:<port>
    secrets/<name>                  an encrypted secret (AES-GCM; the key is not in etcd)
    secrets-key                     the id of the key the secrets are sealed with (never
                                    the key): every control-plane replica must hold it
    pool                            the pool's id, made once: agents label containers with it
    policy                          what containers may ask of hosts (fleet policy set)
    registry-mirror                 the pool's registry mirror for Docker Hub images
    maintenance                     the semaphore of hosts out for maintenance (drains)
    upgrade                         the coordinated OS upgrade walk (fleet upgrade-hosts)
    leader                          the leading control plane, bound to its lease
    serving/<seat>                  the lease a control plane replica binds its hosts'
                                    keys to, bound to that lease: a replica restarted on
                                    the same machine and address takes it over (see
                                    ``fleet.controlplane.seats``); not in the informer's
                                    cache
    tokens/<id>                     a bearer token: its role and the hash of its secret
    join-tokens/<id>                a join token for new hosts: the hash of its secret,
                                    expiry, uses, the labels it gives, who joined with it
    denied/<serial>                 a certificate refused on every stream (fleet hosts
                                    remove): whose it was, who removed it and when
    events/<time>-<source>-<n>-<size>
                                    a batch of recent events, bound to a lease (kept about
                                    an hour, within a cap on their total size); not in the
                                    informer's cache (see EventLog)

``FOLDERS`` is that list as code: each folder's name and the segments after it, each
segment a kind of value that knows how it is written and read back. Building a key
checks every value, so no input can escape its folder; parsing gives back the values a
builder was given and refuses any key no builder makes (numbers are zero-padded, so
keys sort like numbers). What the informer's state holds of each folder is in
``fleet.store.state``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from fleet._names import DNS_LABEL_PATTERN, DNS_LABEL_TEXT
from fleet.errors import InvalidArgument
from fleet.store._sharing import shared

__all__ = [
    "ALIVE",
    "APPS",
    "DEFAULT_PREFIX",
    "DENIED",
    "EVENTS",
    "FOLDERS",
    "HOSTS",
    "HOST_LABELS",
    "JOBS",
    "JOIN_TOKENS",
    "LEADER",
    "MAINTENANCE",
    "POLICY",
    "POOL",
    "REGISTRY_MIRROR",
    "REPLICAS",
    "REPORTS",
    "REVISIONS",
    "ROLLOUTS",
    "ROUTES",
    "SECRETS",
    "SECRETS_KEY",
    "SERVING",
    "STATUS",
    "TOKENS",
    "UPGRADE",
    "EventName",
    "Folder",
    "KeyLayout",
    "MalformedKey",
    "ParsedKey",
    "Segment",
    "check_host_id",
    "check_name",
    "check_seat",
    "check_serial",
]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/fleet/"

# Patterns without capturing groups: each folder's pattern is made of its segments'.
_NAME = re.compile(DNS_LABEL_PATTERN)
# Host ids may be DNS names with dots (h1.example.com), never '/', '..' or NUL.
_HOST_ID = re.compile(r"(?![^/]*\.\.)[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?")
# Certificate serials as lowercase hex without leading zeros (RFC 5280: at most 20 bytes).
_SERIAL = re.compile(r"[0-9a-f]{1,40}")
# An event batch: <time>-<source>-<n>-<size>; keys written before sizes were in the name
# end at <n>. The widths tell the two apart: <n> has 6 digits, <size> 9.
_EVENT_PARTS = (r"[0-9]{20}", _HOST_ID.pattern, r"[0-9]{6}", r"[0-9]{9}")
_EVENT_NAME = re.compile(r"({})-({})-({})(?:-({}))?".format(*_EVENT_PARTS))
# The value size assumed of an event batch whose key names none: more than a batch of
# 100 events of the longest message weighs.
_UNSIZED_EVENTS = 128 * 1024
# Numbers in keys are int64s, as the proto carries them (an agent may report any):
# at most 19 digits.
_NUMBER_DIGITS = 19
_NUMBER_LIMIT = 2**63


def _checked(pattern: re.Pattern[str], text: str, what: str, expected: str) -> str:
    if not pattern.fullmatch(text):  # fullmatch: '$' would let a trailing newline in
        raise InvalidArgument(f"invalid {what} {text[:64]!r}: expected {expected}")
    return text


def check_name(name: str, what: str = "app name") -> str:
    """``name`` if it is a DNS label, else InvalidArgument saying what is expected."""
    return _checked(_NAME, name, what, DNS_LABEL_TEXT)


def check_host_id(host_id: str) -> str:
    """``host_id`` if it is a lowercase DNS name, else InvalidArgument."""
    expected = "a lowercase DNS name (letters, digits, '-' and '.', at most 253 characters)"
    return _checked(_HOST_ID, host_id, "host id", expected)


def check_serial(serial: str) -> str:
    """``serial`` if it is a certificate serial in lowercase hex, else InvalidArgument."""
    return _checked(_SERIAL, serial, "certificate serial", "lowercase hex digits (at most 40)")


def check_seat(seat: str) -> str:
    """``seat`` if it may name a control plane replica's seat (as a host id may be)."""
    return _checked(_HOST_ID, seat, "replica seat", "a DNS name, as a host id")


# ------------------------------------------------------------------ segments


class Segment(Protocol):
    """One kind of value in a key: how it is written, and read back from its text."""

    @property
    def placeholder(self) -> str:
        """How the layout above names it: ``<app>``."""
        ...

    @property
    def pattern(self) -> str:
        """Exactly the texts it may be, as a regular expression without capturing
        groups: a folder's keys are parsed with one match of its segments' patterns."""
        ...

    @property
    def read(self) -> Callable[[str], Any]:
        """The value of a text that ``pattern`` matched."""
        ...

    def text(self, value: Any) -> str:
        """``value`` as it stands in a key; InvalidArgument if it may not."""
        ...

    def value(self, text: str) -> Any:
        """The value of any ``text``; InvalidArgument, saying why, unless ``pattern``
        matches it (what a key that does not parse is refused for)."""
        ...


@dataclass(frozen=True)
class _Label:
    """A DNS label: an app, a secret, a token id."""

    placeholder: str
    what: str  # in errors: "invalid <what> ..."
    pattern: str = _NAME.pattern
    read: Callable[[str], Any] = str

    def text(self, value: str) -> str:
        return check_name(value, self.what)

    def value(self, text: str) -> str:
        return check_name(text, self.what)


@dataclass(frozen=True)
class _Checked:
    """A string one of the check functions above takes: a host id, a serial."""

    placeholder: str
    check: Callable[[str], str]
    pattern: str
    read: Callable[[str], Any] = str

    def text(self, value: str) -> str:
        return self.check(value)

    def value(self, text: str) -> str:
        return self.check(text)


def _shared_number(text: str) -> int:
    """The number a key names (a slot, a revision) as the one int object records share:
    past 256 CPython makes a new int for every key parsed, and the informer keeps a
    parsed key for every replica and every report (28 bytes each, 200,000 at 100,000
    replicas)."""
    return shared(int(text))


@dataclass(frozen=True)
class _Number:
    """A whole number below 2**63, zero-padded to ``digits`` so keys sort like numbers."""

    placeholder: str
    what: str
    digits: int
    read: Callable[[str], Any] = _shared_number

    @property
    def pattern(self) -> str:
        # Padded as text() pads: ``digits`` digits, or more without a leading zero.
        return rf"[0-9]{{{self.digits}}}|[1-9][0-9]{{{self.digits},{_NUMBER_DIGITS - 1}}}"

    def text(self, value: int) -> str:
        if not 0 <= value < _NUMBER_LIMIT:
            raise InvalidArgument(f"invalid {self.what} {value}: expected 0 to 2**63 - 1")
        return str(value).zfill(self.digits)

    def value(self, text: str) -> int:
        # int() alone would take "+3", " 3", "3_0" or "٣", and a padding of its own.
        if not re.fullmatch(self.pattern, text):
            raise InvalidArgument(
                f"invalid {self.what} {text[:64]!r}: expected {self.digits} digits, or up "
                f"to {_NUMBER_DIGITS} without a leading zero"
            )
        return int(text)


class EventName(NamedTuple):
    """What an event batch's key says: when it was stored, by whom, its number among
    that source's batches and the size of its value (None: stored before sizes were
    in the name)."""

    time_ns: int
    source: str
    seq: int
    size: int | None


def _event_name(text: str) -> EventName:
    """The name of a batch, from a text ``_EVENT_NAME`` matches."""
    found = _EVENT_NAME.fullmatch(text)
    if found is None:
        raise InvalidArgument(
            f"invalid event batch name {text[:64]!r}: expected <time>-<source>-<n>-<size>"
        )
    time_ns, source, seq, size = found.groups()
    return EventName(int(time_ns), source, int(seq), None if size is None else int(size))


@dataclass(frozen=True)
class _EventName:
    """``<time>-<source>-<n>-<size>``: sorts by time; the size in the name lets the
    kept total be bounded from a keys-only read."""

    placeholder: str
    pattern: str = r"{}-{}-{}(?:-{})?".format(*_EVENT_PARTS)
    read: Callable[[str], Any] = _event_name

    def text(self, value: EventName) -> str:
        time_ns, source, seq, size = value
        fits = 0 <= time_ns < 10**20 and 0 <= seq < 10**6 and (size is None or 0 <= size < 10**9)
        if not fits:
            raise InvalidArgument(f"invalid event batch name {value!r}: a number out of range")
        name = f"{time_ns:020d}-{check_host_id(source)}-{seq:06d}"
        return name if size is None else f"{name}-{size:09d}"

    def value(self, text: str) -> EventName:
        return _event_name(text)


# An ingress route as fleet.spec names it (http:<host><path> or tcp:<port>), with its
# path's '%' and '/' escaped so it stays one segment. Host names are lowercase DNS names,
# optionally '*.'; paths what fleet.spec accepts.
_ROUTE_TEXT = (
    r"tcp:[1-9][0-9]{0,4}|http:(?:\*\.)?[a-z0-9.-]{1,253}%2F[A-Za-z0-9._~!$&'()*+,;=:@%-]*"
)
_ROUTE_NAME = re.compile(r"tcp:[1-9][0-9]{0,4}|http:(?:\*\.)?[a-z0-9.-]{1,253}/[!-~]*")


def _route_read(text: str) -> str:
    if text.startswith("tcp:"):
        return text
    host, _, path = text.partition("%2F")
    return host + "/" + path.replace("%2F", "/").replace("%25", "%")


@dataclass(frozen=True)
class _Route:
    """An ingress route's claim: ``tcp:5432`` or ``http:web.example.com/api``."""

    placeholder: str
    pattern: str = _ROUTE_TEXT
    read: Callable[[str], Any] = _route_read

    def text(self, value: str) -> str:
        if not _ROUTE_NAME.fullmatch(value):
            raise InvalidArgument(
                f"invalid route {value[:64]!r}: expected http:<host><path> or tcp:<port>"
            )
        if value.startswith("tcp:"):
            return value
        host, _, path = value.partition("/")
        return host + "%2F" + path.replace("%", "%25").replace("/", "%2F")

    def value(self, text: str) -> str:
        if not re.fullmatch(self.pattern, text):
            raise InvalidArgument(f"invalid route {text[:64]!r}: expected {self.placeholder}")
        return _route_read(text)


# App names and host ids are read interned: the informer holds them in the keys of its
# indexes, a few per replica (at 100,000 replicas, 300,000 copies of a few thousand
# names were 18 MB).
_APP = _Label("<app>", "app name", read=sys.intern)
_HOST = _Checked("<host>", check_host_id, _HOST_ID.pattern, read=sys.intern)
_SLOT = _Number("<slot>", "slot", 6)
_REVISION = _Number("<revision>", "revision", 10)


# ------------------------------------------------------------------ folders


@dataclass(frozen=True, eq=False)  # each folder is one object: compared by identity
class Folder:
    """One kind of key: the folder it sits in under the prefix and the segments after
    it (none: the folder's name is the key, as ``policy``)."""

    name: str
    segments: tuple[Segment, ...] = ()
    # What may follow "<name>/": the segments' patterns, each a group (parsing a key is
    # one match, then reading the groups: the informer parses every key it sees).
    pattern: re.Pattern[str] = field(init=False, repr=False)
    # The segments whose text is not their value, with how to read it: (index, read).
    readers: tuple[tuple[int, Callable[[str], Any]], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pattern = "/".join(f"({segment.pattern})" for segment in self.segments)
        object.__setattr__(self, "pattern", re.compile(pattern))
        readers = tuple((i, s.read) for i, s in enumerate(self.segments) if s.read is not str)
        object.__setattr__(self, "readers", readers)

    def refusal(self, rest: str | None) -> str:
        """Why the segments ``rest`` (None: no "/" after the name) do not parse."""
        parts = [] if rest is None else rest.split("/")
        if len(parts) == len(self.segments):
            for segment, part in zip(self.segments, parts, strict=True):
                try:
                    segment.value(part)
                except InvalidArgument as error:
                    return str(error)
        return f"expected {self.shape}"

    @property
    def shape(self) -> str:
        """The key as the layout above writes it: ``replicas/<app>/<slot>``."""
        return "/".join([self.name, *(s.placeholder for s in self.segments)])


APPS = Folder("apps", (_APP,))
REVISIONS = Folder("revisions", (_APP, _REVISION))
REPLICAS = Folder("replicas", (_APP, _SLOT))
ROLLOUTS = Folder("rollouts", (_APP,))
JOBS = Folder("jobs", (_APP,))
HOSTS = Folder("hosts", (_HOST,))
HOST_LABELS = Folder("host-labels", (_HOST,))
ALIVE = Folder("alive", (_HOST,))
STATUS = Folder("status", (_HOST,))
REPORTS = Folder("reports", (_HOST, _APP, _SLOT, _REVISION))
ROUTES = Folder("routes", (_Route("<route>"),))
SECRETS = Folder("secrets", (_Label("<name>", "secret name"),))
SECRETS_KEY = Folder("secrets-key")
POOL = Folder("pool")
POLICY = Folder("policy")
REGISTRY_MIRROR = Folder("registry-mirror")
MAINTENANCE = Folder("maintenance")
UPGRADE = Folder("upgrade")
LEADER = Folder("leader")
SERVING = Folder("serving", (_Checked("<seat>", check_seat, _HOST_ID.pattern),))
TOKENS = Folder("tokens", (_Label("<id>", "token id"),))
JOIN_TOKENS = Folder("join-tokens", (_Label("<id>", "join token id"),))
DENIED = Folder("denied", (_Checked("<serial>", check_serial, _SERIAL.pattern),))
EVENTS = Folder("events", (_EventName("<time>-<source>-<n>-<size>"),))

# Every folder, in the order of the layout above.
FOLDERS: tuple[Folder, ...] = (
    APPS,
    REVISIONS,
    REPLICAS,
    ROLLOUTS,
    JOBS,
    HOSTS,
    HOST_LABELS,
    ALIVE,
    STATUS,
    REPORTS,
    ROUTES,
    SECRETS,
    SECRETS_KEY,
    POOL,
    POLICY,
    REGISTRY_MIRROR,
    MAINTENANCE,
    UPGRADE,
    LEADER,
    SERVING,
    TOKENS,
    JOIN_TOKENS,
    DENIED,
    EVENTS,
)
_BY_NAME = {folder.name: folder for folder in FOLDERS}


class ParsedKey(NamedTuple):
    """What a key names: its folder and the values its builder was given, in order
    (numbers as ints, an event batch's name as an ``EventName``)."""

    folder: Folder
    parts: tuple[Any, ...]


class MalformedKey(ValueError):
    """A key under the prefix that no folder's shape fits: no builder makes it."""

    def __init__(self, key: bytes, folder: str, why: str) -> None:
        super().__init__(f"key {key.decode(errors='replace')!r} does not parse: {why}")
        self.key = key
        self.folder = folder  # its first segment after the prefix, a folder or not


class KeyLayout:
    """Builds and parses every key under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/") or "//" in prefix:
            raise InvalidArgument(f"etcd prefix must look like /name/ (got {prefix!r})")
        self.prefix = prefix
        self.root = prefix.encode()
        # Folders a key that does not parse was seen in (see parse_or_warn).
        self._warned: set[str] = set()

    def key(self, folder: Folder, *values: Any) -> bytes:
        """The key of ``folder`` that holds ``values``, one for each of its segments."""
        if len(values) != len(folder.segments):
            raise TypeError(f"{folder.shape} takes {len(folder.segments)} values")
        key = self.prefix + folder.name
        for segment, value in zip(folder.segments, values, strict=True):
            key += "/" + segment.text(value)
        return key.encode()

    def folder_prefix(self, folder: Folder, *values: Any) -> bytes:
        """The prefix of ``folder``'s keys whose first segments hold ``values`` (none:
        every key of the folder); it ends with "/", so app "web" never takes in "web2"."""
        if len(values) >= len(folder.segments):
            raise TypeError(f"{folder.shape} has no folder of {len(values)} values")
        texts = [s.text(value) for s, value in zip(folder.segments, values, strict=False)]
        return (self.prefix + "/".join([folder.name, *texts]) + "/").encode()

    def parse(self, key: bytes) -> ParsedKey | None:
        """What ``key`` names, or None for a key outside the prefix (not fleet's).
        ``MalformedKey`` for a key under it that no builder makes: an unknown folder,
        too few or too many segments, a segment its folder does not take."""
        if not key.startswith(self.root):
            return None
        rest = key[len(self.root) :]
        try:
            name, slash, tail = rest.decode().partition("/")
        except UnicodeDecodeError:
            name = rest.split(b"/", 1)[0].decode(errors="replace")
            raise MalformedKey(key, name, "not UTF-8") from None
        folder = _BY_NAME.get(name)
        if folder is None:
            raise MalformedKey(key, name, f"no folder {name!r}")
        if not folder.segments:
            if slash:
                raise MalformedKey(key, name, f"expected {folder.shape}")
            return ParsedKey(folder, ())
        found = folder.pattern.fullmatch(tail) if slash else None
        if found is None:
            raise MalformedKey(key, name, folder.refusal(tail if slash else None))
        values = found.groups()
        if folder.readers:
            read = list(values)
            for index, reader in folder.readers:
                read[index] = reader(read[index])
            values = tuple(read)
        return ParsedKey(folder, values)

    def parse_or_warn(self, key: bytes) -> ParsedKey | None:
        """``parse`` for keys read from etcd: one that does not parse is skipped (None),
        with a warning the first time its folder has one (a stray key is seen again at
        every list, and its folder's keys at every event)."""
        try:
            return self.parse(key)
        except MalformedKey as error:
            if error.folder not in self._warned:
                self._warned.add(error.folder)
                log.warning(
                    "%s; skipped (later keys of %r that do not parse are skipped unwarned)",
                    error,
                    error.folder,
                )
            return None

    # apps and their revisions
    def app(self, name: str) -> bytes:
        return self.key(APPS, name)

    def apps(self) -> bytes:
        return self.folder_prefix(APPS)

    def revision(self, app: str, n: int) -> bytes:
        return self.key(REVISIONS, app, n)

    def revisions(self, app: str) -> bytes:
        return self.folder_prefix(REVISIONS, app)

    def rollout(self, app: str) -> bytes:
        return self.key(ROLLOUTS, app)

    def job(self, app: str) -> bytes:
        return self.key(JOBS, app)

    # replicas
    def replica(self, app: str, slot: int) -> bytes:
        return self.key(REPLICAS, app, slot)

    def replicas(self, app: str | None = None) -> bytes:
        return self.folder_prefix(REPLICAS) if app is None else self.folder_prefix(REPLICAS, app)

    # hosts, liveness and reports
    def host(self, host_id: str) -> bytes:
        return self.key(HOSTS, host_id)

    def host_labels(self, host_id: str) -> bytes:
        return self.key(HOST_LABELS, host_id)

    def alive(self, host_id: str) -> bytes:
        return self.key(ALIVE, host_id)

    def status(self, host_id: str) -> bytes:
        return self.key(STATUS, host_id)

    def report(self, host_id: str, app: str, slot: int, revision: int) -> bytes:
        return self.key(REPORTS, host_id, app, slot, revision)

    def reports(self, host_id: str | None = None) -> bytes:
        return (
            self.folder_prefix(REPORTS) if host_id is None else self.folder_prefix(REPORTS, host_id)
        )

    def event(self, time_ns: int, source: str, seq: int, size: int = 0) -> bytes:
        """A batch of events: sorted by time; its value's ``size`` in bytes is in the
        name, so the kept total can be bounded from a keys-only read."""
        return self.key(EVENTS, EventName(time_ns, source, seq, size))

    def events(self) -> bytes:
        return self.folder_prefix(EVENTS)

    def events_since(self, time_ns: int) -> bytes:
        """The first key an event batch stored at ``time_ns`` or later can have (a
        range start, not a key of its own)."""
        return self.folder_prefix(EVENTS) + f"{max(0, time_ns):020d}".encode()

    @staticmethod
    def event_size(key: bytes) -> int:
        """The value size an event key names (keys from before sizes, and keys that do
        not parse: 128 KiB, more than a batch of 100 events of the longest message
        weighs)."""
        try:
            size = _event_name(key.rsplit(b"/", 1)[-1].decode()).size
        except (InvalidArgument, UnicodeDecodeError):
            return _UNSIZED_EVENTS
        return _UNSIZED_EVENTS if size is None else int(size)

    def token(self, token_id: str) -> bytes:
        return self.key(TOKENS, token_id)

    def join_token(self, token_id: str) -> bytes:
        return self.key(JOIN_TOKENS, token_id)

    def denied(self, serial: str) -> bytes:
        """A certificate serial refused on every stream (``fleet hosts remove``)."""
        return self.key(DENIED, serial)

    def maintenance(self) -> bytes:
        return self.key(MAINTENANCE)

    def upgrade(self) -> bytes:
        return self.key(UPGRADE)

    def leader(self) -> bytes:
        return self.key(LEADER)

    def serving(self, seat: str) -> bytes:
        """The lease the replica in ``seat`` binds its hosts' keys to."""
        return self.key(SERVING, seat)

    def policy(self) -> bytes:
        return self.key(POLICY)

    def registry_mirror(self) -> bytes:
        return self.key(REGISTRY_MIRROR)

    # ingress routes
    def route(self, route: str) -> bytes:
        """Who holds an ingress route (``fleet.spec``'s http:HOST/PATH or tcp:PORT)."""
        return self.key(ROUTES, route)

    # secrets
    def secret(self, name: str) -> bytes:
        return self.key(SECRETS, name)

    def secrets_key(self) -> bytes:
        return self.key(SECRETS_KEY)

    def pool(self) -> bytes:
        """The pool's identity: made once, never changed (``Store.pool_identity``)."""
        return self.key(POOL)
