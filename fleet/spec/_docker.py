"""The container options ``docker run`` users set besides the basics, in compose's
spellings and shapes (a compose file's service maps onto them): ``entrypoint``, ``user``,
``working_dir``, ``hostname``, ``read_only``, ``tmpfs``, ``stop_signal``, ``init``,
``ulimits``, ``dns``, ``dns_search``, ``extra_hosts``, ``sysctls``, ``shm_size``,
``cap_drop``, ``devices`` and ``logging``. Each is validated here, with a message that
says what to write instead; ``AppSpec`` declares them (``DOCKER_FIELDS``).

Left out (at its empty default) a field is not in a dumped spec nor in the container
template, so an app that does not use it hashes as it did before it existed: upgrading
fleet rolls no container."""

from __future__ import annotations

import difflib
import ipaddress
import re
import signal
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from fleet._names import DNS_LABEL_TEXT, is_dns_label
from fleet.hostpaths import form_problem
from fleet.spec._fields import Model, has_space, none_as, scalar_text, schema
from fleet.spec._quote import show as _show
from fleet.spec._units import parse_memory

__all__ = [
    "DEFAULT_LOGGING",
    "DOCKER_FIELDS",
    "NAMESPACED_SYSCTLS",
    "Logging",
    "Ulimit",
    "device_host_path",
    "is_namespaced_sysctl",
]

# The fields of this module, in the order AppSpec declares them.
DOCKER_FIELDS = (
    "entrypoint",
    "user",
    "working_dir",
    "hostname",
    "read_only",
    "tmpfs",
    "stop_signal",
    "init",
    "ulimits",
    "dns",
    "dns_search",
    "extra_hosts",
    "sysctls",
    "shm_size",
    "cap_drop",
    "devices",
    "logging",
    "networks",
)

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TMPFS_FLAGS = {"ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev"}
_TMPFS_VALUES = {
    "size": re.compile(r"[0-9]+[kKmMgG%]?"),
    "mode": re.compile(r"[0-7]{3,4}"),
    "uid": re.compile(r"[0-9]+"),
    "gid": re.compile(r"[0-9]+"),
    "nr_inodes": re.compile(r"[0-9]+[kKmMgG]?"),
}
# Docker's ulimit names (`docker run --ulimit`).
_ULIMITS = [
    *("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile"),
    *("nproc", "rss", "rtprio", "rttime", "sigpending", "stack"),
]
# The sysctls that are per container (a kernel namespace of their own); runc refuses any
# other, whatever a policy says, since setting it would change the host's.
NAMESPACED_SYSCTLS = "net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, kernel.domainname"
_SYSCTL = re.compile(r"[a-z0-9_]+(?:[./][A-Za-z0-9_-]+)+")
_LOG_DRIVER = re.compile(r"[a-z0-9][a-z0-9._/-]*(?::[A-Za-z0-9._-]+)?")
_LOG_SIZE = re.compile(r"[0-9]+(?:\.[0-9]+)? ?[kKmMgGtT]?[iI]?[bB]?")
# What Docker's own file drivers take; an unknown option is a typo Docker would refuse.
_FILE_DRIVER_OPTIONS = {
    "json-file": {"max-size", "max-file", "compress", "labels", "labels-regex", "env"}
    | {"env-regex", "tag"},
    "local": {"max-size", "max-file", "compress"},
}
_PERMISSIONS = re.compile(r"r?w?m?")


def is_namespaced_sysctl(name: str) -> bool:
    """Whether ``name`` is a sysctl of the container's own kernel namespaces."""
    return name.startswith(("net.", "kernel.shm", "kernel.msg", "fs.mqueue.")) or name in (
        "kernel.sem",
        "kernel.domainname",
    )


def _one_or_list(value: object) -> object:
    """Compose's shorthand: a single string for a list of one."""
    return [value] if isinstance(value, str) else value


def _absolute(value: object, what: str) -> str:
    text = scalar_text(value, f"{what} (an absolute path like /app)")
    if (text and not text.startswith("/")) or has_space(text) or ":" in text:
        raise ValueError(
            f"expected {what} as an absolute path like /app (no spaces or ':'), got {_show(value)}"
        )
    return text


def _user(value: object) -> str:
    text = scalar_text(value, "a user")
    if text and not _USER.fullmatch(text):
        raise ValueError(
            "expected USER or USER:GROUP, by name or number (as docker run --user), "
            f"like 1000:1000 or nobody, got {_show(value)}"
        )
    return text


