"""The Docker adapter: the only module of the agent that talks to dockerd, the
``Runtime`` (``fleet.agent.runtime``) of every real host.

It speaks the docker SDK (blocking), so the agent calls it from worker threads, and it
follows Docker's event stream (``FollowedEvents``). Every container it creates carries
``fleet.*`` labels; it lists, stops and removes only containers with those labels, so
anything else on the host is left alone.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig, Ulimit
from docker.utils import parse_repository_tag
from google.protobuf import json_format

from fleet.agent.dockererrors import DOCKER_ERRORS, pull_failure, translate
from fleet.agent.dockerexec import DockerExec
from fleet.agent.runtime import (
    LABEL_APP,
    LABEL_GRACE,
    LABEL_HEALTH,
    LABEL_POOL,
    LABEL_RESTART,
    LABEL_REVISION,
    LABEL_SHUTDOWN_DELAY,
    LABEL_SLOT,
    LABEL_SPEC_HASH,
    LogStream,
    ObservedContainer,
    container_labels,
    container_name,
    free_name,
)
from fleet.agent.stats import HostUsage, UsageSampler
from fleet.errors import FailedPrecondition, FleetError, InvalidArgument, NotFound, PullFailed
from fleet.proto import fleet_pb2 as pb
from fleet.registries import mirror_reference
from fleet.spec import DEFAULT_LOGGING

__all__ = ["DockerRuntime", "daemon_identity"]

log = logging.getLogger(__name__)


# fleet's networks on a host: Docker's name of app network NAME, and its label.
_NETWORK_PREFIX = "fleet-"
LABEL_NETWORK = "fleet.network"


def daemon_identity(info: dict[str, Any]) -> str:
    """Which Docker daemon this is, as ``docker info`` tells (the ``docker_daemon`` fact:
    the control plane refuses a second host whose agent manages the same daemon).
    Docker's ID alone is not enough: before Docker 23 it comes from
    /etc/docker/key.json, which every daemon of one machine shares (and a cloned disk
    image too); with the daemon's host name and data root it tells daemons apart."""
    parts = (info.get("ID", ""), info.get("Name", ""), info.get("DockerRootDir", ""))
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _epoch(text: str) -> float | None:
    if not text or text.startswith("0001-"):
        return None
    # Docker reports nanoseconds; Python parses microseconds.
    head, _, tail = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{tail[:6] or '0'}+00:00").timestamp()


def _health_check(text: str | None) -> pb.HealthCheck | None:
    if not text:
        return None
    try:
        return json_format.Parse(text, pb.HealthCheck())
    except json_format.ParseError:
        log.warning("ignoring an unreadable %s label: %.80s", LABEL_HEALTH, text)
        return None


def _docker_health(state: dict[str, Any]) -> tuple[str, float | None, str]:
    """Docker's health status, since when it has been healthy (the start of the run of
    passing checks that ends its log), and the last check's output."""
    health = state.get("Health") or {}
    status = str(health.get("Status") or "")
    log_entries = health.get("Log") or []
    output = str(log_entries[-1].get("Output") or "").strip()[:200] if log_entries else ""
    if status != "healthy":
        return status, None, output
    since = None
    for entry in reversed(log_entries):
        if entry.get("ExitCode") != 0:
            break
        since = _epoch(str(entry.get("Start") or ""))
    return status, since, output


def _bind_sources(attrs: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(m["Source"]) for m in attrs.get("Mounts") or [] if m.get("Type") == "bind")


def _observe(attrs: dict[str, Any]) -> ObservedContainer:
    labels = attrs["Config"]["Labels"] or {}
    state = attrs["State"]
    health, healthy_since, output = _docker_health(state)
    ports: list[tuple[int, int, str]] = []
    for spec, bindings in (attrs["NetworkSettings"].get("Ports") or {}).items():
        container_port, _, protocol = spec.partition("/")
        for binding in bindings or []:
            if binding.get("HostIp") in ("0.0.0.0", ""):
                ports.append((int(binding["HostPort"]), int(container_port), protocol))
    return ObservedContainer(
        container_id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        app=labels[LABEL_APP],
        slot=int(labels.get(LABEL_SLOT, "0")),
        revision=int(labels.get(LABEL_REVISION, "0")),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        restart=labels.get(LABEL_RESTART, "always"),
        stop_grace=float(labels.get(LABEL_GRACE, "10")),
        state=state["Status"],
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        started_at=state.get("StartedAt", ""),
        finished_at=_epoch(state.get("FinishedAt", "")),
        ports=tuple(sorted(ports)),
        started_epoch=_epoch(state.get("StartedAt", "")),
        pid=int(state.get("Pid") or 0),
        shutdown_delay=float(labels.get(LABEL_SHUTDOWN_DELAY, "0") or 0),
        health_check=_health_check(labels.get(LABEL_HEALTH)),
        docker_health=health,
        docker_healthy_since=healthy_since,
        docker_health_output=output,
        bind_sources=_bind_sources(attrs),
        pool=labels.get(LABEL_POOL, ""),
    )


