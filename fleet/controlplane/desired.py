"""A host's desired container set, built from the replica records placed on it.

The agent receives this whole set (level-triggered) whenever it changes, so a push it
missed is repaired by the next one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from itertools import chain
from typing import TYPE_CHECKING, NamedTuple

from fleet.controlplane.upgrades import CANARY_SLOT, canary_hosts
from fleet.errors import InvalidArgument, NotFound
from fleet.proto import fleet_pb2 as pb
from fleet.registries import registry_of, secret_name
from fleet.secrets import SecretBox, withheld
from fleet.spec import DOCKER_FIELDS, AppSpec, HealthCheck, SecretRef
from fleet.store import ClusterState
from fleet.store.records import ReplicaRecord, ResourceAmounts, RevisionRecord

__all__ = [
    "MissingSecret",
    "Placed",
    "SpecCache",
    "build_containers",
    "container_options",
    "container_spec",
    "desired_containers",
    "desired_inputs",
    "desired_placed",
    "open_secrets",
    "placed_fingerprint",
    "registry_auth",
    "resolve_env",
]

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

    RepeatedContainers = RepeatedCompositeFieldContainer[pb.ContainerSpec]


class MissingSecret(NotFound):
    """A replica's env names a secret that does not exist (or cannot be opened)."""


def resolve_env(spec: AppSpec, secrets: Mapping[str, bytes]) -> dict[str, str]:
    """The env with every ``{secret: NAME}`` replaced by the secret's value."""
    env = {}
    for name, value in spec.env.items():
        if isinstance(value, SecretRef):
            if value.secret not in secrets:
                raise MissingSecret(f"app {spec.name!r}: secret {value.secret!r} not found")
            env[name] = secrets[value.secret].decode(errors="replace")
        else:
            env[name] = value
    return env


def container_spec(
    spec: AppSpec,
    slot: int,
    revision: int,
    template_hash: str,
    secrets: Mapping[str, bytes] | None = None,
    held: str = "",
) -> pb.ContainerSpec:
    """The container of ``spec`` as an agent runs it. A ``held`` one (the reason) carries
    no secret at all: the agent keeps such a container if it exists and creates none."""
    env = (
        {k: v for k, v in spec.env.items() if not isinstance(v, SecretRef)}
        if held
        else resolve_env(spec, secrets or {})
    )
    return pb.ContainerSpec(
        app=spec.name,
        slot=slot,
        revision=revision,
        spec_hash=template_hash,
        image=spec.image,
        command=spec.command or [],
        env=env,
        held=held,
        ports=[
            pb.PortMapping(
                host_port=p.host_port, container_port=p.container_port, protocol=p.protocol
            )
            for p in spec.container_ports()  # with the ingress port, if only it has it
        ],
        resources=pb.Resources(cpu=spec.resources.cpu, memory_bytes=spec.resources.memory),
        restart=str(spec.restart),
        labels=spec.labels,
        stop_grace_seconds=spec.stop_grace_period,
        privileged=spec.privileged,
        host_network=spec.host_network,
        host_pid=spec.host_pid,
        cap_add=spec.cap_add,
        volumes=spec.volumes,
        health=health_message(spec.health),
        shutdown_delay_seconds=spec.shutdown_delay,
        options=container_options(spec),
    )


def container_options(spec: AppSpec) -> pb.ContainerOptions | None:
    """Docker's other options of ``spec``; None when it sets none (its containers' specs
    are then byte for byte what they were before these options existed)."""
    if not any(getattr(spec, name) for name in DOCKER_FIELDS):
        return None
    options = pb.ContainerOptions(
        entrypoint=spec.entrypoint or [],
        user=spec.user,
        working_dir=spec.working_dir,
        hostname=spec.hostname,
        read_only=spec.read_only,
        tmpfs=spec.tmpfs,
        stop_signal=spec.stop_signal,
        init=spec.init,
        ulimits={k: pb.Ulimit(soft=u.soft, hard=u.hard) for k, u in spec.ulimits.items()},
        dns=spec.dns,
        dns_search=spec.dns_search,
        extra_hosts=spec.extra_hosts,
        sysctls=spec.sysctls,
        shm_size_bytes=spec.shm_size or 0,
        cap_drop=spec.cap_drop,
        devices=spec.devices,
        networks=spec.networks,
    )
    if spec.logging is not None:
        options.logging.CopyFrom(
            pb.LogConfig(driver=spec.logging.driver, options=spec.logging.options)
        )
    return options


