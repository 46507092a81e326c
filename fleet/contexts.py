"""Contexts: the pools a CLI talks to, by name, as kubeconfig's contexts and `docker
context` keep them. A context is a server list and the credentials for it (a CA and a
client certificate and key, or a bearer token); one of them is current.

They live in one TOML file, ``$FLEET_CLI_CONFIG``, else ``$XDG_CONFIG_HOME/fleet/config.toml``,
else ``~/.config/fleet/config.toml`` (mode 0600: a token may be in it)::

    current = "prod"

    [contexts.prod]
    server = "cp1.example:7400,cp2.example:7400"
    read-server = "cp1.example:7403,cp2.example:7403"   # optional: fleet server --read-listen
    tls-ca = "/home/ann/.config/fleet/prod/ca.crt"
    tls-cert = "/home/ann/.config/fleet/prod/client-admin.crt"
    tls-key = "/home/ann/.config/fleet/prod/client-admin.key"

A command's connection options win over ``FLEET_*`` variables, which win over the
context (``--context NAME`` or ``$FLEET_CONTEXT``, else the current one).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from fleet.errors import InvalidArgument, NotFound

__all__ = ["Context", "Contexts", "config_path"]

_KEYS = {"server": "server", "tls-ca": "tls_ca", "tls-cert": "tls_cert", "tls-key": "tls_key"}
_KEYS["token"] = "token"
_KEYS["read-server"] = "read_server"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def config_path() -> Path:
    if os.environ.get("FLEET_CLI_CONFIG"):
        return Path(os.environ["FLEET_CLI_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fleet" / "config.toml"


@dataclass(frozen=True)
class Context:
    name: str
    server: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    token: str = ""
    read_server: str = ""  # the servers' read ports (--read-listen), for reads only

    def shown(self) -> dict[str, str]:
        """What ``context list`` shows: never the token itself."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["token"] = "(set)" if self.token else ""
        return data


@dataclass
class Contexts:
    """The file's contexts and which is current ("" for none)."""

    path: Path
    current: str
    items: dict[str, Context]

    @classmethod
    def load(cls, path: Path | None = None) -> Contexts:
        where = path or config_path()
        try:
            data = tomllib.loads(where.read_text())
        except FileNotFoundError:
            return cls(where, "", {})
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise InvalidArgument(f"cannot read the fleet config {where}: {error}") from None
        items = {}
        for name, table in (data.get("contexts") or {}).items():
            if not isinstance(table, dict):
                raise InvalidArgument(f"{where}: contexts.{name} must be a table")
            unknown = sorted(set(table) - set(_KEYS))
            if unknown:
                raise InvalidArgument(
                    f"{where}: contexts.{name}: unknown key {unknown[0]!r} (known: "
                    f"{', '.join(_KEYS)})"
                )
            items[name] = Context(name, **{_KEYS[k]: str(v) for k, v in table.items()})
        current = str(data.get("current", ""))
        return cls(where, current, items)

    def save(self) -> None:
        """Write the file whole (0600, replaced atomically)."""
        lines = [f"current = {json.dumps(self.current)}", ""]
        for name in sorted(self.items):
            context = self.items[name]
            lines.append(f"[contexts.{json.dumps(name)}]")
            for key, attribute in _KEYS.items():
                value = getattr(context, attribute)
                if value:
                    lines.append(f"{key} = {json.dumps(value)}")
            lines.append("")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines))
        os.replace(tmp, self.path)

    @staticmethod
    def check_name(name: str) -> None:
        """InvalidArgument unless ``name`` may name a context."""
        if not _NAME.fullmatch(name):
            raise InvalidArgument(
                f"context name {name!r}: use letters, digits, '-', '_' and '.' (at most 63)"
            )

    def put(self, context: Context) -> None:
        self.check_name(context.name)
        self.items[context.name] = context

    def chosen(self, name: str | None) -> Context | None:
        """The context ``name`` names, else $FLEET_CONTEXT's, else the current one; None
        when none is chosen. NotFound for a name the file does not hold."""
        wanted = name or os.environ.get("FLEET_CONTEXT") or self.current
        if not wanted:
            return None
        found = self.items.get(wanted)
        if found is None:
            known = ", ".join(sorted(self.items)) or "none"
            raise NotFound(
                f"no context {wanted!r} in {self.path} (contexts: {known}); add it with "
                "`fleet context add`"
            )
        return found
