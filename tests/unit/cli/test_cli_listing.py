"""Pure parts of listings: -l selectors as kubectl reads them, and a watch reprinting
only the rows that changed (AGE aside)."""

from __future__ import annotations

import pytest
import typer

from fleet.cli.output import ListFormat, View, print_records
from fleet.cli.selectors import parse_selector
from fleet.cli.tables import print_jobs
from fleet.proto import fleet_pb2 as pb


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("team=web", {"team": "web"}, True),
        ("team=web", {"team": "ops"}, False),
        ("team!=web", {}, True),  # as kubectl: a missing label is "not web"
        ("team", {"team": ""}, True),
        ("team,env=prod", {"team": "web"}, False),
        ("team, env=prod", {"team": "web", "env": "prod"}, True),
        ("", {}, True),
    ],
)
def test_selector_terms(text: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(text).matches(labels) is matches


def test_a_bad_term_fails_with_exit_2() -> None:
    with pytest.raises(typer.Exit) as ended:
        parse_selector("team==web")
    assert ended.value.exit_code == 2


def test_a_watch_reprints_only_changed_rows(capsys: pytest.CaptureFixture[str]) -> None:
    view = View(watch=True)
    columns = ["NAME", "RUNNING", "AGE"]
    table = ListFormat.table
    print_records([], table, columns, [["a", "1/1", "5s"], ["b", "0/1", "5s"]], view=view)
    first = capsys.readouterr().out.splitlines()
    assert first[0].split() == columns and len(first) == 3
    print_records([], table, columns, [["a", "1/1", "6s"], ["b", "1/1", "6s"]], view=view)
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [["b", "1/1", "6s"]]
    print_records([], ListFormat.name, columns, [["a", "1/1", "9s"]], kind="app", view=View())
    assert capsys.readouterr().out == "app/a\n"


def test_wide_adds_columns_to_every_listing_that_takes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-o wide says more than the table (here: get jobs), never the table unchanged."""
    job = pb.AppInfo(
        name="migrate",
        spec_json='{"image": "img:v1"}',
        job=pb.JobInfo(state="running", completions=2, parallelism=1, backoff_limit=6),
    )
    print_jobs([job], ListFormat.table)
    table = capsys.readouterr().out
    print_jobs([job], ListFormat.wide)
    wide = capsys.readouterr().out
    assert "PARALLELISM" not in table and "img:v1" not in table
    header = wide.splitlines()[0]
    for column in ("PARALLELISM", "BACKOFF LIMIT", "FINISHED", "IMAGE", "MESSAGE"):
        assert column in header
    assert "img:v1" in wide
