"""How the daemons' log lines look (``--log-format``): for a terminal, for journald, or
for a log shipper.

- ``text``: ``TIME LEVEL logger: message``, tracebacks on the lines that follow;
- ``journal``: ``<N>logger: message``, with the syslog priority journald reads from
  the sd-daemon prefix (``<3>`` error, ``<4>`` warning, ``<6>`` info, ``<7>`` debug) and
  no time (journald stamps each entry). journald makes an entry of every line, so a
  traceback or a message of several lines stays on one, its line breaks written ``\\n``;
- ``json``: one object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
  ``message`` and, with an exception, ``exc`` (its traceback);
- ``auto``: ``journal`` when stderr is the journal stream systemd set up (the
  ``$JOURNAL_STREAM`` it sets names that stream's device and inode), else ``text``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, TextIO

import typer

__all__ = [
    "JournalFormatter",
    "JsonFormatter",
    "LogFormat",
    "LogFormatOpt",
    "LogLevel",
    "TextFormatter",
    "configure_logging",
    "daemon_logging",
    "resolve_format",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFormat(StrEnum):
    auto = "auto"
    text = "text"
    json = "json"
    journal = "journal"


def _priority(levelno: int) -> int:
    """The syslog priority of a logging level (sd-daemon(3)'s prefixes)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def _one_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


class TextFormatter(logging.Formatter):
    """For a terminal or a file: a time on every line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)


class JournalFormatter(logging.Formatter):
    """For journald: ``<priority>logger: message``, one line whatever the message."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        details = _details(self, record)
        if details:
            message = f"{message}\n{details}"
        return f"<{_priority(record.levelno)}>{record.name}: {_one_line(message)}"


class JsonFormatter(logging.Formatter):
    """For log shippers: one JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        details = _details(self, record)
        if details:
            entry["exc"] = details
        return json.dumps(entry, ensure_ascii=False)


def _details(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's traceback and stack, if it has any."""
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return "\n".join(parts)


def _is_journal(stream: TextIO, journal_stream: str | None) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM``
    is ``DEVICE:INODE``; a program started from the service with its output elsewhere
    inherits the variable but not the stream)."""
    if not journal_stream:
        return False
    device, _, inode = journal_stream.partition(":")
    try:
        status = os.fstat(stream.fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


def resolve_format(
    chosen: LogFormat, stream: TextIO, journal_stream: str | None = None
) -> LogFormat:
    """``chosen``, with ``auto`` made ``journal`` or ``text`` for ``stream``."""
    if chosen is not LogFormat.auto:
        return chosen
    journal = _is_journal(stream, journal_stream)
    return LogFormat.journal if journal else LogFormat.text


_FORMATTERS: dict[LogFormat, type[logging.Formatter]] = {
    LogFormat.text: TextFormatter,
    LogFormat.journal: JournalFormatter,
    LogFormat.json: JsonFormatter,
}


def configure_logging(level: str, chosen: LogFormat, stream: TextIO | None = None) -> LogFormat:
    """Log at ``level`` to ``stream`` (stderr) in the format ``chosen``; returns the
    format used. Libraries speak only when something is wrong, even at debug."""
    stream = stream or sys.stderr
    used = resolve_format(chosen, stream, os.environ.get("JOURNAL_STREAM"))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_FORMATTERS[used]())
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    for noisy in ("grpc", "urllib3", "docker", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return used


# The daemons' (server, agent, up) logging options.
LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        help="text (with a time), journal (<priority> prefixes, one line an event), json "
        "(an object a line), or auto: journal when stderr is systemd's journal, else text.",
    ),
]


def daemon_logging(level: str, log_format: LogFormat = LogFormat.text) -> bool:
    """Configure a daemon's logging; True when its lines are for a machine (journal,
    JSON), where the error a daemon stops with must be a log entry too."""
    return configure_logging(level, log_format) is not LogFormat.text
