"""The app spec: what an app file asks fleet to run, validated with pydantic.

An app file is YAML holding one app per document. ``load_file`` and ``load_documents`` turn it
into ``AppSpec`` objects or raise one ``SpecError`` listing every problem with its line; the
server re-validates specs sent over the API (``spec.model_dump_json()``) with
``parse_spec_json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import urllib.parse
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    WithJsonSchema,
    field_serializer,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from fleet._names import DNS_LABEL_SCHEMA, DNS_LABEL_TEXT, is_dns_label
from fleet.hostpaths import form_problem
from fleet.spec._image import IMAGE_PATTERN, image_problem
from fleet.spec._quote import show as _show

MAX_FILE_BYTES = 1 << 20
MIN_MEMORY = 6 << 20  # dockerd refuses memory limits below 6 MiB
_MAX_MEMORY = (1 << 63) - 1  # memory travels as int64 in the protobuf messages
_MAX_REPLICAS = 10_000
_MAX_CPU = 1024.0
_MAX_GRACE = 3600.0
RESERVED_LABEL_PREFIX = "fleet."  # fleet labels its containers with keys under this prefix
_MAX_HEALTH_SECONDS = 3600.0
_MAX_DEADLINE = 24 * 3600.0

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_SELECTOR_VALUE = re.compile(r"[^\s=!]+")
_PORT = re.compile(r"(?:([0-9]+):)?([0-9]+)(?:/([A-Za-z]+))?")
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i|[kKMGT])?")
_MEMORY_UNITS: dict[str | None, int] = {
    None: 1,
    **{f"{u}i": 1 << (10 * (i + 1)) for i, u in enumerate("KMGT")},
    **{u: 10 ** (3 * (i + 1)) for i, u in enumerate("kMGT")},
    "K": 1000,
}
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _is_number(value: object) -> bool:
    # YAML's true/false are bools, and bool is an int subclass; a bool is never a count here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar_text(value: object, what: str) -> str:
    """A string field's value; numbers and booleans become their text, as docker compose does."""
    if isinstance(value, str):
        if "\0" in value:
            raise ValueError(f"expected {what} without NUL characters")
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 (nor JSON) can carry it
            raise ValueError(f"expected {what} of valid Unicode text") from None
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return str(value)
    raise ValueError(f"expected {what}, got {_show(value)}")


def parse_memory(value: str | int) -> int:
    """Bytes from an int or a size string: binary suffixes Ki Mi Gi Ti, decimal k/K M G T."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"expected a size of at least 0 bytes, got {value}")
        return value
    match = _MEMORY.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            "expected a size in bytes like 512, 64Mi or 1G (suffixes Ki Mi Gi Ti are powers "
            f"of 1024, k M G T powers of 1000), got {_show(value)}"
        )
    size = Decimal(match[1]) * _MEMORY_UNITS[match[2]]
    if size != size.to_integral_value():
        raise ValueError(f"expected a whole number of bytes, got {_show(value)} = {size} bytes")
    return int(size)


def format_memory(n: int) -> str:
    """The shortest exact size string for ``n`` bytes: "64Mi", or plain bytes like "1000"."""
    if n < 0:
        raise ValueError(f"a size cannot be negative, got {n}")
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        unit = _MEMORY_UNITS[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number of seconds or a string like "10s", "500ms", "1m30s" or "2h"."""
    if _is_number(value):
        seconds = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        seconds = float(value.strip())
    elif isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        parts = _DURATION_PART.findall(value.strip())
        seconds = float(sum(Decimal(n) * _DURATION_UNITS[unit] for n, unit in parts))
    else:
        raise ValueError(
            "expected a duration like 10s, 500ms, 1m30s or 2h, or a number of seconds, "
            f"got {_show(value)}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a duration of at least 0 seconds, got {_show(value)}")
    return seconds


def _none_as(empty: Callable[[], object]) -> BeforeValidator:
    # "env:" with every entry commented out is null in YAML; it means "none", not an error.
    return BeforeValidator(lambda v: empty() if v is None else v)


def _schema(**schema: Any) -> WithJsonSchema:
    # Describes what users write (e.g. "64Mi"), not the parsed type, so editors accept it.
    return WithJsonSchema(schema, mode="validation")


