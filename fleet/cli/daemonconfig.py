"""Where the options of ``fleet server`` and ``fleet agent`` come from besides the
command line: a ``FLEET_<OPTION>`` variable each, and one TOML file (``--config PATH``
or ``FLEET_CONFIG``) whose keys are the option names (``tls-ca`` or ``tls_ca``).

A flag wins over its variable, the variable over the file, the file over the default:
click's own order of sources (the command line, ``param.envvar``, ``ctx.default_map``,
the default), with the file read into ``ctx.default_map`` by the eager ``--config``
option before any other option is read. ``DaemonCommand`` gives each option its
variable (shown in ``--help``) and names the file and key when a value from it is
refused.

In the file, lists are TOML arrays (``label = ["zone=a"]``), booleans TOML booleans,
numbers TOML numbers; ``etcd`` and ``server`` take an array of endpoints as well as
one comma-separated string.
"""

from __future__ import annotations

import difflib
import inspect
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "ConfigOpt",
    "DaemonCommand",
    "Setting",
    "env_name",
    "read_config",
]

CONFIG_ENV = "FLEET_CONFIG"
_META_KEY = "fleet.config"  # ctx.meta: the file the defaults came from

# Options whose value is a comma-separated list of endpoints: a TOML array is joined.
COMMA_LISTS = frozenset({"etcd", "server"})

_EXPECTED = {
    bool: "a boolean (true or false)",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array of strings",
}


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file (and the key)."""


def env_name(option: str) -> str:
    """The variable of an option: ``--tls-ca`` -> ``FLEET_TLS_CA``."""
    return "FLEET_" + option.lstrip("-").upper().replace("-", "_")


@dataclass(frozen=True)
class Setting:
    """One option as a config file key: ``key`` (``tls-ca``), the parameter it sets
    (``tls_ca``) and the Python type its value has (bool, int, float, str or list)."""

    key: str
    param: str
    kind: type


def _kind(hint: Any) -> type:
    """The plain type an option's annotation stands for (``Path | None`` -> str)."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        return list
    if hint in (bool, int, float):
        return typing.cast(type, hint)
    if isinstance(hint, type) and issubclass(hint, (str, Path, Enum)):
        return str
    raise TypeError(f"an option of type {hint!r} cannot come from a config file")


def _checked(setting: Setting, value: object) -> object:
    """``value`` if it is of the setting's kind (an int passes for a float, an array of
    endpoints for a comma-separated string), else ValueError naming the kind."""
    kind = setting.kind
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind is list and strings:
        return value
    if kind is str and setting.key in COMMA_LISTS and strings:
        return ",".join(typing.cast(list[str], value))
    expected = _EXPECTED[kind]
    if kind is str and setting.key in COMMA_LISTS:
        expected += " or an array of strings"
    got = type(value).__name__
    raise ValueError(f"must be {expected}, not {_TOML_NAMES.get(got, got)} {value!r}")


_TOML_NAMES = {
    "str": "the string",
    "int": "the integer",
    "float": "the number",
    "bool": "the boolean",
    "list": "the array",
    "dict": "the table",
}


def read_config(path: Path, settings: Mapping[str, Setting]) -> dict[str, object]:
    """The parameters ``path`` sets, by parameter name, each value checked against its
    setting (``settings`` by key); ConfigError naming the file, and the key, if not."""
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    values: dict[str, object] = {}
    seen: dict[str, str] = {}
    for raw_key, value in document.items():
        key = raw_key.replace("_", "-")
        setting = settings.get(key)
        if setting is None:
            raise ConfigError(f"{path}: unknown key {raw_key!r}{_suggest(key, settings)}")
        if key in seen:
            raise ConfigError(f"{path}: {seen[key]!r} and {raw_key!r} are the same option")
        seen[key] = raw_key
        try:
            values[setting.param] = _checked(setting, value)
        except ValueError as error:
            raise ConfigError(f"{path}: {raw_key!r} {error}") from None
    return values


def _suggest(key: str, settings: Mapping[str, Setting]) -> str:
    close = difflib.get_close_matches(key, list(settings), n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "; the keys are the options of --help without their dashes"


def _load_config(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """The eager ``--config`` option: read the file into the defaults of the options
    still to be read (a flag or a variable still wins over it)."""
    if value is None or ctx.resilient_parsing:
        return value
    command = ctx.command
    if not isinstance(command, DaemonCommand):
        raise typer.BadParameter("--config is for fleet server and fleet agent")
    try:
        found = read_config(value, command.settings)
    except ConfigError as error:
        source = ctx.get_parameter_source(param.name) if param.name else None
        named = CONFIG_ENV if source is not None and source.name == "ENVIRONMENT" else "--config"
        raise typer.BadParameter(str(error), param_hint=named) from None
    ctx.default_map = {**(ctx.default_map or {}), **found}
    ctx.meta[_META_KEY] = value
    return value


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar=CONFIG_ENV,
        show_envvar=True,
        is_eager=True,
        callback=_load_config,
        help='A TOML file of options (keys: the option names, e.g. tls-ca = "/etc/fleet/'
        'pki/ca.crt"). A flag wins over its FLEET_* variable, which wins over this file.',
    ),
]


class DaemonCommand(TyperCommand):
    """A command whose every option can also come from ``FLEET_<OPTION>`` and from
    the ``--config`` file (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        function = inspect.unwrap(self.callback) if self.callback else None
        hints = typing.get_type_hints(function, include_extras=True) if function else {}
        self.settings: dict[str, Setting] = {}
        for param in self.params:
            longs = [o for o in param.opts if o.startswith("--")]
            if not longs or param.name is None or "--config" in longs:
                continue
            option = longs[0]
            if param.envvar is None:
                param.envvar = env_name(option)
            setattr(param, "show_envvar", True)  # noqa: B010 (options only, not arguments)
            key = option[2:]
            self.settings[key] = Setting(key, param.name, _kind(hints[param.name]))

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        try:
            return super().parse_args(ctx, args)
        except typer.BadParameter as error:
            # A value from the file is refused: say which file and key, not which flag.
            name = error.param.name if error.param is not None else None
            source = ctx.get_parameter_source(name) if name else None
            path = ctx.meta.get(_META_KEY)
            if path is not None and source is not None and source.name == "DEFAULT_MAP":
                key = next((s.key for s in self.settings.values() if s.param == name), "")
                error.param_hint = f"{key!r} in {path}"
            raise
