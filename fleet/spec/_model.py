"""``AppSpec``, one app of an app file: its fields, what each accepts, and the split
between the container template (what each replica runs, hashed into revisions) and the
rest (how many, where, how they roll out). The nested models live in their own modules:
``_ports``, ``_resources``, ``_restart``, ``_constraints``, ``_health``, ``_update``."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_serializer,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from fleet._names import DNS_LABEL_SCHEMA, DNS_LABEL_TEXT, is_dns_label
from fleet.hostpaths import form_problem
from fleet.spec._constraints import LABEL_KEY, Constraint, ConstraintItem
from fleet.spec._docker import (
    DOCKER_FIELDS,
    ENTRYPOINT_SCHEMA,
    Devices,
    Dns,
    DnsSearch,
    ExtraHosts,
    Hostname,
    LoggingField,
    Networks,
    ShmSize,
    StopSignal,
    Sysctls,
    Tmpfs,
    Ulimits,
    User,
    WorkingDir,
)
from fleet.spec._fields import (
    MAX_REPLICAS,
    Model,
    Words,
    has_space,
    none_as,
    scalar_text,
    schema,
    strict_bool,
    words_schema,
)
from fleet.spec._health import HealthCheck
from fleet.spec._image import IMAGE_PATTERN, image_problem
from fleet.spec._ingress import Ingress
from fleet.spec._ports import PortItem, PortSpec, duplicate_ports
from fleet.spec._quote import show as _show
from fleet.spec._resources import Resources
from fleet.spec._restart import RestartPolicy
from fleet.spec._units import (
    DURATION_PATTERN,
    DURATION_SCHEMA,
    format_memory,
    parse_duration,
    seconds,
)
from fleet.spec._update import (
    COUNT_OR_PERCENT_SCHEMA,
    UpdateStrategy,
    count_or_percent,
    resolve_count,
)

__all__ = ["RESERVED_LABEL_PREFIX", "AppSpec", "SecretRef", "template_of"]

RESERVED_LABEL_PREFIX = "fleet."  # fleet labels its containers with keys under this prefix
_MAX_GRACE = 3600.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAPABILITY = re.compile(r"[A-Z][A-Z_]{1,31}")
_VOLUME = re.compile(r"(?:(/[^:\0]*)|([A-Za-z0-9][A-Za-z0-9_.-]*)):(/[^:\0]*)(?::(ro|rw))?")
_JOB_FIELDS = ("completions", "parallelism", "backoff_limit", "ttl_after_finished")
# What a spec says besides its container template: the app's name and mode, how many
# replicas, where they may run, how they roll out and how the edges reach them. A change
# of these alone is no new revision of the containers (see ``AppSpec.template`` and
# ``template_of``); of the ingress only the port it may publish is (``container_ports``).
_NOT_TEMPLATE = frozenset(
    {"name", "replicas", "constraints", "placement", "max_per_host", "update"}
    | {"min_available", "drain_surge", "mode", "ingress", *_JOB_FIELDS}
)


def _name(value: object) -> str:
    if not isinstance(value, str) or not is_dns_label(value):
        raise ValueError(f"expected {DNS_LABEL_TEXT}, got {_show(value)}")
    return value


def _image(value: object) -> str:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > 512
        or has_space(value)
        or not value.isprintable()
    ):
        raise ValueError(
            "expected an image reference like nginx:1.27 or registry:5000/web:v1 "
            f"(no spaces, at most 512 characters), got {_show(value)}"
        )
    problem = image_problem(value)
    if problem:
        raise ValueError(f"{_show(value)} is not an image reference: {problem}")
    return value


def _drain_surge(value: object) -> int | str:
    surge = count_or_percent(value)
    if surge in (0, "0%"):
        raise ValueError(
            "a drain_surge of 0 would never move a replica off a draining host: leave it "
            "out for no limit, or give at least 1"
        )
    return surge


def _replicas(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REPLICAS:
        raise ValueError(f"expected a whole number from 0 to 10000, got {_show(value)}")
    return value


def _capability(value: object) -> str:
    if not isinstance(value, str) or not _CAPABILITY.fullmatch(value.upper().removeprefix("CAP_")):
        raise ValueError(f"expected a Linux capability such as NET_ADMIN, got {_show(value)}")
    return value.upper().removeprefix("CAP_")


def _volume(value: object) -> str:
    text = value if isinstance(value, str) else ""
    match = _VOLUME.fullmatch(text)
    if match is None or ".." in match[3].split("/"):
        raise ValueError(
            "expected NAME:/path or /host/path:/path with an optional :ro or :rw, "
            f"without '..', got {_show(value)}"
        )
    # A bind mount takes the host path as Docker resolves it: only the one form that says
    # where it leads can be judged by the policy (the agent then checks for symlinks).
    problem = match[1] and form_problem(match[1])
    if problem:
        raise ValueError(f"bind mount source {match[1]} {problem}")
    return text


def _placement(value: object) -> str:
    if not isinstance(value, str) or value not in ("binpack", "spread"):
        raise ValueError(f"expected binpack or spread, got {_show(value)}")
    return value


def _max_per_host(value: object) -> int | None:
    if value is None:
        return None  # no limit
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_REPLICAS:
        raise ValueError(
            "expected a whole number from 1 to 10000 (leave it out for no limit), "
            f"got {_show(value)}"
        )
    return value


def _env_name(value: object) -> str:
    if not isinstance(value, str) or _ENV_NAME.fullmatch(value) is None:
        raise ValueError(
            "expected an environment variable name (letters, digits and '_', not starting "
            f"with a digit), got {_show(value)}"
        )
    return value


class SecretRef(Model):
    """``{secret: NAME}`` in ``env``: the value of a secret (``fleet secrets set NAME``),
    resolved by the control plane for the host that runs the replica, never stored in
    the spec."""

    secret: str


def _env_value(value: object) -> str | SecretRef:
    if value is None:
        raise ValueError("expected a value, got nothing (null); write '' for an empty value")
    if isinstance(value, SecretRef):
        return value
    if isinstance(value, dict):
        if set(value) != {"secret"} or not isinstance(value["secret"], str):
            raise ValueError(f"expected a string or {{secret: NAME}}, got {_show(value)}")
        if not is_dns_label(value["secret"]):
            raise ValueError(f"expected a secret name that is {DNS_LABEL_TEXT}")
        return SecretRef(secret=value["secret"])
    return scalar_text(value, "a string value or {secret: NAME}")


def _label_key(value: object) -> str:
    if not isinstance(value, str) or LABEL_KEY.fullmatch(value) is None or len(value) > 253:
        raise ValueError(
            "expected a label key (letters, digits and . _ / -, starting with a letter or "
            f"digit, at most 253 characters), got {_show(value)}"
        )
    if value.startswith(RESERVED_LABEL_PREFIX):
        raise ValueError(
            f"label keys starting with {RESERVED_LABEL_PREFIX!r} are reserved for the labels "
            f"fleet puts on containers, got {value!r}"
        )
    return value


def _label_value(value: object) -> str:
    text = scalar_text(value, "a string value")
    if len(text) > 1024:
        raise ValueError(f"expected a label value of at most 1024 characters, got {len(text)}")
    return text


def _grace(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration like 10s or 1m30s, got {_show(value)}")
    grace = parse_duration(value)
    if grace > _MAX_GRACE:
        raise ValueError(f"expected a duration from 0 to 1h (3600s), got {_show(value)}")
    return grace


_GRACE_SCHEMA = [
    {"type": "number", "minimum": 0, "maximum": _MAX_GRACE},
    {"type": "string", "pattern": DURATION_PATTERN},
]


def _job_count(low: int) -> Callable[[object, ValidationInfo], int | None]:
    def check(value: object, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not low <= value <= MAX_REPLICAS
        ):
            what = info.field_name
            raise ValueError(f"expected {what} from {low} to {MAX_REPLICAS}, got {_show(value)}")
        return value

    return check


def _string_map(key_pattern: str, description: str, example: dict[str, str]) -> WithJsonSchema:
    values: dict[str, Any] = {"type": ["string", "number", "boolean"]}
    if "secret" in description:
        values = {
            "anyOf": [
                values,
                {
                    "type": "object",
                    "properties": {"secret": {"type": "string"}},
                    "required": ["secret"],
                    "additionalProperties": False,
                },
            ]
        }
    return schema(
        type="object",
        propertyNames={"pattern": key_pattern},
        additionalProperties=values,
        description=description,
        examples=[example],
    )


_ttl = seconds(0, 30 * 86400)  # a finished job's containers are kept at most 30 days
_EnvName = Annotated[str, BeforeValidator(_env_name)]
_EnvValue = Annotated[str | SecretRef, BeforeValidator(_env_value)]
_LabelKey = Annotated[str, BeforeValidator(_label_key)]
_LabelValue = Annotated[str, BeforeValidator(_label_value)]
_JobCount = Annotated[int | None, BeforeValidator(_job_count(1))]


class AppSpec(Model):
    """One app: the container template its replicas run, how many, and where they may run.

    ``mode`` says how many: ``replicated`` (``replicas`` of them), ``global`` (one on
    every ready host that matches ``constraints``) or ``job`` (``completions`` runs to
    exit 0, ``parallelism`` at a time)."""

    name: Annotated[
        str,
        BeforeValidator(_name),
        schema(
            type="string",
            pattern=DNS_LABEL_SCHEMA,
            description=f"the app's name, {DNS_LABEL_TEXT}",
            examples=["web"],
        ),
    ]
    image: Annotated[
        str,
        BeforeValidator(_image),
        schema(
            type="string",
            pattern=IMAGE_PATTERN,
            maxLength=512,
            description="an image reference as docker pull takes it: "
            "[REGISTRY[:PORT]/]REPOSITORY[:TAG][@DIGEST]",
            examples=["nginx:1.27", "127.0.0.1:5000/web:v1"],
        ),
    ]
    replicas: Annotated[
        int,
        BeforeValidator(_replicas),
        schema(type="integer", minimum=0, maximum=MAX_REPLICAS, description="how many to run"),
    ] = 1
    mode: Annotated[
        Literal["replicated", "global", "job"],
        schema(
            type="string",
            enum=["replicated", "global", "job"],
            description="replicated: `replicas` of them; global: one on every matching host; "
            "job: run to completion",
        ),
    ] = "replicated"
    command: Annotated[
        Words,
        words_schema(
            "replaces the image's CMD; a string is split into words like a shell",
            ["httpd", "-f", "-p", "8080"],
        ),
    ] = None
    env: Annotated[
        dict[_EnvName, _EnvValue],
        none_as(dict),
        _string_map(
            "^[A-Za-z_][A-Za-z0-9_]*$",
            "environment variables; numbers and true/false become their text; "
            "{secret: NAME} takes a secret's value",
            {"GREETING": "hello"},
        ),
    ] = Field(default_factory=dict)
    ports: Annotated[
        list[PortItem],
        none_as(list),
        Field(
            description="published ports, [HOST:]CONTAINER[/tcp|udp]; no HOST = ephemeral",
            examples=[["8080", "9090:9000/udp"]],
        ),
    ] = Field(default_factory=list)
    resources: Annotated[
        Resources,
        none_as(dict),
        Field(description="CPU and memory per replica", examples=[{"cpu": 0.25, "memory": "64Mi"}]),
    ] = Resources()
    restart: Annotated[
        RestartPolicy,
        schema(
            type="string",
            pattern="^(no|always|on-failure(:[0-9]+)?)$",
            description="no, always, on-failure or on-failure:N",
            examples=["on-failure:3"],
        ),
        Field(json_schema_extra={"default": "always"}),
    ] = RestartPolicy()
    labels: Annotated[
        dict[_LabelKey, _LabelValue],
        none_as(dict),
        _string_map(
            r"^(?!fleet\.)[A-Za-z0-9][A-Za-z0-9._/-]*$",
            "labels put on the containers; keys starting with fleet. are reserved",
            {"team": "web"},
        ),
    ] = Field(default_factory=dict)
    constraints: Annotated[
        list[ConstraintItem],
        none_as(list),
        Field(
            description="host label selectors: k=v, k!=v or k (the label exists), over the "
            "labels admins set (fleet label host), agent.<k> for a host's own --label, and "
            "its facts (os, arch, ...)",
            examples=[["role=edge", "disk!=hdd", "gpu"]],
        ),
    ] = Field(default_factory=list)
    placement: Annotated[
        Literal["binpack", "spread"],
        BeforeValidator(_placement),
        schema(
            type="string",
            enum=["binpack", "spread"],
            description="binpack: fill the hosts in use first (the default); "
            "spread: the emptiest host first",
        ),
    ] = "binpack"
    max_per_host: Annotated[
        int | None,
        BeforeValidator(_max_per_host),
        schema(
            anyOf=[{"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS}, {"type": "null"}],
            description="at most this many replicas on one host; no limit when left out",
            examples=[1],
        ),
    ] = None
    stop_grace_period: Annotated[
        float,
        BeforeValidator(_grace),
        schema(
            anyOf=_GRACE_SCHEMA,
            description="time between SIGTERM and SIGKILL, 0 to 1h",
            examples=["10s", "1m30s"],
        ),
    ] = 10.0
    shutdown_delay: Annotated[
        float,
        BeforeValidator(_grace),
        schema(
            anyOf=_GRACE_SCHEMA,
            description="how long a replica that leaves `fleet endpoints` keeps serving "
            "before it is stopped, so load balancers stop sending to it first (as Nomad's "
            "shutdown_delay)",
            examples=["2s"],
        ),
    ] = 0.0
    # Privileges: all refused unless the cluster policy (`fleet policy set`) and the
    # host's agent (`fleet agent --allow ...`) both allow them.
    privileged: Annotated[
        bool, BeforeValidator(strict_bool), Field(description="run privileged (policy)")
    ] = False
    host_network: Annotated[
        bool, BeforeValidator(strict_bool), Field(description="share the host's network (policy)")
    ] = False
    host_pid: Annotated[
        bool, BeforeValidator(strict_bool), Field(description="share the host's PIDs (policy)")
    ] = False
    cap_add: Annotated[
        list[Annotated[str, BeforeValidator(_capability)]],
        none_as(list),
        Field(description="Linux capabilities to add, e.g. NET_ADMIN (policy)"),
    ] = Field(default_factory=list)
    volumes: Annotated[
        list[Annotated[str, BeforeValidator(_volume)]],
        none_as(list),
        Field(
            description="like docker -v: NAME:/path (a named volume) or /host/path:/path[:ro] "
            "(a bind mount: policy; the host path absolute and normal, without symlinks)",
            examples=[["data:/var/lib/app", "/var/log:/host-logs:ro"]],
        ),
    ] = Field(default_factory=list)
    # Docker's other options (``_docker``), in compose's spellings; left out, each is
    # Docker's or the image's own and not part of the template (see the serializer).
    entrypoint: Annotated[Words, ENTRYPOINT_SCHEMA] = None
    user: User = ""
    working_dir: WorkingDir = ""
    hostname: Hostname = ""
    read_only: Annotated[
        bool,
        BeforeValidator(strict_bool),
        Field(description="mount the container's root filesystem read-only"),
    ] = False
    tmpfs: Tmpfs = Field(default_factory=list)
    stop_signal: StopSignal = ""
    init: Annotated[
        bool,
        BeforeValidator(strict_bool),
        Field(description="run Docker's init (tini) as PID 1 to reap zombies and pass signals"),
    ] = False
    ulimits: Ulimits = Field(default_factory=dict)
    dns: Dns = Field(default_factory=list)
    dns_search: DnsSearch = Field(default_factory=list)
    extra_hosts: ExtraHosts = Field(default_factory=list)
    sysctls: Sysctls = Field(default_factory=dict)
    shm_size: ShmSize = None
    cap_drop: Annotated[
        list[Annotated[str, BeforeValidator(_capability)]],
        BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
        none_as(list),
        Field(description="Linux capabilities to drop, e.g. NET_RAW, or ALL"),
    ] = Field(default_factory=list)
    devices: Devices = Field(default_factory=list)
    logging: LoggingField = None
    networks: Networks = Field(default_factory=list)

    health: Annotated[
        HealthCheck | None,
        Field(
            description="how to tell a replica is healthy (http, tcp or exec); "
            "without one a running replica counts as healthy",
            examples=[{"http": "http://:8080/healthz", "interval": "2s"}],
        ),
    ] = None
    min_available: Annotated[
        int | str | None,
        BeforeValidator(lambda v: None if v is None else count_or_percent(v)),
        schema(
            anyOf=[*COUNT_OR_PERCENT_SCHEMA, {"type": "null"}],
            description="the disruption budget of drains: replicas that stay available "
            "while hosts are emptied (default: replicas - update.max_unavailable)",
            examples=[5, "80%"],
        ),
    ] = None
    drain_surge: Annotated[
        int | str | None,
        BeforeValidator(lambda v: None if v is None else _drain_surge(v)),
        schema(
            anyOf=[*COUNT_OR_PERCENT_SCHEMA, {"type": "null"}],
            description="replacements a drain starts at once for the app's replicas on "
            "draining hosts, each beside the replica it replaces (make-before-break, so "
            "availability never drops); a count or a percentage of replicas (rounded up). "
            "Default: no limit, every replica of the host moves at once where there is room",
            examples=[2, "25%"],
        ),
    ] = None
    completions: _JobCount = Field(
        default=None, description="job: successful runs needed (default 1)"
    )
    parallelism: _JobCount = Field(default=None, description="job: runs at a time (default 1)")
    backoff_limit: Annotated[int | None, BeforeValidator(_job_count(0))] = Field(
        default=None, description="job: failures in total before the job fails (default 6)"
    )
    ttl_after_finished: Annotated[
        float | None,
        BeforeValidator(lambda v, info: None if v is None else _ttl(v, info)),
        schema(anyOf=[*DURATION_SCHEMA["anyOf"], {"type": "null"}]),
        Field(description="job: finished containers are kept this long for their logs (1h)"),
    ] = None
    update: Annotated[
        UpdateStrategy,
        none_as(dict),
        Field(
            description="how a new revision rolls out",
            examples=[{"max_surge": 1, "max_unavailable": 0, "min_ready": "3s"}],
        ),
    ] = UpdateStrategy()
    ingress: Annotated[
        Ingress | None,
        Field(
            description="how the edge hosts (fleet agent --ingress) route to the app: HTTP "
            "by host and path, or a tcp port of the edges; to the container `port`, which "
            "fleet publishes on an ephemeral host port if `ports` does not publish it",
            examples=[{"port": 8080, "host": "web.example.com", "path": "/"}],
        ),
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _mode_fields(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        mode = data.get("mode", "replicated")
        if mode in ("global", "job") and "replicas" in data:
            instead = (
                "it runs one replica on every matching host"
                if mode == "global"
                else "use completions and parallelism"
            )
            raise ValueError(f"replicas does not apply to mode {mode}: {instead}")
        if mode in ("global", "job") and data.get("drain_surge") is not None:
            raise ValueError(
                f"drain_surge does not apply to mode {mode}: its replicas never move off "
                "a draining host"
            )
        if mode != "job":
            given = [f for f in _JOB_FIELDS if data.get(f) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} apply only to mode job")
        elif "restart" not in data:
            data = {**data, "restart": "on-failure"}  # a job that exits 0 is done
        return data

    @model_validator(mode="after")
    def _job_restart(self) -> Self:
        if self.mode == "job" and self.restart.kind == "always":
            raise ValueError("restart always would run a job forever: use on-failure[:N] or no")
        return self

    @model_serializer(mode="wrap")
    def _without_replicas(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The count of a global app or a job is not `replicas`: leave it out, so what is
        # dumped validates again.
        data: dict[str, Any] = handler(self)
        if self.mode != "replicated":
            data.pop("replicas", None)
        if self.ingress is None:
            # Records of apps without one stay as they were before ingresses: a control
            # plane replica not yet upgraded (a rolling upgrade) reads them still.
            data.pop("ingress", None)
        if self.drain_surge is None:
            data.pop("drain_surge", None)  # the same: records before it existed stay as they were
        for name in DOCKER_FIELDS:
            # The same for Docker's options left out; and so the template (a dump) of an
            # app that uses none hashes as before they existed: no mass rollout on upgrade.
            if name in data and not data[name]:
                del data[name]
        return data

    @property
    def job_completions(self) -> int:
        return self.completions or 1

    @property
    def job_parallelism(self) -> int:
        return self.parallelism or 1

    @property
    def job_backoff_limit(self) -> int:
        return 6 if self.backoff_limit is None else self.backoff_limit

    @property
    def job_ttl(self) -> float:
        return 3600.0 if self.ttl_after_finished is None else self.ttl_after_finished

    def budget_min_available(self) -> int:
        """Replicas a drain keeps available: ``min_available`` (a count, or a percentage
        rounded up, as Kubernetes' PodDisruptionBudget), else replicas - max_unavailable."""
        if self.min_available is None:
            return self.replicas - self.update.unavailable(self.replicas)
        if isinstance(self.min_available, int):
            return min(self.min_available, self.replicas)
        return resolve_count(self.min_available, self.replicas, round_up=True)

    def drain_moves_at_once(self) -> int | None:
        """Make-before-break replacements a drain may have started at once for this app
        (``drain_surge``, a percentage rounded up, at least one), or None: no limit."""
        if self.drain_surge is None:
            return None
        return max(1, resolve_count(self.drain_surge, self.replicas, round_up=True))

    def bind_mounts(self) -> list[str]:
        """The host paths this app mounts."""
        return [v.split(":", 1)[0] for v in self.volumes if v.startswith("/")]

    @model_validator(mode="after")
    def _ports_unique(self) -> Self:
        # Raising a ValidationError keeps the offending entry's own location ("ports[1]").
        errors = duplicate_ports(self.ports)
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_validator(mode="after")
    def _ingress_serves(self) -> Self:
        if self.ingress is not None and self.mode == "job":
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "ingress_job",
                            "ingress does not apply to mode job: a job runs to completion "
                            "and serves no traffic; remove ingress, or run the app as "
                            "replicated or global",
                        ),
                        loc=("ingress",),
                        input=self.ingress.model_dump(),
                    )
                ],
            )
        return self

    def container_ports(self) -> list[PortSpec]:
        """The ports each container publishes: ``ports``, and the ingress port on an
        ephemeral host port unless ``ports`` publishes it (over tcp) already."""
        if self.ingress is None or any(
            p.container_port == self.ingress.port and p.protocol == "tcp" for p in self.ports
        ):
            return list(self.ports)
        return [*self.ports, PortSpec(container_port=self.ingress.port)]

    def ingress_check_path(self) -> str:
        """The path the edges' proxy checks a backend with: the app's http health check's,
        when it checks the ingress port; "" (a TCP connect) otherwise."""
        if self.ingress is None or self.health is None or self.health.http is None:
            return ""
        port, path = self.health.http_target()
        return path if port == self.ingress.port else ""

    @model_validator(mode="after")
    def _host_network_options(self) -> Self:
        # Docker refuses these with the host's network at create: say so at apply.
        if not self.host_network:
            return self
        fields = ("hostname", "dns", "dns_search", "extra_hosts", "networks")
        clash = [f for f in fields if getattr(self, f)]
        # The host's network comes with its UTS namespace (its host and domain name).
        clash += [
            f"sysctls {name}"
            for name in self.sysctls
            if name.startswith("net.") or name == "kernel.domainname"
        ]
        if clash:
            raise ValueError(
                f"{', '.join(clash)} cannot be set with host_network: the container uses "
                "the host's own network settings; remove them, or host_network"
            )
        return self

    @field_serializer("shm_size")
    def _shm_text(self, size: int | None) -> str | None:
        return None if size is None else format_memory(size)

    @field_serializer("ports")
    def _ports_text(self, ports: list[PortSpec]) -> list[str]:
        return [str(p) for p in ports]

    @field_serializer("restart")
    def _restart_text(self, restart: RestartPolicy) -> str:
        return str(restart)

    @field_serializer("constraints")
    def _constraints_text(self, constraints: list[Constraint]) -> list[str]:
        return [str(c) for c in constraints]

    def template(self) -> dict[str, Any]:
        """The container template: what each replica runs, without the count and placement."""
        template = self.model_dump(mode="json", exclude=set(_NOT_TEMPLATE))
        published = self.container_ports()
        if len(published) > len(self.ports):
            # The port the ingress publishes changes the container; without an ingress
            # the template (and so every app's hash) is what it was before ingresses.
            template["ingress_port"] = published[-1].container_port
        return template

    def secret_names(self) -> set[str]:
        """The secrets this app's env refers to."""
        return {v.secret for v in self.env.values() if isinstance(v, SecretRef)}

    def template_hash(self) -> str:
        """A stable short hash of ``template()``: containers with another hash are outdated."""
        canonical = json.dumps(self.template(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def template_of(current: AppSpec, revision_spec: AppSpec) -> AppSpec:
    """``current`` with the container template of ``revision_spec``: what a rollback or an
    undo writes, keeping today's name, mode, count, placement and update settings."""
    # Only what the current spec keeps: a field the revision leaves out (dumps omit
    # Docker's options at their defaults) must not stay as the current spec has it.
    kept = {k: v for k, v in current.model_dump().items() if k in _NOT_TEMPLATE}
    template = revision_spec.model_dump(exclude=set(_NOT_TEMPLATE))
    return AppSpec.model_validate({**kept, **template})