class _Model(BaseModel):
    """Frozen so a validated spec cannot drift; extra fields are typos and are rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PortSpec(_Model):
    """A published port, written like docker's ``-p``: ``[HOST:]CONTAINER[/PROTOCOL]``."""

    host_port: int = Field(default=0, ge=0, le=65535, description="0: an ephemeral host port")
    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: object) -> object:
        if isinstance(data, int) and not isinstance(data, bool):
            data = str(data)
        if isinstance(data, dict | PortSpec):
            return data
        match = _PORT.fullmatch(data.strip()) if isinstance(data, str) else None
        if match is None:
            raise ValueError(
                "expected a port like 8080, 80:8080 or 9000/udp ([HOST:]CONTAINER[/PROTOCOL]), "
                f"got {_show(data)}"
            )
        host, container, protocol = int(match[1] or 0), int(match[2]), (match[3] or "tcp")
        if protocol.lower() not in ("tcp", "udp"):
            raise ValueError(f"expected protocol tcp or udp, got {protocol!r} in {data!r}")
        if not 1 <= container <= 65535:
            raise ValueError(f"expected a container port from 1 to 65535, got {container}")
        if host > 65535:
            raise ValueError(f"expected a host port from 1 to 65535, got {host}")
        return {"host_port": host, "container_port": container, "protocol": protocol.lower()}

    def __str__(self) -> str:
        text = str(self.container_port)
        if self.host_port:
            text = f"{self.host_port}:{text}"
        return text if self.protocol == "tcp" else f"{text}/{self.protocol}"


def _cpu(value: object) -> float:
    cores = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        cores = float(value)
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        cores = float(value)  # compose users write cpus: "0.5"
    if cores is None or not 0 <= cores <= _MAX_CPU:
        raise ValueError(f"expected a number of CPU cores from 0 to 1024, got {_show(value)}")
    return cores


def _memory(value: object) -> int:
    if isinstance(value, float):
        value = str(value)  # 1.5 is no whole number of bytes, but 1e9 is
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a size like 64Mi or 1G, got {_show(value)}")
    size = parse_memory(value)
    if 0 < size < MIN_MEMORY:
        raise ValueError(
            f"Docker needs at least 6Mi ({MIN_MEMORY} bytes) for a memory limit, "
            f"got {_show(value)}; use 0 for no limit"
        )
    if size > _MAX_MEMORY:
        raise ValueError(f"expected a size below 8Ei, got {_show(value)}")
    return size


_NUMBER_SCHEMA = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}


class Resources(_Model):
    """What each replica reserves on its host and is limited to; 0 means none."""

    cpu: Annotated[
        float,
        BeforeValidator(_cpu),
        _schema(
            anyOf=[{"type": "number", "minimum": 0, "maximum": _MAX_CPU}, _NUMBER_SCHEMA],
            description="CPU cores, 0 to 1024; 0 = no reservation or limit",
            examples=[0.25, "0.5"],
        ),
    ] = 0.0
    memory: Annotated[
        int,
        BeforeValidator(_memory),
        _schema(
            anyOf=[
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?\s*([KMGT]i|[kKMGT])?$"},
            ],
            description="bytes, or a size with Ki Mi Gi Ti / k M G T; 0 = no limit, else >= 6Mi",
            examples=["64Mi", "1G", 134217728],
        ),
    ] = 0


class RestartPolicy(_Model):
    """Docker's restart policy: ``no``, ``always``, ``on-failure`` or ``on-failure:N``."""

    kind: Literal["no", "always", "on-failure"] = "always"
    max_retries: int | None = Field(default=None, ge=0, description="only with on-failure")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: object) -> object:
        if isinstance(data, dict | RestartPolicy):
            return data
        if not isinstance(data, str):
            raise ValueError(f"expected no, always, on-failure or on-failure:N, got {_show(data)}")
        kind, colon, retries = data.strip().partition(":")
        if kind not in ("no", "always", "on-failure") or (colon and kind != "on-failure"):
            raise ValueError(f"expected no, always, on-failure or on-failure:N, got {_show(data)}")
        if not colon:
            return {"kind": kind}
        if not retries.isascii() or not retries.isdigit():
            raise ValueError(f"expected on-failure:N with N a whole number >= 0, got {_show(data)}")
        return {"kind": kind, "max_retries": int(retries)}

    @model_validator(mode="after")
    def _retries_only_on_failure(self) -> Self:
        if self.max_retries is not None and self.kind != "on-failure":
            raise ValueError(f"max_retries applies only to on-failure, not {self.kind}")
        return self

    def __str__(self) -> str:
        return self.kind if self.max_retries is None else f"{self.kind}:{self.max_retries}"