def _nanos(seconds: float) -> int:
    return int(seconds * 1e9)


def _log_config(options: pb.ContainerOptions) -> LogConfig:
    """The app's log driver, else fleet's bounded default (not the daemon's, which is
    unbounded unless its admin set otherwise): a new container gets it; one that runs
    keeps the log it was made with (the default is no part of the template)."""
    if options.HasField("logging"):
        return LogConfig(type=options.logging.driver, config=dict(options.logging.options))
    return LogConfig(type=DEFAULT_LOGGING.driver, config=dict(DEFAULT_LOGGING.options))


def _host_options(options: pb.ContainerOptions) -> dict[str, Any]:
    """The HostConfig part of Docker's other options (None: Docker's own)."""
    return {
        "read_only": options.read_only or None,
        "tmpfs": dict(t.partition(":")[::2] for t in options.tmpfs) or None,
        "init": options.init or None,
        "ulimits": [
            Ulimit(name=name, soft=u.soft, hard=u.hard) for name, u in options.ulimits.items()
        ]
        or None,
        "dns": list(options.dns) or None,
        "dns_search": list(options.dns_search) or None,
        "extra_hosts": list(options.extra_hosts) or None,
        "sysctls": dict(options.sysctls) or None,
        "shm_size": options.shm_size_bytes or None,
        "cap_drop": list(options.cap_drop) or None,
        # Only what the agent's policy allowed reaches this point (--allow-device).
        "devices": list(options.devices) or None,
        "log_config": _log_config(options),
    }