def _hostname(value: object) -> str:
    text = scalar_text(value, "a host name")
    parts = text.split(".")
    if text and (len(text) > 63 or not all(_HOST_LABEL.fullmatch(p) for p in parts)):
        raise ValueError(
            "expected a host name of at most 63 characters: letters, digits and '-' in "
            f"dot-separated parts, like web-1 or db.internal, got {_show(value)}"
        )
    return text


def _tmpfs(value: object) -> str:
    text = scalar_text(value, "a tmpfs mount like /run:size=64m")
    path, _, options = text.partition(":")
    problem = form_problem(path)
    if problem:
        raise ValueError(f"tmpfs mount point {_show(path)} {problem} (like /run:size=64m)")
    for option in filter(None, options.split(",")):
        key, equals, setting = option.partition("=")
        pattern = _TMPFS_VALUES.get(key)
        if (not equals and key in _TMPFS_FLAGS) or (
            equals and pattern and pattern.fullmatch(setting)
        ):
            continue
        raise ValueError(
            f"tmpfs option {_show(option)} of {path}: expected size=N[k|m|g|%], mode=OCTAL, "
            f"uid=N, gid=N, nr_inodes=N or one of {', '.join(sorted(_TMPFS_FLAGS))}, "
            "separated by commas (like /run:size=64m,mode=1777)"
        )
    return text


def _signal_names() -> set[str]:
    names = {s.name for s in signal.Signals if s.name.startswith("SIG") and "_" not in s.name}
    return names | {f"SIGRTMIN+{i}" for i in range(1, 16)} | {f"SIGRTMAX-{i}" for i in range(15)}


_SIGNALS = _signal_names()


def _stop_signal(value: object) -> str:
    text = scalar_text(value, "a signal").strip()
    if not text or (text.isdigit() and 1 <= int(text) <= 64):
        return text
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in _SIGNALS:
        raise ValueError(
            "expected a signal name like SIGTERM, SIGQUIT or SIGINT (or its number, 1 "
            f"to 64), got {_show(value)}"
        )
    return name


class Ulimit(Model):
    """One ulimit: ``nofile: 1024`` (soft and hard the same) or ``{soft: 1024, hard:
    2048}``; -1 is unlimited."""

    soft: int
    hard: int

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, data: object) -> object:
        if isinstance(data, int) and not isinstance(data, bool):
            data = {"soft": data, "hard": data}
        if isinstance(data, dict):
            for key in ("soft", "hard"):
                limit = data.get(key)
                if isinstance(limit, bool) or not isinstance(limit, int) or limit < -1:
                    raise ValueError(
                        f"expected {key} as a whole number (-1 for unlimited), got {_show(limit)}"
                    )
            return data
        if isinstance(data, Ulimit):
            return data
        raise ValueError(
            f"expected a number like 1024 or {{soft: 1024, hard: 2048}}, got {_show(data)}"
        )

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Self:
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise ValueError(
                f"soft ({self.soft}) is above hard ({self.hard}): the soft limit can be at "
                "most the hard one"
            )
        return self


def _ulimit_name(value: object) -> str:
    if not isinstance(value, str) or value not in _ULIMITS:
        raise ValueError(
            f"expected a ulimit name, one of {', '.join(_ULIMITS)}; got {_show(value)}"
        )
    return value


def _address(value: object) -> str:
    text = scalar_text(value, "an IP address")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(
            f"expected a DNS server's IP address like 10.0.0.2, got {_show(value)}"
        ) from None


def _domain(value: object) -> str:
    text = scalar_text(value, "a domain")
    if text != "." and (
        len(text) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in text.rstrip(".").split("."))
    ):
        raise ValueError(f"expected a DNS search domain like example.com, got {_show(value)}")
    return text


def _extra_hosts(value: object) -> object:
    """Compose's two shapes: a list of HOST:IP (or HOST=IP), or a mapping HOST: IP."""
    if isinstance(value, dict):
        return [
            f"{scalar_text(k, 'a host name')}:{scalar_text(v, 'an IP')}" for k, v in value.items()
        ]
    return _one_or_list(value)


def _extra_host(value: object) -> str:
    text = scalar_text(value, "HOST:IP")
    # compose also writes HOST=IP; an IPv6 address has colons of its own.
    host, _, address = text.partition("=") if "=" in text else text.partition(":")
    if address != "host-gateway":
        try:
            address = str(ipaddress.ip_address(address.strip("[]")))
        except ValueError:
            address = ""
    if not address or not all(_HOST_LABEL.fullmatch(p) for p in host.split(".")):
        raise ValueError(
            "expected HOST:IP like db:10.0.0.5 (or HOST:host-gateway for the host's own "
            f"address), got {_show(value)}"
        )
    return f"{host}:{address}"


