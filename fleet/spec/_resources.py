"""What each replica reserves on its host and is limited to: CPU cores and memory."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator

from fleet.spec._fields import Model, schema
from fleet.spec._quote import show as _show
from fleet.spec._units import NUMBER, parse_memory

__all__ = ["MIN_MEMORY", "Resources"]

MIN_MEMORY = 6 << 20  # dockerd refuses memory limits below 6 MiB
_MAX_MEMORY = (1 << 63) - 1  # memory travels as int64 in the protobuf messages
_MAX_CPU = 1024.0
_NUMBER_SCHEMA = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}


def _cpu(value: object) -> float:
    cores = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        cores = float(value)
    elif isinstance(value, str) and NUMBER.fullmatch(value.strip()):
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


class Resources(Model):
    """What each replica reserves on its host and is limited to; 0 means none."""

    cpu: Annotated[
        float,
        BeforeValidator(_cpu),
        schema(
            anyOf=[{"type": "number", "minimum": 0, "maximum": _MAX_CPU}, _NUMBER_SCHEMA],
            description="CPU cores, 0 to 1024; 0 = no reservation or limit",
            examples=[0.25, "0.5"],
        ),
    ] = 0.0
    memory: Annotated[
        int,
        BeforeValidator(_memory),
        schema(
            anyOf=[
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?\s*([KMGT]i|[kKMGT])?$"},
            ],
            description="bytes, or a size with Ki Mi Gi Ti / k M G T; 0 = no limit, else >= 6Mi",
            examples=["64Mi", "1G", 134217728],
        ),
    ] = 0
