"""Tests of the logs kept for ``fleet logs --previous`` (``fleet.agent.previouslogs``):
what is kept of a removed container's log, and what a request reads back of it."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.previouslogs import MAX_BYTES, PreviousLogs, select

LOG = (
    b"2026-12-04T15:00:00.000000001Z first\n"
    b"2026-12-04T15:00:10.500000000Z second\n"
    b"2026-12-04T15:00:20.000000000Z third\n"
)
T10 = 1796396410.0  # 2026-12-04T15:00:10Z


def test_lines_without_their_timestamps_unless_asked() -> None:
    assert select(LOG, tail=-1, since=0, timestamps=False) == b"first\nsecond\nthird\n"
    assert select(LOG, tail=-1, since=0, timestamps=True) == LOG


def test_tail_and_since_as_docker_applies_them() -> None:
    assert select(LOG, tail=1, since=0, timestamps=False) == b"third\n"
    assert select(LOG, tail=0, since=0, timestamps=False) == b""
    assert select(LOG, tail=-1, since=T10, timestamps=False) == b"second\nthird\n"
    assert select(LOG, tail=1, since=T10 + 0.6, timestamps=False) == b"third\n"


def test_a_line_without_a_timestamp_is_kept_as_it_is() -> None:
    assert select(b"no stamp here\n", tail=-1, since=T10, timestamps=False) == b"no stamp here\n"


def test_kept_per_replica_the_last_one_wins_and_the_end_of_a_long_log(tmp_path: Path) -> None:
    kept = PreviousLogs(tmp_path / "previous-logs")
    assert kept.read("web", 0) is None
    kept.save("web", 0, LOG)
    kept.save("web", 1, b"other\n")
    found = kept.read("web", 0)
    assert found is not None and found[0] == LOG
    long = b"".join(b"line %d\n" % i for i in range(100_000))
    kept.save("web", 0, long)
    found = kept.read("web", 0)
    assert found is not None
    assert len(found[0]) <= MAX_BYTES and long.endswith(found[0])
    assert found[0].startswith(b"line ")  # from the start of a line
    assert PreviousLogs(None).read("web", 0) is None  # no state dir: nothing kept


@given(st.lists(st.sampled_from([b"a\n", b"bb\n", b"2026-12-04T15:00:00Z x\n"]), max_size=30))
def test_tail_never_gives_more_lines_than_asked(lines: list[bytes]) -> None:
    data = b"".join(lines)
    for tail in (0, 1, 5):
        assert len(select(data, tail=tail, since=0, timestamps=True).splitlines()) <= tail
    assert select(data, tail=-1, since=0, timestamps=True) == data
