"""AGE as kubectl prints it."""

import pytest

from fleet._time import iso_at
from fleet.cli.tables import age

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("ago", "shown"),
    [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (12 * 60 + 5, "12m"),
        (3600, "1h"),
        (3600 + 20 * 60, "1h20m"),
        (15 * 3600, "15h"),
        (47 * 3600, "47h"),
        (2 * 86400 + 5 * 3600, "2d5h"),
        (30 * 86400, "30d"),
    ],
)
def test_age_reads_like_kubectls(ago: float, shown: str) -> None:
    assert age(iso_at(NOW - ago), NOW) == shown


def test_an_unknown_time_has_no_age() -> None:
    assert age("", NOW) == "-"
    assert age("not a time", NOW) == "-"
    assert age(iso_at(NOW + 30), NOW) == "0s"  # a clock a little ahead