class Constraint(_Model):
    """A host label selector: ``k=v`` (equal), ``k!=v`` (absent or different) or ``k`` (exists)."""

    key: str
    op: Literal["=", "!=", "exists"]
    value: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: object) -> object:
        if isinstance(data, dict | Constraint):
            return data
        if not isinstance(data, str):
            raise ValueError(_selector_message(data))
        text = data.strip()
        for op in ("!=", "="):  # "!=" first: "k!=v" also contains "="
            if op in text:
                key, _, value = text.partition(op)
                parsed = {"key": key.strip(), "op": op, "value": value.strip()}
                break
        else:
            parsed = {"key": text, "op": "exists", "value": ""}
        if _selector_problem(**parsed):
            raise ValueError(_selector_message(data))
        return parsed

    @model_validator(mode="after")
    def _check(self) -> Self:
        if _selector_problem(self.key, self.op, self.value):
            raise ValueError(_selector_message(str(self)))
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a host with ``labels`` satisfies this selector."""
        if self.op == "exists":
            return self.key in labels
        if self.op == "=":
            return labels.get(self.key) == self.value
        return labels.get(self.key) != self.value  # like Kubernetes: a missing label matches

    def __str__(self) -> str:
        return self.key if self.op == "exists" else f"{self.key}{self.op}{self.value}"


def _selector_problem(key: str, op: str, value: str) -> bool:
    if _LABEL_KEY.fullmatch(key) is None or len(key) > 253:
        return True
    return (value != "") if op == "exists" else (_SELECTOR_VALUE.fullmatch(value) is None)


def _selector_message(text: object) -> str:
    return (
        "expected a host label selector KEY=VALUE, KEY!=VALUE or KEY (the label exists), "
        f"e.g. role=edge, got {_show(text)}"
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
        or _has_space(value)
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


def _has_space(text: str) -> bool:
    return any(c.isspace() for c in text)


def _replicas(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_REPLICAS:
        raise ValueError(f"expected a whole number from 0 to 10000, got {_show(value)}")
    return value


def _strict_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show(value)}")
    return value


_CAPABILITY = re.compile(r"[A-Z][A-Z_]{1,31}")


def _capability(value: object) -> str:
    if not isinstance(value, str) or not _CAPABILITY.fullmatch(value.upper().removeprefix("CAP_")):
        raise ValueError(f"expected a Linux capability such as NET_ADMIN, got {_show(value)}")
    return value.upper().removeprefix("CAP_")


_VOLUME = re.compile(r"(?:(/[^:\0]*)|([A-Za-z0-9][A-Za-z0-9_.-]*)):(/[^:\0]*)(?::(ro|rw))?")


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
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_REPLICAS:
        raise ValueError(
            "expected a whole number from 1 to 10000 (leave it out for no limit), "
            f"got {_show(value)}"
        )
    return value


def _command(value: object) -> list[str] | None:
    if value is None:
        return None  # the image's CMD
    if isinstance(value, str):
        try:
            value = shlex.split(value)  # compose splits a string command the same way
        except ValueError as exc:
            raise ValueError(f"cannot split the command into words: {exc}") from None
    if not isinstance(value, list) or not value:
        raise ValueError(
            "expected a non-empty list of strings like [httpd, -f] (leave command out "
            f"to run the image's CMD), got {_show(value)}"
        )
    return [_scalar_text(arg, f"a string for command[{i}]") for i, arg in enumerate(value)]


def _env_name(value: object) -> str:
    if not isinstance(value, str) or _ENV_NAME.fullmatch(value) is None:
        raise ValueError(
            "expected an environment variable name (letters, digits and '_', not starting "
            f"with a digit), got {_show(value)}"
        )
    return value


class SecretRef(_Model):
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
    return _scalar_text(value, "a string value or {secret: NAME}")


def _label_key(value: object) -> str:
    if not isinstance(value, str) or _LABEL_KEY.fullmatch(value) is None or len(value) > 253:
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
    text = _scalar_text(value, "a string value")
    if len(text) > 1024:
        raise ValueError(f"expected a label value of at most 1024 characters, got {len(text)}")
    return text


def _grace(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration like 10s or 1m30s, got {_show(value)}")
    seconds = parse_duration(value)
    if seconds > _MAX_GRACE:
        raise ValueError(f"expected a duration from 0 to 1h (3600s), got {_show(value)}")
    return seconds


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
    return _schema(
        type="object",
        propertyNames={"pattern": key_pattern},
        additionalProperties=values,
        description=description,
        examples=[example],
    )


_EnvName = Annotated[str, BeforeValidator(_env_name)]
_EnvValue = Annotated[str | SecretRef, BeforeValidator(_env_value)]
_LabelKey = Annotated[str, BeforeValidator(_label_key)]
_LabelValue = Annotated[str, BeforeValidator(_label_value)]
_PORT_PATTERN = r"^([0-9]{1,5}:)?[0-9]{1,5}(/(tcp|udp))?$"
_PortItem = Annotated[
    PortSpec, _schema(anyOf=[{"type": "string", "pattern": _PORT_PATTERN}, {"type": "integer"}])
]
_SELECTOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*((!=|=)[^\s=!]+)?$"
_ConstraintItem = Annotated[Constraint, _schema(type="string", pattern=_SELECTOR_PATTERN)]


def _seconds(low: float, high: float, what: str) -> Callable[[object], float]:
    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"expected a duration like 2s or 500ms for {what}, got {_show(value)}")
        seconds = parse_duration(value)
        if not low <= seconds <= high:
            raise ValueError(f"expected {what} from {low:g}s to {high:g}s, got {_show(value)}")
        return seconds

    return check


_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"},
    ]
}


def _health_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"expected a container port from 1 to 65535, got {_show(value)}")
    return value


def _health_url(value: object) -> str:
    text = value if isinstance(value, str) else ""
    parsed = urllib.parse.urlsplit(text) if text and text.isprintable() else None
    try:
        port = parsed.port if parsed is not None else None
    except ValueError:
        port = None
    if parsed is None or parsed.scheme != "http" or port is None or _has_space(text):
        raise ValueError(
            "expected an http URL with the container port, like http://:8080/healthz "
            f"(the host part is ignored: the check runs inside the container's network), "
            f"got {_show(value)}"
        )
    return text


class HealthCheck(_Model):
    """How the agent tells a replica is healthy: exactly one of ``http`` (a GET that must
    answer 2xx or 3xx), ``tcp`` (a port that must accept a connection) or ``exec`` (a
    command run in the container that must exit 0). http and tcp checks run from the
    agent, inside the container's network namespace; exec checks run as Docker's
    HEALTHCHECK. Like Docker's: ``retries`` failures in a row after ``start_period``
    make it unhealthy."""

    http: Annotated[
        str | None,
        BeforeValidator(lambda v: None if v is None else _health_url(v)),
        _schema(type="string", pattern="^http://", examples=["http://:8080/healthz"]),
    ] = None
    tcp: Annotated[
        int | None,
        BeforeValidator(lambda v: None if v is None else _health_port(v)),
        _schema(type="integer", minimum=1, maximum=65535, description="a container port"),
    ] = None
    exec: Annotated[
        list[str] | None,
        BeforeValidator(_command),
        _schema(
            anyOf=[{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
            description="a command run in the container; exit 0 means healthy",
            examples=[["pg_isready"]],
        ),
    ] = None
    interval: Annotated[
        float,
        BeforeValidator(_seconds(0.1, _MAX_HEALTH_SECONDS, "interval")),
        _schema(**_DURATION_SCHEMA),
    ] = 2.0
    timeout: Annotated[
        float,
        BeforeValidator(_seconds(0.1, _MAX_HEALTH_SECONDS, "timeout")),
        _schema(**_DURATION_SCHEMA),
    ] = 1.0
    retries: int = Field(default=3, ge=1, le=100)
    start_period: Annotated[
        float,
        BeforeValidator(_seconds(0, _MAX_HEALTH_SECONDS, "start_period")),
        _schema(**_DURATION_SCHEMA),
    ] = 0.0

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of http, tcp or exec, got "
                + (" and ".join(given) if given else "none")
            )
        return self

    @property
    def kind(self) -> str:
        return "http" if self.http is not None else "tcp" if self.tcp is not None else "exec"

    def http_target(self) -> tuple[int, str]:
        """The container port and the path (with its query) an http check asks for."""
        assert self.http is not None
        parsed = urllib.parse.urlsplit(self.http)
        assert parsed.port is not None
        path = parsed.path or "/"
        return parsed.port, path + (f"?{parsed.query}" if parsed.query else "")


_COUNT_OR_PERCENT = re.compile(r"([0-9]{1,5})%")


def _count_or_percent(value: object) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_REPLICAS:
        return value
    if isinstance(value, str):
        match = _COUNT_OR_PERCENT.fullmatch(value.strip())
        if match and int(match[1]) <= 100:
            return f"{int(match[1])}%"
        if value.strip().isdigit():
            return _count_or_percent(int(value.strip()))
    raise ValueError(f"expected a count like 1 or a percentage like 25%, got {_show(value)}")


def resolve_count(value: int | str, replicas: int, *, round_up: bool) -> int:
    """A count, or a percentage of ``replicas`` rounded up (surge) or down (unavailable),
    as Kubernetes rounds them."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    whole, rest = divmod(percent * replicas, 100)
    return whole + (1 if round_up and rest else 0)


