"""The live usage table a host's status record holds: a mapping like the dict it
replaced, stored as the same JSON, refusing what the dict's field refused."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fleet.store.records import ResourceAmounts, StatusRecord, UsageTable, usage_key


def _status(usage: object) -> StatusRecord:
    return StatusRecord.model_validate(
        {
            "host_id": "h1",
            "reported_at": "2026-12-06T20:00:00.000Z",
            "applied_version": 1,
            "usage": ResourceAmounts(cpu=1, memory=1),
            "container_usage": usage,
        }
    )


def test_a_key_is_found_whole_not_inside_another() -> None:
    table = UsageTable(
        {"web/1/10": (0.5, 10), "aweb/1/1": (0.25, 20), "web/1/1": (1.0, 30), "b/1/1x": (2.0, 5)}
    )
    assert table["web/1/1"] == (1.0, 30)
    assert table["web/1/10"] == (0.5, 10)
    assert table["aweb/1/1"] == (0.25, 20)
    for absent in ("web/1/", "eb/1/1", "b/1/1", "web/1/1\nb", "", 7):
        assert absent not in table
    assert table.get("b/1/1", (0.0, 0)) == (0.0, 0)
    with pytest.raises(KeyError):
        table["web/2/1"]


def test_it_is_stored_as_the_json_object_it_stands_for() -> None:
    usage = {"web/0/1": (0.25, 100 << 20), "api/2/3": (1.0, 50 << 20)}
    record = _status(usage)
    assert isinstance(record.container_usage, UsageTable)
    stored = json.loads(record.dump())["container_usage"]
    assert stored == {"web/0/1": [0.25, 100 << 20], "api/2/3": [1.0, 50 << 20]}
    again = StatusRecord.model_validate_json(record.dump())
    assert again == record and again.container_usage == usage
    assert list(again.container_usage.items()) == list(usage.items())  # in the order given
    assert record.model_dump()["container_usage"] == usage


def test_an_empty_table_is_shared_and_copies_are_the_table() -> None:
    first, second = _status({}), _status({})
    assert len(first.container_usage) == 0 and first.dump().endswith(b'"container_usage":{}}')
    table = UsageTable({"web/0/1": (0.5, 1)})
    assert copy.copy(table) is table and copy.deepcopy(table) is table
    assert pickle.loads(pickle.dumps(table)) == table
    assert second.model_copy(update={"images": ["x"]}).container_usage is second.container_usage


@pytest.mark.parametrize(
    ("usage", "says"),
    [
        ([["web/0/1", [1, 2]]], "dictionary"),
        ({"web/0/1": [1]}, "container_usage.web/0/1"),
        ({"web/0/1": ["x", 1]}, "valid number"),
        ({"web/0/1": [0.5, 1.5]}, "valid integer"),
        ({"web\n0/1": [0.5, 1]}, "expected app/slot/revision"),
        ({"web/0/1": [0.5, 2**64]}, "does not fit in 64 bits"),
    ],
)
def test_a_malformed_usage_is_refused_saying_where(usage: object, says: str) -> None:
    with pytest.raises(ValidationError) as refused:
        _status(usage)
    assert says in str(refused.value)


_keys = st.builds(
    usage_key,
    st.text("abw-", min_size=1, max_size=4),
    st.integers(0, 120),
    st.integers(0, 12),
)


@given(
    st.dictionaries(_keys, st.tuples(st.floats(0, 64), st.integers(0, 2**40)), max_size=40),
    st.lists(_keys, max_size=10),
)
def test_a_table_answers_as_its_dict(usage: dict[str, tuple[float, int]], asked: list[str]) -> None:
    table = UsageTable(usage)
    assert len(table) == len(usage) and list(table) == list(usage) and table == usage
    for key in [*usage, *asked]:
        assert table.get(key) == usage.get(key)
        assert (key in table) == (key in usage)