def health_message(check: HealthCheck | None) -> pb.HealthCheck | None:
    if check is None:
        return None
    message = pb.HealthCheck(
        kind=check.kind,
        interval_seconds=check.interval,
        timeout_seconds=check.timeout,
        retries=check.retries,
        start_period_seconds=check.start_period,
    )
    if check.http is not None:
        message.port, message.path = check.http_target()
    elif check.tcp is not None:
        message.port = check.tcp
    else:
        message.command.extend(check.exec or [])
    return message


def open_secrets(state: ClusterState, names: set[str], box: SecretBox | None) -> dict[str, bytes]:
    """The plaintext of the named secrets that exist and open with ``box``."""
    opened: dict[str, bytes] = {}
    for name in names:
        record = state.secrets.get(name)
        if record is None or box is None or record.value.registry:
            continue  # (a registry's password is never an env value: fleet.registries)
        try:
            opened[name] = box.open(name, record.value.nonce, record.value.ciphertext)
        except InvalidArgument as error:
            log.error("%s", error)
    return opened


def registry_auth(
    spec: AppSpec, state: ClusterState, box: SecretBox | None
) -> pb.RegistryAuth | None:
    """The credentials ``spec``'s replicas pull their image with: those of the registry
    its image names (``fleet registry login``), if its scope allows the app and they
    open with ``box``; None: an anonymous pull."""
    registry = registry_of(spec.image)
    name = secret_name(registry)
    stored = state.secrets.get(name)
    if stored is None or box is None:
        return None
    record = stored.value
    if record.registry != registry or not record.allows(spec.name):
        return None
    try:
        password = box.open(name, record.nonce, record.ciphertext)
    except InvalidArgument as error:
        log.error("%s", error)
        return None
    return pb.RegistryAuth(
        registry=registry, username=record.username, password=password.decode(errors="replace")
    )


class SpecCache:
    """Container specs by app revision, built once and copied per replica: a host's set
    is rebuilt on each change to it, and at 100 containers a host, building every spec
    again (secrets opened, env resolved) was most of a push. An entry is rebuilt when
    its revision record or a secret it uses changes (by mod revision; a secret's scope
    is in its record)."""

    def __init__(self, box: SecretBox | None = None) -> None:
        self._box = box
        # (app, revision) -> (what it was built from, the secrets it names, the spec and
        # a digest of it)
        self._specs: dict[
            tuple[str, int],
            tuple[tuple[int, object], tuple[str, ...], tuple[pb.ContainerSpec, bytes]],
        ] = {}

    def spec(self, state: ClusterState, app: str, number: int) -> pb.ContainerSpec | None:
        """The container spec of ``app``'s revision ``number`` with slot 0 (not to be
        changed); None when there is no such revision. It is held (``held`` says why,
        and it carries no secret) while a secret it uses is outside the secret's scope,
        missing, or cannot be opened: its replicas wait rather than start without it,
        and a container that runs already is kept."""
        found = self.spec_and_digest(state, app, number)
        return None if found is None else found[0]

    def spec_and_digest(
        self, state: ClusterState, app: str, number: int
    ) -> tuple[pb.ContainerSpec, bytes] | None:
        """``spec``, with a digest of it: equal digests, equal specs."""
        stored = state.revisions.get((app, number))
        if stored is None:
            return None
        found = self._specs.get((app, number))
        if found is not None and found[0][0] == stored.mod_revision:
            names = found[1]  # (worked out once per revision record: a push asks often)
        else:
            # Its env's secrets, and the credentials of the registry its image names.
            registry_secret = secret_name(registry_of(stored.value.spec.image))
            names = tuple(sorted({*stored.value.spec.secret_names(), registry_secret}))
        inputs = (
            stored.mod_revision,
            tuple((n, s.mod_revision if (s := state.secrets.get(n)) else 0) for n in names),
        )
        if found is None or found[0] != inputs:
            built = self._build(state, stored.value)
            digest = hashlib.sha256(built.SerializeToString(deterministic=True)).digest()
            found = self._specs[(app, number)] = (inputs, names, (built, digest))
        return found[2]

    def _build(self, state: ClusterState, revision: RevisionRecord) -> pb.ContainerSpec:
        spec, number, template = revision.spec, revision.revision, revision.template_hash
        # The scope first: a secret an app may not use is never opened for it.
        held = withheld(spec, state)
        if held is None:
            secrets = open_secrets(state, spec.secret_names(), self._box)
            try:
                built = container_spec(spec, 0, number, template, secrets)
            except MissingSecret as error:
                held = str(error)
            else:
                auth = registry_auth(spec, state, self._box)
                if auth is not None:
                    built.registry_auth.CopyFrom(auth)
                return built
        log.warning("holding %s revision %d: %s", spec.name, number, held)
        return container_spec(spec, 0, number, template, held=held)

    def forget_unused(self, state: ClusterState) -> None:
        """Drop the specs of revisions that are gone."""
        for key in [k for k in self._specs if k not in state.revisions]:
            del self._specs[key]


