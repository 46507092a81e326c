"""``strip_control``: what the control plane keeps of hosts' text, and the CLI prints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet import _text
from fleet._text import strip_control


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("exit code 3", "exit code 3"),
        ("line one\nline\ttwo", "line one\nline\ttwo"),
        ("[/boom] [bold]", "[/boom] [bold]"),  # markup is the CLI's to escape, not text to drop
        ("naïve ☃ 容器", "naïve ☃ 容器"),
        ("\x1b[31mred\x1b[0m", "red"),  # SGR
        ("a\x1b[2J\x1b[1;1Hb", "ab"),  # erase the screen, move the cursor
        ("\x1b]0;evil\x07title", "title"),  # OSC, ended by BEL
        ("\x1b]8;;http://evil/\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink, ended by ST
        ("\x1bP+q544e\x1b\\x", "x"),  # DCS
        ("\x1b(0x\x1bc", "x"),  # charset, reset
        ("a\rb\x08c\x00d\x7fe", "abcde"),  # C0 and DEL
        ("\x9b2Jx\x9d0;t\x9c", "2Jx0;t"),  # C1 alone: no sequence to find, the controls go
        ("\x1b]0;never ended", ""),  # a terminal would swallow the rest too
        ("cut \x1b", "cut "),
    ],
)
def test_strip_control(text: str, kept: str) -> None:
    assert strip_control(text) == kept


# What terminals act on: C0 but tab and newline, DEL, C1.
CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} - {"\t", "\n"}


@given(st.text())
def test_nothing_a_terminal_acts_on_is_left(text: str) -> None:
    stripped = strip_control(text)
    assert not set(stripped) & CONTROLS
    assert strip_control(stripped) == stripped


@given(st.text() | st.text(alphabet="ab\t\n\x1b[]();\x07\\\x9b\x85 ☃"))
def test_the_shortcut_for_printable_text_strips_what_the_searches_would(text: str) -> None:
    searched = _text._CONTROL.sub("", _text._SEQUENCE.sub("", text))
    assert strip_control(text) == searched
