"""Tests of ``drain_surge``: how many make-before-break replacements a drain starts at
once for an app (a count or a percentage; no limit when left out), its rejections, and
that it is neither part of the container template nor written when left out."""

from __future__ import annotations

import pytest

from fleet.spec import load_documents, parse_spec_json
from tests.unit.spec.test_spec import BASE, one_problem


@pytest.mark.parametrize(
    ("extra", "replicas", "at_once"),
    [
        ("", 12, None),  # no limit
        ("drain_surge: 2\n", 12, 2),
        ("drain_surge: '3'\n", 12, 3),
        ("drain_surge: 25%\n", 12, 3),
        ("drain_surge: 25%\n", 10, 3),  # 2.5 rounds up, as a surge does
        ("drain_surge: 1%\n", 3, 1),  # never below one
        ("drain_surge: 100%\n", 5, 5),
        ("drain_surge: 40\n", 5, 40),  # more than replicas: the same as no limit
    ],
)
def test_drain_surge_resolves_to_replacements_at_once(
    extra: str, replicas: int, at_once: int | None
) -> None:
    [app] = load_documents(BASE + f"replicas: {replicas}\n" + extra)
    assert app.drain_moves_at_once() == at_once


@pytest.mark.parametrize(
    ("extra", "path", "line", "expected"),
    [
        ("drain_surge: 0", "drain_surge", 3, "would never move a replica off a draining host"),
        ("drain_surge: 0%", "drain_surge", 3, "leave it out for no limit"),
        ("drain_surge: -1", "drain_surge", 3, "a count like 1 or a percentage like 25%"),
        ("drain_surge: 101%", "drain_surge", 3, "a percentage like 25%"),
        ("drain_surge: all", "drain_surge", 3, "got 'all'"),
        ("drain_surge: true", "drain_surge", 3, "a count like 1"),
        ("mode: global\ndrain_surge: 1", "", 1, "drain_surge does not apply to mode global"),
        ("mode: job\ndrain_surge: 1", "", 1, "drain_surge does not apply to mode job"),
        ("drain_surg: 1", "drain_surg", 3, "did you mean 'drain_surge'?"),
    ],
)
def test_invalid_drain_surge(extra: str, path: str, line: int, expected: str) -> None:
    problem = one_problem(BASE + extra + "\n")
    assert (problem.path, problem.line) == (path, line)
    assert expected in problem.message
    assert not problem.message.startswith("Value error")


def test_left_out_it_is_not_written() -> None:
    """No "drain_surge" key when left out: a control plane of the version before reads the
    record (its model forbids unknown fields) during a rolling upgrade."""
    [app] = load_documents(BASE)
    assert "drain_surge" not in app.model_dump() and "drain_surge" not in app.model_dump_json()
    [app] = load_documents(BASE + "drain_surge: 50%\n")
    assert app.model_dump()["drain_surge"] == "50%"
    assert parse_spec_json(app.model_dump_json()) == app


def test_it_is_no_part_of_the_container_template() -> None:
    """Changing it is no new revision of the containers (nothing rolls out)."""
    [before] = load_documents(BASE + "replicas: 4\n")
    [after] = load_documents(BASE + "replicas: 4\ndrain_surge: 1\n")
    assert before.template() == after.template()