_CountOrPercent = Annotated[
    int | str,
    BeforeValidator(_count_or_percent),
    _schema(
        anyOf=[
            {"type": "integer", "minimum": 0, "maximum": _MAX_REPLICAS},
            {"type": "string", "pattern": "^[0-9]{1,3}%$"},
        ]
    ),
]


class UpdateStrategy(_Model):
    """How a new revision replaces the old one (Kubernetes' words, Swarm's ``order`` and
    Nomad's auto-revert). Never more than ``replicas + max_surge`` replicas, never fewer
    than ``replicas - max_unavailable`` available ones; a replica is available once it
    has been healthy (or running, without a health check) for ``min_ready``."""

    max_surge: _CountOrPercent = "25%"
    max_unavailable: _CountOrPercent = 0
    min_ready: Annotated[
        float, BeforeValidator(_seconds(0, _MAX_DEADLINE, "min_ready")), _schema(**_DURATION_SCHEMA)
    ] = 0.0
    progress_deadline: Annotated[
        float,
        BeforeValidator(_seconds(1, _MAX_DEADLINE, "progress_deadline")),
        _schema(**_DURATION_SCHEMA),
    ] = 300.0
    auto_rollback: Annotated[bool, BeforeValidator(_strict_bool)] = True
    order: Literal["start-first", "stop-first"] = "start-first"

    @model_validator(mode="after")
    def _can_progress(self) -> Self:
        if self.order == "stop-first" and self.max_unavailable in (0, "0%"):
            raise ValueError(
                "order stop-first stops a replica before its replacement runs, so it needs "
                "max_unavailable of at least 1 (or use order start-first)"
            )
        if self.max_surge in (0, "0%") and self.max_unavailable in (0, "0%"):
            raise ValueError(
                "max_surge and max_unavailable cannot both be 0: a rollout could never "
                "replace a replica"
            )
        return self

    def surge(self, replicas: int) -> int:
        """Extra replicas allowed during a rollout (none with stop-first)."""
        if self.order == "stop-first":
            return 0
        return resolve_count(self.max_surge, replicas, round_up=True)

    def unavailable(self, replicas: int) -> int:
        """Replicas that may be unavailable during a rollout; at least one when the surge
        rounds down to none, so a rollout can always move."""
        allowed = resolve_count(self.max_unavailable, replicas, round_up=False)
        if allowed == 0 and self.surge(replicas) == 0:
            return 1
        return min(allowed, replicas)


