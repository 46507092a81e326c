"""How a new revision rolls out (the update strategy), and its arithmetic: a count or a
percentage of replicas resolved to the surge and the unavailable replicas a rollout may
have, rounded as Kubernetes rounds them."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, model_validator

from fleet.spec._fields import MAX_REPLICAS, Model, schema, strict_bool
from fleet.spec._quote import show as _show
from fleet.spec._units import DURATION_SCHEMA, seconds

__all__ = [
    "COUNT_OR_PERCENT_SCHEMA",
    "CountOrPercent",
    "UpdateStrategy",
    "count_or_percent",
    "resolve_count",
]

_MAX_DEADLINE = 24 * 3600.0
_COUNT_OR_PERCENT = re.compile(r"([0-9]{1,5})%")
# What a count-or-percentage field accepts, for the JSON schema.
COUNT_OR_PERCENT_SCHEMA: list[dict[str, Any]] = [
    {"type": "integer", "minimum": 0, "maximum": MAX_REPLICAS},
    {"type": "string", "pattern": "^[0-9]{1,3}%$"},
]


def count_or_percent(value: object) -> int | str:
    """A count of replicas (0 to 10000), or a percentage of them written like "25%"."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REPLICAS:
        return value
    if isinstance(value, str):
        match = _COUNT_OR_PERCENT.fullmatch(value.strip())
        if match and int(match[1]) <= 100:
            return f"{int(match[1])}%"
        if value.strip().isdigit():
            return count_or_percent(int(value.strip()))
    raise ValueError(f"expected a count like 1 or a percentage like 25%, got {_show(value)}")


def resolve_count(value: int | str, replicas: int, *, round_up: bool) -> int:
    """A count, or a percentage of ``replicas`` rounded up (surge) or down (unavailable),
    as Kubernetes rounds them."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    whole, rest = divmod(percent * replicas, 100)
    return whole + (1 if round_up and rest else 0)


CountOrPercent = Annotated[
    int | str, BeforeValidator(count_or_percent), schema(anyOf=COUNT_OR_PERCENT_SCHEMA)
]


class UpdateStrategy(Model):
    """How a new revision replaces the old one (Kubernetes' words, Swarm's ``order`` and
    Nomad's auto-revert). Never more than ``replicas + max_surge`` replicas, never fewer
    than ``replicas - max_unavailable`` available ones; a replica is available once it
    has been healthy (or running, without a health check) for ``min_ready``."""

    max_surge: CountOrPercent = "25%"
    max_unavailable: CountOrPercent = 0
    min_ready: Annotated[
        float, BeforeValidator(seconds(0, _MAX_DEADLINE)), schema(**DURATION_SCHEMA)
    ] = 0.0
    progress_deadline: Annotated[
        float, BeforeValidator(seconds(1, _MAX_DEADLINE)), schema(**DURATION_SCHEMA)
    ] = 300.0
    auto_rollback: Annotated[bool, BeforeValidator(strict_bool)] = True
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
