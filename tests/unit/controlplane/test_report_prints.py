"""``ContainerPrints`` answers as the dict of keys to prints it replaces."""

from __future__ import annotations

import sys
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from fleet.controlplane.reportprints import EMPTY, ContainerPrints, ReportKey

_APPS = st.sampled_from(["web", "api", "scale-000", "a-b.c_d"])
_KEYS = st.tuples(_APPS, st.integers(0, 1 << 40), st.integers(0, 1 << 40))
_TABLES = st.dictionaries(_KEYS, st.integers(0, (1 << 60) - 1), max_size=60)


def prints_of(table: dict[ReportKey, int]) -> ContainerPrints:
    return ContainerPrints(list(table), list(table.values()))


@given(_TABLES, st.lists(_KEYS, max_size=10))
def test_prints_answer_as_a_dict_of_them(
    table: dict[ReportKey, int], others: list[ReportKey]
) -> None:
    prints = prints_of(table)
    assert len(prints) == len(table)
    assert sorted(prints) == sorted(table)
    assert dict(prints.items()) == table
    for key, value in table.items():
        assert key in prints
        assert prints.get(key) == value
    for key in others:
        if key not in table:
            assert key not in prints
            assert prints.get(key) is None


@given(_TABLES)
def test_prints_equal_when_their_keys_and_prints_do(table: dict[ReportKey, int]) -> None:
    reversed_order = dict(reversed(list(table.items())))
    assert prints_of(table) == prints_of(reversed_order)
    if table:
        key = next(iter(table))
        assert prints_of(table) != prints_of({**table, key: table[key] ^ 1})
        assert prints_of(table) != EMPTY


def test_keys_read_back_share_their_names_and_numbers() -> None:
    """A key read back is built as a heartbeat's is (the app interned)."""
    app = "".join(["sc", "ale-007"])  # not the interned instance
    [(read_app, slot, revision)] = list(prints_of({(app, 1500, 3): 7}))
    assert read_app is sys.intern("scale-007")
    assert (slot, revision) == (1500, 3)


def test_things_that_are_not_keys_are_not_in_prints() -> None:
    prints = prints_of({("web", 0, 1): 5})
    assert [] not in prints  # (unhashable)
    assert "web" not in prints


def test_a_hosts_prints_take_a_third_of_the_dict_they_replace() -> None:
    keys = [(sys.intern(f"scale-{i:03d}"), 1000 + i, 2) for i in range(20)]
    values = [(1 << 59) + i for i in range(20)]
    tracemalloc.start()
    try:
        held = [ContainerPrints(keys, values) for _ in range(200)]
        compact = tracemalloc.get_traced_memory()[0] / len(held)
        del held
        tracemalloc.stop()
        tracemalloc.start()
        as_dicts = [
            {(a, s + 0, r + 0): v + 0 for (a, s, r), v in zip(keys, values, strict=True)}
            for _ in range(200)
        ]
        plain = tracemalloc.get_traced_memory()[0] / len(as_dicts)
    finally:
        tracemalloc.stop()
    assert compact < plain / 3, (compact, plain)
