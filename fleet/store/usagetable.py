"""A host's containers' live usage as the control plane holds it: ``UsageTable``.

Every agent's status record carries the usage of each of its containers, by
``usage_key`` ("app/slot/revision" -> cpu, memory bytes), rewritten every refresh. Held
as a dict of strings and tuples it cost 214 bytes a container (21 MB at 100,000
replicas, and 400,000 small objects made and dropped every refresh). A table keeps the
keys in one string and the numbers in two arrays: 49 bytes a container. Stored and sent
as it always was: a JSON object of ``[cpu, memory]`` pairs.
"""

from __future__ import annotations

from array import array
from collections.abc import ItemsView, Iterator, Mapping
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = ["UsageTable"]

# Keys are joined with this; a key holding it is refused (usage keys are names and
# numbers).
_SEPARATOR = "\n"


class UsageTable(Mapping[str, tuple[float, int]]):
    """An immutable mapping of usage keys to (cpu, memory bytes), in the order given:
    the keys in one string, the numbers in two arrays. A key is looked up by finding it
    in that string (a host's hundred keys are about 1.5 KB to scan); reading every
    entry is ``items()``, one pass."""

    __slots__ = ("_cpu", "_keys", "_memory")

    def __init__(self, usage: Mapping[str, tuple[float, int]] | None = None) -> None:
        usage = usage or {}
        self._keys = _SEPARATOR.join(usage)
        if self._keys.count(_SEPARATOR) != max(0, len(usage) - 1):
            raise ValueError(f"a usage key holds {_SEPARATOR!r}: expected app/slot/revision")
        cpu, memory = zip(*usage.values(), strict=True) if usage else ((), ())
        try:
            self._cpu, self._memory = array("d", cpu), array("q", memory)
        except OverflowError:
            raise ValueError("a container's memory does not fit in 64 bits") from None

    def _position(self, key: object) -> int:
        if not isinstance(key, str) or not key or _SEPARATOR in key:
            return -1
        keys, at = self._keys, -1
        while (at := keys.find(key, at + 1)) >= 0:
            end = at + len(key)
            if (at == 0 or keys[at - 1] == _SEPARATOR) and (
                end == len(keys) or keys[end] == _SEPARATOR
            ):
                return keys.count(_SEPARATOR, 0, at)
        return -1

    def __getitem__(self, key: str) -> tuple[float, int]:
        position = self._position(key)
        if position < 0:
            raise KeyError(key)
        return self._cpu[position], self._memory[position]

    def __contains__(self, key: object) -> bool:
        return self._position(key) >= 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._key_list())

    def __len__(self) -> int:
        return len(self._cpu)

    def items(self) -> ItemsView[str, tuple[float, int]]:
        return _Items(self)

    def _key_list(self) -> list[str]:
        return self._keys.split(_SEPARATOR) if self._cpu else []

    def _pairs(self) -> Iterator[tuple[str, tuple[float, int]]]:
        return zip(self._key_list(), zip(self._cpu, self._memory, strict=True), strict=True)

    def __repr__(self) -> str:
        return f"UsageTable({self.as_dict()!r})"

    def __copy__(self) -> UsageTable:
        return self  # immutable: a record's default is shared, not copied

    def __deepcopy__(self, memo: dict[int, Any]) -> UsageTable:
        return self

    def as_dict(self) -> dict[str, tuple[float, int]]:
        return dict(self._pairs())

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """A record field of this type: validated as the mapping it stands for (pydantic
        reads the JSON straight into it), then made a table; dumped as that mapping."""
        pairs = handler.generate_schema(dict[str, tuple[float, int]])
        from_pairs = core_schema.no_info_after_validator_function(cls, pairs)
        return core_schema.json_or_python_schema(
            json_schema=from_pairs,
            python_schema=core_schema.no_info_wrap_validator_function(_table_or_pairs, pairs),
            serialization=core_schema.plain_serializer_function_ser_schema(
                cls.as_dict, return_schema=pairs
            ),
        )


class _Items(ItemsView[str, tuple[float, int]]):
    """A table's items read in one pass, not looked up key by key."""

    _mapping: UsageTable

    def __iter__(self) -> Iterator[tuple[str, tuple[float, int]]]:
        return self._mapping._pairs()


def _table_or_pairs(value: Any, pairs: core_schema.ValidatorFunctionWrapHandler) -> UsageTable:
    return value if isinstance(value, UsageTable) else UsageTable(pairs(value))
