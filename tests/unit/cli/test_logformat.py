"""The daemons' log formats: journal lines carry a syslog priority and stay one line
whatever the message, JSON lines are one object each, and auto picks the journal only
when stderr is the journal's stream."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from fleet.cli.logformat import (
    JournalFormatter,
    JsonFormatter,
    LogFormat,
    TextFormatter,
    resolve_format,
)


def record(level: int, message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("fleet.agent.session", level, __file__, 1, message, args, exc_info)
    made.created = 1_700_000_000.25
    return made


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.CRITICAL, "<2>"),
        (logging.ERROR, "<3>"),
        (logging.WARNING, "<4>"),
        (logging.INFO, "<6>"),
        (logging.DEBUG, "<7>"),
    ],
)
def test_journal_lines_start_with_the_syslog_priority(level: int, prefix: str) -> None:
    line = JournalFormatter().format(record(level, "host %s connected", "h1"))
    assert line == f"{prefix}fleet.agent.session: host h1 connected"


def test_a_traceback_stays_on_one_journal_line() -> None:
    line = JournalFormatter().format(record(logging.ERROR, "two\nlines", exc=True))
    assert "\n" not in line
    assert line.startswith("<3>fleet.agent.session: two\\nlines\\nTraceback (most recent")
    assert line.endswith("ValueError: bad\\nvalue")


def test_text_lines_have_a_time_and_the_level() -> None:
    line = TextFormatter().format(record(logging.WARNING, "careful"))
    stamp, _, rest = line.partition(",")  # asctime: "YYYY-MM-DD HH:MM:SS,mmm"
    assert len(stamp) == 19 and stamp[4] == "-"
    assert rest.endswith(" WARNING fleet.agent.session: careful")


def test_json_lines_are_one_object_each() -> None:
    plain = JsonFormatter().format(record(logging.INFO, "host %s up", "h1"))
    assert json.loads(plain) == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "info",
        "logger": "fleet.agent.session",
        "message": "host h1 up",
    }
    failed = JsonFormatter().format(record(logging.ERROR, "broke\nhere", exc=True))
    assert "\n" not in failed
    entry = json.loads(failed)
    assert entry["message"] == "broke\nhere"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].endswith("ValueError: bad\nvalue")


def test_auto_is_the_journal_only_on_the_journals_own_stream(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as stream:
        status = os.fstat(stream.fileno())
        mine = f"{status.st_dev}:{status.st_ino}"
        assert resolve_format(LogFormat.auto, stream, mine) is LogFormat.journal
        # Inherited by a program whose stderr is elsewhere: not the journal.
        assert resolve_format(LogFormat.auto, stream, "1:2") is LogFormat.text
        assert resolve_format(LogFormat.auto, stream, None) is LogFormat.text
        assert resolve_format(LogFormat.auto, stream, "junk") is LogFormat.text
        assert resolve_format(LogFormat.json, stream, mine) is LogFormat.json
    assert resolve_format(LogFormat.auto, io.StringIO(), mine) is LogFormat.text
