"""What records share instead of each holding a copy, and the slotted record.

The control plane holds a replica record and a container report for every replica
(100,000 of each at 100,000 replicas): the values they repeat (an app's name, a host
id, an app's reservations, a memory limit, slot numbers, an empty list) are one object
each (``shared``, ``held``), and those two records are slotted dataclasses
(``SlottedRecord``) instead of pydantic models. The record types are
``fleet.store.records``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self, TypeVar, cast

from pydantic import ConfigDict, TypeAdapter

__all__ = ["SLOTTED", "SlottedRecord", "held", "shared"]

# By type and value: 0, 0.0 and False are equal keys, and a float field must not be
# handed an int (nor a slot number a bool).
_SHARED_VALUES: dict[tuple[type, object], object] = {}
# Distinct values are a few per app (reservations, memory limits) and the slot numbers;
# past this, start over.
_SHARED_VALUES_MAX = 10_000
# The empty list records given no items share (nothing changes a record's list in place).
_NO_ITEMS: list[Any] = []
_R = TypeVar("_R")


def shared(value: _R) -> _R:
    """The instance of ``value`` that records share (``_Record``): a record made with
    it holds the very object one decoded from etcd does, so they compare at once."""
    if len(_SHARED_VALUES) >= _SHARED_VALUES_MAX:
        _SHARED_VALUES.clear()
    return cast(_R, _SHARED_VALUES.setdefault((type(value), value), value))


def held(value: _R) -> _R:
    """What a record holds for a field it shares (``_shared``): a string interned, an
    empty list the one empty list, any other value its shared instance."""
    if type(value) is str:
        return cast(_R, sys.intern(cast(str, value)))
    if type(value) is list:
        return value if value else cast(_R, _NO_ITEMS)
    return value if value is None else shared(value)


class SlottedRecord:
    """A record of which the control plane holds one per container (100,000 at
    100,000 replicas), as a frozen pydantic dataclass with slots instead of a model:
    176 bytes of fields for a report instead of pydantic's instance and its dict (about
    320, with the dict sharing its keys with every other report's). It answers the few model
    methods fleet calls on records (``model_validate_json``, ``model_validate``,
    ``model_dump``, ``model_copy``, ``dump``), and shares the fields named in
    ``_shared`` as ``_Record`` does. Assigning a field raises ``FrozenInstanceError``."""

    __slots__ = ()
    _shared: ClassVar[tuple[str, ...]] = ()
    _adapter: ClassVar[TypeAdapter[Any]]

    def __post_init__(self) -> None:
        for name in self._shared:
            object.__setattr__(self, name, held(getattr(self, name)))

    @classmethod
    def model_construct(cls, **values: Any) -> Self:
        """A record of ``values`` that are already of their fields' types, made without
        validation (as pydantic's ``model_construct``), its shared fields shared: for
        values read off a protobuf message, whose types protobuf guarantees. Working out
        an agent's report of 100 changed containers took 2.50 ms with each record
        validated, 2.05 this way, and a 1,000-host apply makes 300,000 such records. A
        missing or unknown field is an error."""
        plan = _PLANS.get(cls)
        if plan is None:
            plan = _PLANS[cls] = _plan(cls)
        if not values.keys() <= plan.names:
            unknown = ", ".join(sorted(values.keys() - plan.names))
            raise TypeError(f"{cls.__name__} has no field {unknown}")
        record = object.__new__(cls)
        for name, share, default in plan.fields:
            value = values.get(name, default)
            if value is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__} needs {name}")
            object.__setattr__(record, name, held(value) if share else value)
        return record

    @classmethod
    def model_validate_json(cls, data: str | bytes) -> Self:
        return cast(Self, cls._adapter.validate_json(data))

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        return cast(Self, cls._adapter.validate_python(data))

    def model_dump(self, *, mode: Literal["json", "python"] = "python") -> dict[str, Any]:
        return cast(dict[str, Any], self._adapter.dump_python(self, mode=mode))

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self:
        """A copy with ``update``'s fields changed (validated, unlike pydantic's)."""
        return dataclasses.replace(self, **(update or {}))  # type: ignore[type-var]

    def dump(self) -> bytes:
        return self._adapter.dump_json(self)


SLOTTED = ConfigDict(extra="forbid")


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """How ``model_construct`` fills a record: each field's name, whether it is shared,
    and its default (MISSING if it has none), made once for every record (as a decoded
    record's empty list is: nothing changes a record's values in place)."""

    names: frozenset[str]
    fields: tuple[tuple[str, bool, object], ...]


_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    shares = frozenset(cast(type[SlottedRecord], cls)._shared)
    fields = []
    for field in dataclasses.fields(cls):
        default: object = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        if default is not dataclasses.MISSING and field.name in shares:
            default = held(default)
        fields.append((field.name, field.name in shares, default))
    return _Plan(frozenset(name for name, _, _ in fields), tuple(fields))
