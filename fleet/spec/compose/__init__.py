"""Compose files as fleet apps: ``convert`` maps each service of a compose file onto one
app document (``fleet convert``, ``fleet apply -f compose.yaml``), reports every key
fleet cannot honour at its line, and names the secrets to store.

- ``_convert``: the whole file (top-level volumes, networks, secrets; apply order).
- ``_service``: one service's container keys; ``_deploy``: its count, restarts and
  rollouts; ``_base``: what they share (the project, the app, the report helpers).
- ``_interpolate``: ``${VAR:-default}`` and the ``.env`` format.
- ``_values``: compose's value shapes (sizes, lists that may be mappings, names).
- ``_report``: findings at their compose key and line.
"""

from __future__ import annotations

from fleet.spec.compose._convert import (
    ComposeSecret,
    Conversion,
    compose_environ,
    convert,
    is_compose,
)
from fleet.spec.compose._interpolate import InterpolationError, parse_env_file

__all__ = [
    "ComposeSecret",
    "Conversion",
    "InterpolationError",
    "compose_environ",
    "convert",
    "is_compose",
    "parse_env_file",
]