class Placed(NamedTuple):
    """One container of a host's desired set, before it is built: its revision's spec
    (shared, not to be changed), that spec's digest, its slot, and whether it is kept
    stopped."""

    template: pb.ContainerSpec
    digest: bytes
    slot: int
    stopped: bool


def desired_placed(state: ClusterState, host_id: str, specs: SpecCache) -> list[Placed]:
    """Every container ``host_id`` should run, in a stable order, not yet built: cheap
    to tell from the last set (``placed_fingerprint``), and built only if it differs
    (``build_containers``)."""
    placed = state.containers_on(host_id)
    canary = canary_hosts(state).get(host_id)
    app = state.apps.get(canary) if canary else None
    if app is not None:
        # An upgrade walk's canary: one replica of the app's current revision, outside
        # its slots, on the upgraded host before it takes real work again.
        name, number = app.value.spec.name, app.value.revision
        placed = [*placed, (_canary_replica(name, number, host_id), number)]
    found: list[Placed] = []
    templates: dict[tuple[str, int], tuple[pb.ContainerSpec, bytes] | None] = {}
    for replica, number in placed:
        key = (replica.app, number)
        if key in templates:  # (most of a host's containers share a few revisions)
            template = templates[key]
        else:
            template = templates[key] = specs.spec_and_digest(state, replica.app, number)
        if template is None:
            continue  # the revision record lands in the same transaction; never seen apart
        found.append(Placed(template[0], template[1], replica.slot, replica.stopped))
    return found


def placed_fingerprint(placed: list[Placed]) -> str:
    """Identifies a desired set without building it: equal prints, equal sets."""
    digest = hashlib.sha256()
    for p in placed:
        digest.update(p.digest + p.slot.to_bytes(8, "little", signed=True) + bytes([p.stopped]))
    return digest.hexdigest()


def build_containers(
    placed: list[Placed], into: RepeatedContainers | None = None
) -> list[pb.ContainerSpec]:
    """The containers of ``placed``, added to ``into`` (a set's repeated field: built in
    place, not copied there) or to a new list."""
    built: list[pb.ContainerSpec] = []
    for p in placed:
        container = into.add() if into is not None else pb.ContainerSpec()
        container.CopyFrom(p.template)
        container.slot = p.slot
        container.stopped = p.stopped
        built.append(container)
    return built


def desired_containers(
    state: ClusterState,
    host_id: str,
    box: SecretBox | None = None,
    specs: SpecCache | None = None,
) -> list[pb.ContainerSpec]:
    """Every container ``host_id`` should run, in a stable order, with secrets resolved
    (only those this host's replicas use, and may use, are opened). ``specs`` keeps the
    specs built for a next call."""
    specs = specs if specs is not None else SpecCache(box)
    return build_containers(desired_placed(state, host_id, specs))


def _canary_replica(app: str, revision: int, host_id: str) -> ReplicaRecord:
    return ReplicaRecord(
        app=app, slot=CANARY_SLOT, revision=revision, host=host_id, resources=ResourceAmounts()
    )


def desired_inputs(state: ClusterState, host_id: str) -> object:
    """What ``host_id``'s desired set is built from, cheap to compare: its replicas'
    records, the revisions and secrets they use (by mod revision), its pending command.
    Equal inputs make an equal set."""
    replicas = state.replicas_on(host_id)
    apps = {r.app for r in replicas}
    # A revision by its template's hash, not its mod revision: the controller rewrites a
    # revision's record when its rollout ends (the outcome), which changes no container;
    # by mod revision, 50 rollouts ending rebuilt every host's set 50 times, and at 1,000
    # hosts that held up the moves of a host loss for seconds. (The agent, too, tells a
    # container's template by this hash.)
    # Flat (key, hash, key, hash, ...): a session keeps its host's inputs until its next
    # look, and a pair each was a tuple of its own (1.1 KiB more a host at 20 apps).
    revisions = (
        tuple(
            chain.from_iterable(
                sorted(
                    (key, v.value.template_hash)
                    for key, v in state.revisions.items()
                    if key[0] in apps
                )
            )
        )
        if apps
        else ()
    )
    host = state.hosts.get(host_id)
    return (
        # The records themselves, shared with the informer's state (equal at once while
        # unchanged): a tuple of six of their fields each, kept by every session until
        # its next look, was 100,000 tuples at 100,000 replicas (9 MB).
        tuple(replicas),
        revisions,
        tuple(sorted((name, v.mod_revision) for name, v in state.secrets.items())) if apps else (),
        host.value.command if host is not None else None,
        canary_hosts(state).get(host_id),
        state.registry_mirror.mod_revision if state.registry_mirror else 0,
    )