def _sysctls(value: object) -> object:
    """Compose's two shapes: a mapping NAME: VALUE, or a list of NAME=VALUE."""
    if isinstance(value, list):
        pairs: dict[object, object] = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(
                    f"expected NAME=VALUE like net.core.somaxconn=1024, got {_show(item)}"
                )
            name, _, setting = item.partition("=")
            pairs[name.strip()] = setting.strip()
        return pairs
    return value


def _sysctl_name(value: object) -> str:
    if not isinstance(value, str) or not _SYSCTL.fullmatch(value):
        raise ValueError(f"expected a sysctl name like net.core.somaxconn, got {_show(value)}")
    if not is_namespaced_sysctl(value):
        raise ValueError(
            f"sysctl {value} is not per container: runc sets only the namespaced ones "
            f"({NAMESPACED_SYSCTLS}), since any other would change the whole host; set it "
            "on the hosts (sysctl.d) instead"
        )
    return value


def _shm_size(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a size like 64Mi or 1G, got {_show(value)}")
    size = parse_memory(value)
    if size < 1 << 20:
        raise ValueError(f"expected shm_size of at least 1Mi, got {_show(value)}")
    return size


def device_host_path(device: str) -> str:
    """The host side of a device mapping HOST[:CONTAINER[:PERMISSIONS]]."""
    return device.split(":", 1)[0]


def _device(value: object) -> str:
    text = scalar_text(value, "a device like /dev/fuse")
    parts = text.split(":")
    if isinstance(value, dict) or len(parts) > 3:
        raise ValueError(
            "expected HOST_DEVICE[:CONTAINER_PATH[:PERMISSIONS]] like /dev/fuse or "
            f"/dev/ttyUSB0:/dev/ttyUSB0:rw, got {_show(value)}"
        )
    for path in parts[:2]:
        problem = form_problem(path)
        if problem:
            raise ValueError(f"device path {_show(path)} {problem}")
    if not parts[0].startswith("/dev/"):
        raise ValueError(f"expected a device under /dev, like /dev/fuse, got {_show(parts[0])}")
    if len(parts) == 3 and (not parts[2] or not _PERMISSIONS.fullmatch(parts[2])):
        raise ValueError(
            "expected the permissions as letters of rwm (read, write, mknod), "
            f"got {_show(parts[2])}"
        )
    return text


def _log_driver(value: object) -> str:
    if not isinstance(value, str) or not _LOG_DRIVER.fullmatch(value):
        raise ValueError(
            "expected a Docker log driver such as json-file, local, journald, syslog, "
            f"gelf, fluentd or none, got {_show(value)}"
        )
    return value


class Logging(Model):
    """Where Docker sends the container's output: a log driver and its options, as
    compose writes them (``logging: {driver: local, options: {max-size: 20m}}``)."""

    driver: Annotated[str, BeforeValidator(_log_driver)] = "json-file"
    options: Annotated[
        dict[str, Annotated[str, BeforeValidator(lambda v: scalar_text(v, "an option value"))]],
        none_as(dict),
    ] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _file_options(self) -> Self:
        known = _FILE_DRIVER_OPTIONS.get(self.driver)
        if known is None:
            return self  # other drivers' options are Docker's (and its plugins') to check
        errors = []
        for key, value in self.options.items():
            message = None
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                message = (
                    f"{self.driver} takes no option {_show(key)}{hint}; it takes "
                    f"{', '.join(sorted(known))}"
                )
            elif key == "max-size" and not _LOG_SIZE.fullmatch(value):
                message = f"expected max-size like 10m or 1g, got {_show(value)}"
            elif key == "max-file" and not (value.isdigit() and int(value) >= 1):
                message = f"expected max-file as a whole number >= 1, got {_show(value)}"
            if message:
                # At the option itself ("logging.options.max-size"), so at its line.
                kind = PydanticCustomError("log_option", message.replace("{", "{{"))
                errors.append(InitErrorDetails(type=kind, loc=("options", key), input=value))
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self


# Fleet's log for an app without `logging`: bounded, at most 3 files of 10 MB (30 MB a
# container), and in the format `docker logs` and log shippers read from the host.
DEFAULT_LOGGING = Logging(driver="json-file", options={"max-size": "10m", "max-file": "3"})


def _words_schema(description: str) -> Any:
    forms = [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]
    return schema(anyOf=forms, description=description)


def _list(item: Any, description: str, example: list[str]) -> Any:
    return Annotated[
        list[item],
        BeforeValidator(_one_or_list),
        none_as(list),
        Field(description=description, examples=[example]),
    ]


User = Annotated[
    str,
    BeforeValidator(_user),
    Field(description="run as USER[:GROUP] (name or number); default: the image's"),
]
WorkingDir = Annotated[
    str,
    BeforeValidator(lambda v: _absolute(v, "working_dir")),
    Field(description="the directory the command starts in; default: the image's"),
]
Hostname = Annotated[
    str,
    BeforeValidator(_hostname),
    Field(description="the container's host name; default: Docker's (the container id)"),
]
Tmpfs = _list(
    Annotated[str, BeforeValidator(_tmpfs)],
    "tmpfs mounts, /path[:options] (size=64m, mode=1777, noexec, ...)",
    ["/run:size=64m", "/tmp"],
)
StopSignal = Annotated[
    str,
    BeforeValidator(_stop_signal),
    Field(
        description="the signal that stops the container (SIGKILL follows after "
        "stop_grace_period); default: the image's STOPSIGNAL, else SIGTERM"
    ),
]
Ulimits = Annotated[
    dict[Annotated[str, BeforeValidator(_ulimit_name)], Ulimit],
    none_as(dict),
    Field(
        description="resource limits: NAME: N or NAME: {soft: N, hard: M}; -1 is unlimited",
        examples=[{"nofile": {"soft": 1024, "hard": 2048}, "nproc": 512}],
    ),
]
Dns = _list(Annotated[str, BeforeValidator(_address)], "DNS servers' addresses", ["10.0.0.2"])
DnsSearch = _list(
    Annotated[str, BeforeValidator(_domain)], "DNS search domains", ["svc.example.com"]
)
ExtraHosts = Annotated[
    list[Annotated[str, BeforeValidator(_extra_host)]],
    BeforeValidator(_extra_hosts),
    none_as(list),
    Field(
        description="lines added to /etc/hosts: HOST:IP (or a mapping HOST: IP)",
        examples=[["db:10.0.0.5", "gw:host-gateway"]],
    ),
]
Sysctls = Annotated[
    dict[
        Annotated[str, BeforeValidator(_sysctl_name)],
        Annotated[str, BeforeValidator(lambda v: scalar_text(v, "a sysctl value"))],
    ],
    BeforeValidator(_sysctls),
    none_as(dict),
    Field(
        description=f"namespaced kernel parameters ({NAMESPACED_SYSCTLS}): NAME: VALUE "
        "or a list of NAME=VALUE",
        examples=[{"net.core.somaxconn": 1024}],
    ),
]
ShmSize = Annotated[
    int | None,
    BeforeValidator(_shm_size),
    schema(
        anyOf=[{"type": "integer", "minimum": 1 << 20}, {"type": "string"}, {"type": "null"}],
        description="the size of /dev/shm, like 256Mi; default: Docker's (64Mi)",
        examples=["256Mi"],
    ),
]
Devices = _list(
    Annotated[str, BeforeValidator(_device)],
    "host devices, HOST[:CONTAINER[:rwm]] (policy: fleet policy set --allow-device)",
    ["/dev/fuse"],
)
LoggingField = Annotated[
    Logging | None,
    Field(
        description="the log driver and its options; default: fleet's json-file of at "
        "most 3 files of 10m. fleet logs reads json-file, local and journald",
        examples=[{"driver": "local", "options": {"max-size": "20m"}}],
    ),
]


def _networks(value: object) -> object:
    """Compose's two shapes: a list of names, or a mapping of names to nothing."""
    if isinstance(value, dict):
        for name, settings in value.items():
            if settings not in (None, {}):
                raise ValueError(
                    f"network {_show(name)}: fleet takes no settings for a network (the "
                    "app's name is its alias on it); write networks: [NAME, ...]"
                )
        return list(value)
    return _one_or_list(value)


def _network(value: object) -> str:
    if not isinstance(value, str) or not is_dns_label(value):
        raise ValueError(f"expected a network name that is {DNS_LABEL_TEXT}, got {_show(value)}")
    return value


Networks = Annotated[
    list[Annotated[str, BeforeValidator(_network)]],
    BeforeValidator(_networks),
    none_as(list),
    Field(
        description="user-defined bridge networks fleet makes on each host that runs the "
        "app: apps on one host reach each other by app name; not across hosts",
        examples=[["backend"]],
    ),
]
ENTRYPOINT_SCHEMA = _words_schema("replaces the image's ENTRYPOINT; a string is split into words")
