"""Builders shared by the CLI's unit tests: a hostile text (rich markup and terminal
escapes) for a stand-in server to answer with, what of it the CLI must show, and the check
that nothing of the escapes reached the output."""

from __future__ import annotations

HOSTILE = "[/boom] [bold]x :smile: \x1b]0;evil\x07\x1b[31mred\x1b[0m \x9b2J"
SHOWN = "[/boom] [bold]x :smile: red 2J"  # what is left of it: the text, none of the sequences


def assert_clean(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\x9b" not in output, output
    assert "Traceback" not in output and "MarkupError" not in output, output
