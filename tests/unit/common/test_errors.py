"""The exception tree drawn in ``fleet.errors``' docstring is the classes' own: every
error the module defines is drawn once, under its base class, with the connectors a
tree drawing uses (``└──`` for the last child, ``│`` while a parent has more)."""

from __future__ import annotations

import re

from fleet import errors
from fleet.errors import FleetError

_LINE = re.compile(r"^    (?P<prefix>(?:[│ ]   )*(?:[├└]── )?)(?P<name>[A-Z]\w*)(?:\s|$)")


def _drawn() -> list[tuple[int, str, str]]:
    """(depth, name, prefix) of each line of the drawing, top to bottom."""
    assert errors.__doc__ is not None
    lines = errors.__doc__.split("\n\n")[1].splitlines()
    rows = []
    for line in lines:
        match = _LINE.match(line)
        assert match is not None, f"not a line of the tree: {line!r}"
        prefix = match["prefix"]
        rows.append((len(prefix) // 4, match["name"], prefix))
    return rows


def _defined() -> dict[str, str]:
    """Every error class fleet.errors defines -> the name of its base."""
    found: dict[str, str] = {}
    pending: list[type[Exception]] = [FleetError]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.__module__ == errors.__name__:
            found[cls.__name__] = cls.__base__.__name__
    return found


def test_every_error_is_drawn_once_under_its_base() -> None:
    drawn = _drawn()
    parents: dict[str, str] = {}
    path: list[str] = []
    for depth, name, _ in drawn:
        assert name not in parents, f"{name} is drawn twice"
        del path[depth:]
        parents[name] = path[-1] if path else "Exception"
        path.append(name)
    assert parents == _defined()


def test_the_drawing_uses_the_connectors_of_a_tree() -> None:
    drawn = _drawn()
    for index, (depth, name, prefix) in enumerate(drawn):
        if depth == 0:
            assert prefix == "", name
            continue
        later = [d for d, _, _ in drawn[index + 1 :]]

        def more_at(level: int, later: list[int] = later) -> bool:
            """Whether a sibling at ``level`` follows before the tree climbs above it."""
            for d in later:
                if d < level:
                    return False
                if d == level:
                    return True
            return False

        bars = "".join("│   " if more_at(level) else "    " for level in range(1, depth))
        expected = bars + ("├── " if more_at(depth) else "└── ")
        assert prefix == expected, f"{name}: drawn {prefix!r}, a tree has {expected!r}"
