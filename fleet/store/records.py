"""What fleet stores under each key: small pydantic records, serialised as JSON.

Records are frozen; a change is a new record written with a compare-and-swap on the
mod revision the old one was read at (see ``fleet.store.store``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, TypeAdapter
from pydantic.dataclasses import dataclass as pydantic_dataclass

from fleet.spec import AppSpec
from fleet.store._sharing import SLOTTED, SlottedRecord, held, shared
from fleet.store.usagetable import UsageTable

__all__ = [
    "AppRecord",
    "ContainerReport",
    "DeniedRecord",
    "FleetLockHold",
    "HostCommand",
    "HostDrain",
    "HostLabelsRecord",
    "HostRecord",
    "HostState",
    "HostUpgrade",
    "JobRecord",
    "JobRun",
    "JoinTokenRecord",
    "LiveRecord",
    "MaintenanceRecord",
    "PortBinding",
    "RegistryMirrorRecord",
    "ReplicaRecord",
    "ReplicaTarget",
    "ResourceAmounts",
    "RevisionRecord",
    "RolloutRecord",
    "RolloutState",
    "RouteRecord",
    "SecretRecord",
    "SecretScope",
    "SecretsKeyRecord",
    "ServingRecord",
    "SlotContainer",
    "SlottedRecord",
    "StatusRecord",
    "TokenRecord",
    "UpgradeRecord",
    "UsageTable",
    "shared",
    "usage_key",
]

HostState = Literal["ready", "cordoned", "draining", "drained", "maintenance"]
RolloutState = Literal["progressing", "complete", "failed"]


# The sets of given fields the models below share (see ``_Record``); the values records
# share are ``fleet.store._sharing``'s.
_FIELDS_SETS: dict[frozenset[str], set[str]] = {}


class _Record(BaseModel):
    """Frozen, so that a record can be shared, and so can its parts.

    At 100,000 replicas the control plane holds a replica record and a container report
    for each, and pydantic gives every instance a set of the fields it was given (728
    bytes with five names or more, 40% of a replica record's memory). Nothing changes
    that set in place once a frozen record is made (a ``model_copy`` copies it first),
    so records given the same fields share one. The fields a class names in
    ``_shared`` (an app's name, a host id, an app's reservations, an empty list) are
    shared too."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    _shared: ClassVar[tuple[str, ...]] = ()

    def model_post_init(self, context: Any, /) -> None:
        self._share_fields_set()
        values = self.__dict__
        for name in self._shared:
            values[name] = held(values[name])

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """As pydantic's, with the copy's set of given fields shared too (pydantic copies
        it: the informer's status of each host, a copy with its containers put back, held
        a set of its own)."""
        copied = super().model_copy(update=update, deep=deep)
        copied._share_fields_set()
        return copied

    def _share_fields_set(self) -> None:
        given = self.__pydantic_fields_set__
        shared_set = _FIELDS_SETS.setdefault(frozenset(given), given)
        if shared_set is not given:
            object.__setattr__(self, "__pydantic_fields_set__", shared_set)

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


class ResourceAmounts(_Record):
    cpu: float = 0.0
    memory: int = 0  # bytes


class AppRecord(_Record):
    """The desired app: its spec, a generation that rises with every change of it, and
    the revision number of its current container template."""

    spec: AppSpec
    generation: int
    revision: int
    created_at: str
    updated_at: str
    # `fleet rollout restart` stamps this: part of the template hash, so the same spec
    # makes a new revision and every container is replaced.
    restarted_at: str = ""


class RevisionRecord(_Record):
    """One container template of an app; a new one is made when the template changes."""

    app: str
    revision: int
    template_hash: str
    spec: AppSpec
    created_at: str
    cause: str = ""  # what made it: fleet apply, fleet set image, rollout restart, ...
    # How its last rollout ended (complete, failed, rolled back) and why, for
    # ``rollout history``; written by the controller with the rollout record.
    outcome: str = ""
    outcome_reason: str = ""


class ReplicaTarget(_Record):
    """Where a replica's replacement is being started, before it takes over the slot."""

    revision: int
    host: str
    resources: ResourceAmounts
    host_ports: list[str] = []
    _shared = ("host", "resources", "host_ports")


@pydantic_dataclass(frozen=True, slots=True, config=SLOTTED)
class ReplicaRecord(SlottedRecord):
    """A desired replica: which revision runs in slot ``slot`` and on which host.

    Reservations and fixed host ports are copied from the revision so that the
    scheduler can account for a host without joining records. ``next`` is the slot's
    replacement while it starts (make-before-break: a rollout's surge, a drain's move);
    once it is available it becomes the slot's own and the old container stops.
    """

    app: str
    slot: int
    revision: int
    host: str
    resources: ResourceAmounts
    # "8080/tcp" for every fixed host port it publishes
    host_ports: list[str] = dataclasses.field(default_factory=list)
    next: ReplicaTarget | None = None
    stopped: bool = False  # keep the container but do not run it (a failed job's)
    # One of these per replica: a slotted record (``SlottedRecord``).
    _shared: ClassVar[tuple[str, ...]] = ("app", "slot", "host", "resources", "host_ports")

    def containers(self) -> list[SlotContainer]:
        """Every container this slot wants: its own and, while one starts, its next."""
        own = SlotContainer(
            self.slot, self.revision, self.host, self.resources, tuple(self.host_ports), False
        )
        nxt = self.next
        if nxt is None:
            return [own]
        return [
            own,
            SlotContainer(
                self.slot, nxt.revision, nxt.host, nxt.resources, tuple(nxt.host_ports), True
            ),
        ]


ReplicaRecord._adapter = TypeAdapter(ReplicaRecord)


class SlotContainer(NamedTuple):
    """One container a slot wants: the slot's own (``next=False``) or its replacement,
    with what it reserves on its host. Every part of fleet that walks "the containers
    of a replica" walks ``ReplicaRecord.containers()``. (A tuple: at 100,000 replicas
    the scheduler's view walks them all.)"""

    slot: int
    revision: int
    host: str
    resources: ResourceAmounts
    host_ports: tuple[str, ...]
    next: bool


class JobRun(_Record):
    """One completed run of a job."""

    exit_code: int
    host: str
    finished_at: str


class JobRecord(_Record):
    """A job's progress, kept by the controller: what succeeded (their containers are
    kept for ``ttl_after_finished`` so their logs can be read) and what failed."""

    app: str
    state: Literal["running", "complete", "failed"] = "running"
    started_at: str
    finished_at: str = ""
    succeeded: dict[int, JobRun] = {}  # slot -> its successful run
    failures: dict[str, int] = {}  # container id -> failed runs seen (exits != 0)
    exit_codes: dict[int, int] = {}  # slot -> the last exit code seen
    message: str = ""

    @property
    def failure_count(self) -> int:
        return sum(self.failures.values())


class RolloutRecord(_Record):
    """An app's rollout, kept by the controller so it survives a control-plane restart.

    ``from_revision`` is the last revision that completed before ``revision``: the one
    an automatic rollback returns to. ``progress_at`` is the last time the rollout moved
    (the progress deadline counts from it).
    """

    app: str
    revision: int
    from_revision: int
    state: RolloutState
    started_at: str
    progress_at: str
    updated_at: str
    message: str = ""
    paused: bool = False
    rollback_of: int = 0  # the revision this rollout undoes after it failed
    # Why the rollout of ``rollback_of`` failed (kept through the rollback, which has
    # messages of its own), or why this one did.
    failure: str = ""
    ready: int = 0  # replicas of ``revision`` available when it last made progress


class HostDrain(_Record):
    """A drain in progress: kept in the host record so it survives a restart."""

    started_at: str
    deadline_at: str = ""  # "" : no deadline
    force: bool = False  # past the deadline, stop what could not move
    include_global: bool = False
    by: str = "fleet drain"


class FleetLockHold(_Record):
    """A slot a host's OS updater (Zincati) took through FleetLock's ``pre-reboot``:
    the group it asked in, and the host's boot id and OS version then, so that
    ``steady-state`` knows it is back from its reboot."""

    group: str
    boot_id: str = ""
    os_version: str = ""
    taken_at: str = ""


class MaintenanceRecord(_Record):
    """The cluster-wide semaphore of hosts out for maintenance (locksmith's): at most
    ``max`` holders, each a host being drained, upgraded or waited for."""

    max: int = 1
    holders: dict[str, str] = {}  # host -> who took the slot (fleet drain, upgrade-hosts)
    fleetlock: dict[str, FleetLockHold] = {}  # holders that took theirs through FleetLock


class HostCommand(_Record):
    """A command the host's agent runs once on the host (an OS upgrade), by id."""

    id: str
    command: str
    issued_at: str


UpgradePhase = Literal["waiting", "draining", "upgrading", "canary", "done", "failed", "cancelled"]


class HostUpgrade(_Record):
    """One host's place in an upgrade walk, and what it looked like before."""

    phase: UpgradePhase = "waiting"
    started_at: str = ""
    finished_at: str = ""
    boot_id: str = ""  # before the upgrade: a new one (or a new os_version) means it is back
    os_version: str = ""
    message: str = ""
    canary_at: str = ""  # when its canary was asked for


class UpgradeRecord(_Record):
    """A coordinated OS upgrade of the selected hosts, a few at a time (locksmith's walk).
    The controller moves each host through drain, upgrade, return and uncordon."""

    id: str
    selector: list[str] = []
    max_parallel: int = 1
    command: str = ""  # "" : ops upgrade each host by hand once it is drained
    canary_app: str = ""  # run one replica of this app on each host before uncordoning it
    state: Literal["running", "stopped", "done", "cancelled"] = "running"  # the last two: over
    created_at: str
    updated_at: str
    hosts: dict[str, HostUpgrade] = {}  # in walking order


class HostRecord(_Record):
    """A registered host: what its agent reported when it last registered, and the
    state operators set (cordoned, draining, ...).

    ``capacity`` is what placement counts on: the agent's claim (``reported``) capped by
    the control plane's ``--max-host-cpus``/``--max-host-memory``. ``labels`` are the
    agent's own (``--label``), selectable as ``agent.<key>``; the labels admins set are
    a record of their own (``HostLabelsRecord``), which registration never writes."""

    # A pool's hosts are alike: their claims and capacities are a few values, shared.
    _shared = ("host_id", "capacity", "reported")

    host_id: str
    capacity: ResourceAmounts
    reported: ResourceAmounts | None = None  # the agent's claim; None: as ``capacity``
    labels: dict[str, str] = {}
    facts: dict[str, str] = {}
    state: HostState = "ready"
    registered_at: str  # when it registered first, or last registered with a change
    address: str = ""  # where its published ports answer
    # Non-empty: the host is an edge (fleet agent --ingress): where its proxy listens.
    ingress: str = ""
    drain: HostDrain | None = None
    command: HostCommand | None = None
    # The serial (lowercase hex) of the agent certificate it last registered with, and
    # those it registered with before (newest last, a few): `fleet hosts remove` denies
    # them all, so an older certificate of the host cannot bring it back either.
    cert_serial: str = ""
    past_serials: list[str] = []
    cert_expires: str = ""  # RFC 3339: when that certificate expires


class DeniedRecord(_Record):
    """A certificate refused on every agent stream of every control plane replica: the
    host it was removed with, by whom and when (``fleet hosts remove``)."""

    serial: str
    host_id: str
    by: str
    at: str


class HostLabelsRecord(_Record):
    """The labels admins set on a host (``fleet label host``): kept apart from the host's
    record, which its agent's registration writes, so that no host labels itself and
    a registration never undoes them."""

    host_id: str
    labels: dict[str, str] = {}
    updated_at: str
    updated_by: str = ""  # who changed them last (the caller's name)


class LiveRecord(_Record):
    """Present exactly while the host's agent is connected (bound to the lease of the
    control plane replica serving it)."""

    _shared = ("server",)

    server: str
    connected_at: str


class ServingRecord(_Record):
    """The lease a control plane replica binds its hosts' keys to, and which process
    holds it: a replica restarted on the same machine takes the lease over once that
    process is gone (``fleet.controlplane.seats``)."""

    server: str  # its server id
    lease: int
    boot_id: str  # the machine's boot (/proc/sys/kernel/random/boot_id)
    pid: int


class PortBinding(_Record):
    host_port: int
    container_port: int
    protocol: str


@pydantic_dataclass(frozen=True, slots=True, config=SLOTTED)
class ContainerReport(SlottedRecord):
    app: str
    slot: int
    revision: int
    spec_hash: str
    container_id: str
    name: str  # "": the name its agent gives a replica's container (``container_name``)
    state: str
    exit_code: int = 0
    started_at: str = ""
    ports: list[PortBinding] = dataclasses.field(default_factory=list)
    message: str = ""
    # Why a desired container does not run (state refused, create-failed, pull-failed
    # or held): refused, create-failed, image-not-found, unauthorized, held, ...
    reason: str = ""
    health: str = ""  # "" (no check), starting, healthy, unhealthy
    ready_since: str = ""  # healthy (or running, without a check) since
    restarts: int = 0
    cpu: float = 0.0  # live usage
    memory: int = 0
    memory_limit: int = 0
    # Times too: a host's containers start in the same millisecond (about 150 reports
    # a time in a 100,000-replica ramp) and ready_since is started_at without a check.
    # Decoded, pydantic's string cache shares equal times; made from an agent's message
    # (``model_construct``), each report held two strings of its own: 187,000 more
    # strings (13 MiB) after the ramp than in a server restarted with the same state.
    _shared: ClassVar[tuple[str, ...]] = (
        "app",
        "slot",
        "spec_hash",
        "state",
        "health",
        "ports",
        "cpu",
        "memory_limit",
        "started_at",
        "ready_since",
    )


ContainerReport._adapter = TypeAdapter(ContainerReport)


class SecretScope(_Record):
    """Which apps may reference a secret in their env: those named, or every app."""

    apps: list[str] = []
    all_apps: bool = False

    def allows(self, app: str) -> bool:
        return self.all_apps or app in self.apps


class SecretRecord(_Record):
    """A secret's value, sealed with the control plane's key (never stored in plain),
    and which apps may use it."""

    name: str
    key_id: str
    nonce: str
    ciphertext: str
    version: int
    created_at: str
    updated_at: str
    # None: stored before secrets had scopes; every app may use it, as then (`fleet
    # secrets list` warns) until an admin scopes it.
    scope: SecretScope | None = None
    # Set: a registry's credentials (fleet registry login; fleet.registries), its
    # password sealed as the value: never an env value, sent only with the pulls of the
    # apps in its scope whose image names this registry.
    registry: str = ""
    username: str = ""

    def allows(self, app: str) -> bool:
        return self.scope is None or self.scope.allows(app)


class RegistryMirrorRecord(_Record):
    """The pool's registry mirror (fleet registry mirror): Docker Hub images are
    pulled through it first (fleet.registries says the fallback rules)."""

    mirror: str
    set_at: str


class SecretsKeyRecord(_Record):
    """Which key the pool's secrets are sealed with: its id (``SecretBox.key_id``, as
    each secret records it; never the key), and who recorded it first, and when."""

    key_id: str
    recorded_by: str
    recorded_at: str


class PoolRecord(_Record):
    """The pool's identity (``pool``): a random id made by the first control plane to
    start on an empty etcd, and kept for good. Agents label every container they create
    with it, so that containers another pool left on a host (the same app and revision
    give the same names) are never taken for this pool's."""

    pool_id: str
    created_by: str
    created_at: str


class RouteRecord(_Record):
    """Which app holds an ingress route (``routes/<route>``): one app per HTTP host and
    path, and per TCP port of the edges. Its apply creates it in the same transaction
    as the app's record, only if absent, so two applies cannot both take it."""

    app: str


class TokenRecord(_Record):
    """A bearer token for the API: only the SHA-256 of its secret is kept."""

    id: str
    name: str
    role: str
    secret_sha256: str
    created_at: str


class JoinTokenRecord(_Record):
    """A join token (``fleet hosts token create``): only the SHA-256 of its secret is
    kept. Each join is a compare-and-swap on this record (``used`` and ``hosts``), so
    a token of N uses lets exactly N hosts in, whichever replica they ask."""

    id: str
    secret_sha256: str
    expires_at: str  # RFC 3339
    uses: int = 0  # hosts that may join with it; 0: no limit
    used: int = 0
    labels: dict[str, str] = {}  # the admin labels each host that joins with it gets
    hosts: list[str] = []  # who joined with it (the last few)
    created_at: str
    created_by: str
    description: str = ""


class StatusRecord(_Record):
    """What an agent last reported: the host's usage and images. Its containers are
    stored one key each (``reports/``, written when they change) and put back here by
    the state (never stored in this record); their live usage is ``container_usage``,
    by ``usage_key``, rewritten with the host's."""

    _shared = ("host_id",)

    host_id: str
    reported_at: str
    applied_version: int
    usage: ResourceAmounts
    containers: list[ContainerReport] = []
    images: list[str] = []
    # usage_key -> (cpu, memory bytes), held compactly (``UsageTable``).
    container_usage: UsageTable = UsageTable()


def usage_key(app: str, slot: int, revision: int) -> str:
    return f"{app}/{slot}/{revision}"