_JOB_FIELDS = ("completions", "parallelism", "backoff_limit", "ttl_after_finished")


def _job_count(low: int, what: str) -> Callable[[object], int | None]:
    def check(value: object) -> int | None:
        if value is None:
            return None
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not low <= value <= _MAX_REPLICAS
        ):
            raise ValueError(f"expected {what} from {low} to {_MAX_REPLICAS}, got {_show(value)}")
        return value

    return check


class AppSpec(_Model):
    """One app: the container template its replicas run, how many, and where they may run.

    ``mode`` says how many: ``replicated`` (``replicas`` of them), ``global`` (one on
    every ready host that matches ``constraints``) or ``job`` (``completions`` runs to
    exit 0, ``parallelism`` at a time)."""

    name: Annotated[
        str,
        BeforeValidator(_name),
        _schema(
            type="string",
            pattern=DNS_LABEL_SCHEMA,
            description=f"the app's name, {DNS_LABEL_TEXT}",
            examples=["web"],
        ),
    ]
    image: Annotated[
        str,
        BeforeValidator(_image),
        _schema(
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
        _schema(type="integer", minimum=0, maximum=_MAX_REPLICAS, description="how many to run"),
    ] = 1
    mode: Annotated[
        Literal["replicated", "global", "job"],
        _schema(
            type="string",
            enum=["replicated", "global", "job"],
            description="replicated: `replicas` of them; global: one on every matching host; "
            "job: run to completion",
        ),
    ] = "replicated"
    command: Annotated[
        list[str] | None,
        BeforeValidator(_command),
        _schema(
            anyOf=[{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
            description="replaces the image's CMD; a string is split into words like a shell",
            examples=[["httpd", "-f", "-p", "8080"]],
        ),
    ] = None
    env: Annotated[
        dict[_EnvName, _EnvValue],
        _none_as(dict),
        _string_map(
            "^[A-Za-z_][A-Za-z0-9_]*$",
            "environment variables; numbers and true/false become their text; "
            "{secret: NAME} takes a secret's value",
            {"GREETING": "hello"},
        ),
    ] = Field(default_factory=dict)
    ports: Annotated[
        list[_PortItem],
        _none_as(list),
        Field(
            description="published ports, [HOST:]CONTAINER[/tcp|udp]; no HOST = ephemeral",
            examples=[["8080", "9090:9000/udp"]],
        ),
    ] = Field(default_factory=list)
    resources: Annotated[
        Resources,
        _none_as(dict),
        Field(description="CPU and memory per replica", examples=[{"cpu": 0.25, "memory": "64Mi"}]),
    ] = Resources()
    restart: Annotated[
        RestartPolicy,
        _schema(
            type="string",
            pattern="^(no|always|on-failure(:[0-9]+)?)$",
            description="no, always, on-failure or on-failure:N",
            examples=["on-failure:3"],
        ),
        Field(json_schema_extra={"default": "always"}),
    ] = RestartPolicy()
    labels: Annotated[
        dict[_LabelKey, _LabelValue],
        _none_as(dict),
        _string_map(
            r"^(?!fleet\.)[A-Za-z0-9][A-Za-z0-9._/-]*$",
            "labels put on the containers; keys starting with fleet. are reserved",
            {"team": "web"},
        ),
    ] = Field(default_factory=dict)
    constraints: Annotated[
        list[_ConstraintItem],
        _none_as(list),
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
        _schema(
            type="string",
            enum=["binpack", "spread"],
            description="binpack: fill the hosts in use first (the default); "
            "spread: the emptiest host first",
        ),
    ] = "binpack"
    max_per_host: Annotated[
        int | None,
        BeforeValidator(_max_per_host),
        _schema(
            anyOf=[{"type": "integer", "minimum": 1, "maximum": _MAX_REPLICAS}, {"type": "null"}],
            description="at most this many replicas on one host; no limit when left out",
            examples=[1],
        ),
    ] = None
    stop_grace_period: Annotated[
        float,
        BeforeValidator(_grace),
        _schema(
            anyOf=[
                {"type": "number", "minimum": 0, "maximum": _MAX_GRACE},
                {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"},
            ],
            description="time between SIGTERM and SIGKILL, 0 to 1h",
            examples=["10s", "1m30s"],
        ),
    ] = 10.0
    shutdown_delay: Annotated[
        float,
        BeforeValidator(_grace),
        _schema(
            anyOf=[
                {"type": "number", "minimum": 0, "maximum": _MAX_GRACE},
                {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"},
            ],
            description="how long a replica that leaves `fleet endpoints` keeps serving "
            "before it is stopped, so load balancers stop sending to it first (as Nomad's "
            "shutdown_delay)",
            examples=["2s"],
        ),
    ] = 0.0
    # Privileges: all refused unless the cluster policy (`fleet policy set`) and the
    # host's agent (`fleet agent --allow ...`) both allow them.
    privileged: Annotated[
        bool, BeforeValidator(_strict_bool), Field(description="run privileged (policy)")
    ] = False
    host_network: Annotated[
        bool, BeforeValidator(_strict_bool), Field(description="share the host's network (policy)")
    ] = False
    host_pid: Annotated[
        bool, BeforeValidator(_strict_bool), Field(description="share the host's PIDs (policy)")
    ] = False
    cap_add: Annotated[
        list[Annotated[str, BeforeValidator(_capability)]],
        _none_as(list),
        Field(description="Linux capabilities to add, e.g. NET_ADMIN (policy)"),
    ] = Field(default_factory=list)
    volumes: Annotated[
        list[Annotated[str, BeforeValidator(_volume)]],
        _none_as(list),
        Field(
            description="like docker -v: NAME:/path (a named volume) or /host/path:/path[:ro] "
            "(a bind mount: policy; the host path absolute and normal, without symlinks)",
            examples=[["data:/var/lib/app", "/var/log:/host-logs:ro"]],
        ),
    ] = Field(default_factory=list)

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
        BeforeValidator(lambda v: None if v is None else _count_or_percent(v)),
        _schema(
            anyOf=[
                {"type": "integer", "minimum": 0, "maximum": _MAX_REPLICAS},
                {"type": "string", "pattern": "^[0-9]{1,3}%$"},
                {"type": "null"},
            ],
            description="the disruption budget of drains: replicas that stay available "
            "while hosts are emptied (default: replicas - update.max_unavailable)",
            examples=[5, "80%"],
        ),
    ] = None
    completions: Annotated[
        int | None,
        BeforeValidator(_job_count(1, "completions")),
        Field(description="job: successful runs needed (default 1)"),
    ] = None
    parallelism: Annotated[
        int | None,
        BeforeValidator(_job_count(1, "parallelism")),
        Field(description="job: runs at a time (default 1)"),
    ] = None
    backoff_limit: Annotated[
        int | None,
        BeforeValidator(_job_count(0, "backoff_limit")),
        Field(description="job: failures in total before the job fails (default 6)"),
    ] = None
    ttl_after_finished: Annotated[
        float | None,
        BeforeValidator(
            lambda v: None if v is None else _seconds(0, 30 * 86400, "ttl_after_finished")(v)
        ),
        _schema(anyOf=[*_DURATION_SCHEMA["anyOf"], {"type": "null"}]),
        Field(description="job: finished containers are kept this long for their logs (1h)"),
    ] = None
    update: Annotated[
        UpdateStrategy,
        _none_as(dict),
        Field(
            description="how a new revision rolls out",
            examples=[{"max_surge": 1, "max_unavailable": 0, "min_ready": "3s"}],
        ),
    ] = UpdateStrategy()

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

    def bind_mounts(self) -> list[str]:
        """The host paths this app mounts."""
        return [v.split(":", 1)[0] for v in self.volumes if v.startswith("/")]

    @model_validator(mode="after")
    def _ports_unique(self) -> Self:
        # Raising a ValidationError keeps the offending entry's own location ("ports[1]").
        errors: list[InitErrorDetails] = []
        hosts: dict[tuple[int, str], int] = {}
        containers: dict[tuple[int, str], int] = {}
        for i, port in enumerate(self.ports):
            host = (port.host_port, port.protocol)
            container = (port.container_port, port.protocol)
            if port.host_port and host in hosts:
                message = f"host port {port.host_port}/{port.protocol} is already published"
                earlier = hosts[host]
            elif container in containers:
                message = f"container port {port.container_port}/{port.protocol} is already mapped"
                earlier = containers[container]
            else:
                hosts.setdefault(host, i)
                containers[container] = i
                continue
            message += f" by ports[{earlier}]"
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("duplicate_port", message),
                    loc=("ports", i),
                    input=str(port),
                )
            )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

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
        placement = {"name", "replicas", "constraints", "placement", "max_per_host", "update"}
        placement |= {"min_available", "mode", *_JOB_FIELDS}
        return self.model_dump(mode="json", exclude=placement)

    def secret_names(self) -> set[str]:
        """The secrets this app's env refers to."""
        return {v.secret for v in self.env.values() if isinstance(v, SecretRef)}

    def template_hash(self) -> str:
        """A stable short hash of ``template()``: containers with another hash are outdated."""
        canonical = json.dumps(self.template(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]