class DockerRuntime:
    """Create, start, stop and list fleet's containers on one dockerd."""

    blocking = True  # docker-py blocks: the agent calls it from worker threads

    def __init__(self, base_url: str | None = None, *, timeout: int = 60) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._events_stream: Any = None
        self._unreadable_seen: set[str] = set()
        self._network_lock = threading.Lock()
        self._sampler = UsageSampler(lambda: self.client)

    @property
    def client(self) -> docker.DockerClient:
        """The SDK's client, made on first use (it asks the daemon for its API version,
        so making it fails while dockerd is away: ``Unavailable``, tried again later)."""
        with self._lock:
            if self._client is None:
                try:
                    if self._base_url:
                        self._client = docker.DockerClient(
                            base_url=self._base_url, timeout=self._timeout
                        )
                    else:
                        self._client = docker.from_env(timeout=self._timeout)
                except DOCKER_ERRORS as error:
                    raise translate("connect", error) from error
            return self._client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, with whatever Docker raises turned into a ``FleetError``."""
        try:
            return fn()
        except DOCKER_ERRORS as error:
            raise translate(what, error) from error

    def ping(self) -> None:
        self._call("ping", self.client.ping)

    def host_facts(self) -> tuple[float, int, dict[str, str]]:
        """(cpus, memory bytes, facts) as the daemon reports them."""
        info = self._call("info", self.client.info)
        facts = {
            "os": info.get("OperatingSystem", ""),
            "os_type": info.get("OSType", ""),
            "arch": info.get("Architecture", ""),
            "kernel": info.get("KernelVersion", ""),
            "docker_version": info.get("ServerVersion", ""),
        }
        facts["docker_daemon"] = daemon_identity(info)
        boot_id = Path("/proc/sys/kernel/random/boot_id")
        if boot_id.exists():
            facts["boot_id"] = boot_id.read_text().strip()
        return float(info.get("NCPU", 0)), int(info.get("MemTotal", 0)), facts

    def list_containers(self) -> list[ObservedContainer]:
        """Every fleet container on the host, running or not."""

        def inspect_all() -> list[ObservedContainer]:
            found = []
            for summary in self.client.api.containers(all=True, filters={"label": LABEL_APP}):
                try:
                    attrs = self.client.api.inspect_container(summary["Id"])
                except docker.errors.NotFound:
                    continue  # removed between the list and the inspect
                try:
                    found.append(_observe(attrs))
                except (KeyError, TypeError, ValueError, AttributeError) as error:
                    self._unreadable(summary["Id"], error)
            return found

        result: list[ObservedContainer] = self._call("list containers", inspect_all)
        return result

    def _unreadable(self, container_id: str, error: Exception) -> None:
        """A container labelled as fleet's whose labels fleet cannot read (made by
        someone else, or edited): left alone, and said once."""
        if container_id not in self._unreadable_seen:
            self._unreadable_seen.add(container_id)
            log.warning(
                "leaving container %s alone: its fleet.* labels are unreadable (%s: %s)",
                container_id[:12],
                type(error).__name__,
                error,
            )

    def ensure_image(
        self, image: str, auth: pb.RegistryAuth | None = None, mirror: str = ""
    ) -> bool:
        """Pull ``image`` unless the daemon has it, with ``auth`` (Docker's auth_config)
        and a Docker Hub image through ``mirror`` first (the rules: fleet.registries);
        True when it was pulled."""
        try:
            self._call("inspect image", lambda: self.client.images.get(image))
            return False
        except NotFound:
            pass
        except InvalidArgument as error:  # dockerd cannot parse the reference
            raise PullFailed("pull-failed", f"{image} is not a valid image reference") from error
        repository, tag = parse_repository_tag(image)
        mirror_failed = ""
        via = mirror_reference(image, mirror)
        if via is not None:
            try:
                self._pull_through(via, repository, tag or "latest")
                log.info("pulled %s through the mirror %s", image, mirror)
                return True
            except DOCKER_ERRORS as error:
                mirror_failed = str(pull_failure(via, error))
                log.warning("the mirror failed (%s); pulling %s itself", mirror_failed, image)
        log.info("pulling %s%s", image, f" as {auth.username}" if auth is not None else "")
        config = {"username": auth.username, "password": auth.password} if auth else None
        try:
            # A digest reference pulls by digest (docker-py takes it as the "tag").
            self.client.images.pull(repository, tag=tag or "latest", auth_config=config)
        except DOCKER_ERRORS as error:
            failure = pull_failure(image, error)
            if mirror_failed and isinstance(failure, PullFailed):
                failure = PullFailed(
                    failure.reason, f"{failure} (the mirror {mirror} failed first: {mirror_failed})"
                )
            raise failure from error
        return True

    def _pull_through(self, via: str, repository: str, tag: str) -> None:
        """Pull ``via`` (the mirror's name of an image), name it ``repository:tag`` as
        the app asked, and drop the mirror's name (the layers stay)."""
        mirrored, mirrored_tag = parse_repository_tag(via)
        self.client.images.pull(mirrored, tag=mirrored_tag or "latest")
        self.client.api.tag(f"{mirrored}:{mirrored_tag or 'latest'}", repository, tag)
        self.client.api.remove_image(f"{mirrored}:{mirrored_tag or 'latest'}", noprune=True)

    def create(self, spec: pb.ContainerSpec) -> str:
        """Create (not start) the container for ``spec``; returns its id."""
        name = container_name(spec.app, spec.slot, spec.spec_hash)
        holder = self._holder(name)
        taken = free_name(name, spec.pool_id, None if holder is None else holder[1])
        if taken != name:  # another pool's holds it: this one's leftover may hold the other
            self.remove_by_name(taken, spec.pool_id)
            name = taken
        return str(self._call(f"create {name}", lambda: self._create(spec, name)))

    def _holder(self, name: str) -> tuple[dict[str, Any], str] | None:
        """The container that holds ``name`` (its inspection, and its pool: "" for none),
        or None."""
        try:
            attrs = self._call("inspect", lambda: self.client.api.inspect_container(name))
        except NotFound:
            return None
        return attrs, (attrs["Config"]["Labels"] or {}).get(LABEL_POOL, "")

    def _create(self, spec: pb.ContainerSpec, name: str) -> str:
        healthcheck = None
        if spec.HasField("health") and spec.health.kind == "exec":
            # Docker runs exec checks itself (in the container, with its timeouts) and
            # the agent reads the status back; http and tcp run from the agent.
            check = spec.health
            healthcheck = {
                "test": ["CMD", *check.command],
                "interval": _nanos(check.interval_seconds),
                "timeout": _nanos(check.timeout_seconds),
                "retries": check.retries,
                "start_period": _nanos(check.start_period_seconds),
            }
        api = self.client.api
        options = spec.options
        networks = [_NETWORK_PREFIX + n for n in options.networks]
        for network in networks:
            self._ensure_network(network)
        first = networks[0] if networks else None
        host_config = api.create_host_config(
            port_bindings={
                f"{p.container_port}/{p.protocol}": p.host_port or None for p in spec.ports
            },
            # fleet's agent enforces restart policies itself: one authority, not two.
            restart_policy={"Name": "no"},
            security_opt=["no-new-privileges"],
            nano_cpus=int(spec.resources.cpu * 1e9) if spec.resources.cpu else None,
            mem_limit=spec.resources.memory_bytes or None,
            # Only what the agent's policy allowed reaches this point (see fleet.policy).
            privileged=spec.privileged,
            network_mode="host" if spec.host_network else first,
            pid_mode="host" if spec.host_pid else None,
            cap_add=list(spec.cap_add) or None,
            # A bind source passed the agent's check only if it is its own real path:
            # Docker gets the very path that was checked (see bind_sources).
            binds=list(spec.volumes) or None,
            **_host_options(spec.options),
        )
        # On its networks the app's name is an alias of each replica: Docker's DNS on the
        # host answers it with the replicas there.
        aliases = [spec.app]
        created = api.create_container(
            spec.image,
            command=list(spec.command) or None,
            entrypoint=list(options.entrypoint) or None,
            user=options.user or None,
            working_dir=options.working_dir or None,
            hostname=options.hostname or None,
            stop_signal=options.stop_signal or None,
            name=name,
            labels=container_labels(spec),
            environment=dict(spec.env),
            ports=[(p.container_port, p.protocol) for p in spec.ports],
            host_config=host_config,
            # So that a manual `docker stop` honours the app's grace period too.
            stop_timeout=math.ceil(spec.stop_grace_seconds),
            healthcheck=healthcheck,
            networking_config=api.create_networking_config(
                {first: api.create_endpoint_config(aliases=aliases)}
            )
            if first
            else None,
        )
        for network in networks[1:]:
            # A create that fails here leaves a created container: the next round's
            # remove_by_name takes it away before trying again.
            api.connect_container_to_network(created["Id"], network, aliases=aliases)
        return str(created["Id"])

    def _ensure_network(self, name: str) -> None:
        """Make fleet's bridge network ``name`` on this host unless it is there (one at
        a time: creates run in parallel and Docker allows two networks of one name)."""
        api = self.client.api
        with self._network_lock:
            found = [n for n in api.networks(names=[name]) if n.get("Name") == name]
            if not found:
                log.info("creating network %s", name)
                api.create_network(
                    name,
                    driver="bridge",
                    labels={LABEL_NETWORK: name.removeprefix(_NETWORK_PREFIX)},
                    check_duplicate=True,
                )
            elif LABEL_NETWORK not in (found[0].get("Labels") or {}):
                raise FailedPrecondition(
                    f"a Docker network {name} exists on this host that fleet did not make; "
                    "fleet leaves it alone: rename or remove it, or use another network name"
                )

    def bind_sources(self, container_id: str) -> tuple[str, ...]:
        """The host paths Docker will bind-mount into the container when it starts, as
        Docker recorded them (cleaned, symlinks not followed): what to check again."""
        attrs = self._call("inspect", lambda: self.client.api.inspect_container(container_id))
        return _bind_sources(attrs)

    def images_in_use(self) -> set[str]:
        """The image references of every container on the host, fleet's or not, and
        their image ids (a container may name its image either way)."""
        used: set[str] = set()
        for summary in self._call("list", lambda: self.client.api.containers(all=True)):
            used.add(summary.get("Image", ""))
            used.add(summary.get("ImageID", ""))
        return used

    def remove_image(self, image: str) -> bool:
        """Remove ``image`` unless a container uses it (Docker refuses then): True if gone."""
        try:
            self._call(f"remove image {image}", lambda: self.client.api.remove_image(image))
            return True
        except NotFound:
            return True
        except FleetError as error:  # in use (409), or the daemon is away
            log.info("keeping image %s: %s", image, error)
            return False

    def sample_usage(self) -> HostUsage:
        return self._sampler.sample()

    def start(self, container_id: str) -> None:
        self._call("start", lambda: self.client.api.start(container_id))

    def stop(self, container_id: str, grace: float) -> None:
        """Stop (SIGTERM, then SIGKILL after ``grace``) and keep the container."""
        self._call("stop", lambda: self.client.api.stop(container_id, timeout=math.ceil(grace)))

    def stop_and_remove(self, container_id: str, grace: float) -> None:
        """SIGTERM, SIGKILL after ``grace`` seconds, then remove."""
        try:
            self._call("stop", lambda: self.client.api.stop(container_id, timeout=math.ceil(grace)))
            self._call("remove", lambda: self.client.api.remove_container(container_id, force=True))
        except NotFound:
            pass  # already gone: what we wanted

    def remove_by_name(self, name: str, pool_id: str) -> None:
        """Remove a leftover container of ``pool_id`` that holds ``name`` and does not
        run (a create that failed half-way). Never a running one: that one is listed
        as a replica and kept, or it is not this pool's (once, a create here killed
        whatever fleet container held its name, another pool's included)."""
        found = self._holder(name)
        if found is None:
            return
        attrs, pool = found
        labels = attrs["Config"]["Labels"] or {}
        running = attrs["State"].get("Running") or attrs["State"].get("Restarting")
        if LABEL_APP in labels and pool == pool_id and not running:
            self.stop_and_remove(attrs["Id"], 0)

    def logs(
        self,
        container_id: str,
        *,
        follow: bool,
        tail: int,
        timestamps: bool,
        since: float = 0.0,
    ) -> LogStream:
        """The container's log as Docker reads it back (lines after the epoch second
        ``since`` when given); ``FailedPrecondition`` naming the
        driver when Docker cannot read that driver's log (``none``; or one whose local
        cache is disabled)."""
        try:
            stream: LogStream = self.client.api.logs(
                container_id,
                stream=True,
                follow=follow,
                tail="all" if tail < 0 else tail,
                timestamps=timestamps,
                since=since or None,  # epoch seconds; None: from the start
            )
        except DOCKER_ERRORS as error:
            if "does not support reading" not in str(error):
                raise translate("logs", error) from error
            raise FailedPrecondition(self._unreadable_log(container_id)) from error
        return stream

    def _unreadable_log(self, container_id: str) -> str:
        try:
            attrs = self.client.api.inspect_container(container_id)
            driver = str(attrs["HostConfig"]["LogConfig"]["Type"])
        except DOCKER_ERRORS:
            driver = "its log driver"
        except (KeyError, TypeError):
            driver = "its log driver"
        return (
            f"the container logs to {driver}, which Docker cannot read back: read the log "
            f"where {driver} sends it, or set the app's logging to json-file, local or "
            "journald (fleet's default is json-file) to use fleet logs"
        )

    def exec(self, container_id: str, command: list[str], limit: int) -> tuple[int, bytes]:
        """Run ``command`` in the container; (exit code, first ``limit`` bytes of output)."""
        api = self.client.api
        created = self._call("exec", lambda: api.exec_create(container_id, command))
        output = self._call("exec", lambda: api.exec_start(created["Id"]))
        code = self._call("exec", lambda: api.exec_inspect(created["Id"]))["ExitCode"]
        return int(code if code is not None else -1), bytes(output)[:limit]

    def exec_open(
        self, container_id: str, command: list[str], *, tty: bool, env: list[str]
    ) -> DockerExec:
        return DockerExec.open(self.client.api, container_id, command, tty=tty, env=env)

    def signal(self, container_id: str, action: str, signal: str) -> None:
        api = self.client.api
        if action == "pause":
            self._call("pause", lambda: api.pause(container_id))
        elif action == "unpause":
            self._call("unpause", lambda: api.unpause(container_id))
        elif action == "kill":
            self._call("kill", lambda: api.kill(container_id, signal=signal or "KILL"))
        else:
            raise InvalidArgument(f"{action!r}: expected pause, unpause or kill")

    def top(self, container_id: str) -> tuple[list[str], list[list[str]]]:
        found = self._call("top", lambda: self.client.api.top(container_id))
        return list(found.get("Titles") or []), [list(p) for p in found.get("Processes") or []]

    def events(self, on_event: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
        """Follow fleet containers' events until ``stop`` is set or the stream breaks."""
        stream = self.client.api.events(
            decode=True, filters={"type": "container", "label": LABEL_APP}
        )
        self._events_stream = stream
        try:
            if stop.is_set():  # stop_events() ran before the stream existed
                return
            for event in stream:
                if stop.is_set():
                    return
                on_event(event)
        finally:
            self._events_stream = None
            stream.close()

    def stop_events(self) -> None:
        """Unblock ``events`` from another thread: closing the stream ends its read."""
        stream = self._events_stream
        if stream is not None:
            stream.close()
