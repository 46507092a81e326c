"""Text from hosts made safe for operators' terminals.

An agent's events and status messages end up on every operator's screen (``fleet
events``, ``fleet ps``); an escape sequence in them could retitle the window, hide
lines or forge a hyperlink. The control plane strips them when an agent sends them,
and the CLI again when it prints (what was stored before may still hold them).
"""

from __future__ import annotations

import re

__all__ = ["strip_control"]

# Whole sequences go, not only their ESC: "]0;evil" or "[31m" left behind is noise.
_SEQUENCE = re.compile(
    r"\x1b(?:"
    r"\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erasing
    r"|\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window title, hyperlinks; ends at BEL or ST
    r"|[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC: up to ST
    r"|[ -/]*[0-~]"  # any other escape: charset, keypad, reset
    r")?"
)
# C0 (tab and newline stay), DEL and C1, which 8-bit terminals read as ESC + a letter.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_control(text: str) -> str:
    """``text`` without terminal escape sequences and control characters, but for tab
    and newline."""
    if text.isprintable():
        # No control character, so no escape sequence either (each begins with ESC):
        # most text, and two searches of it saved (five fields of each of 100,000
        # agents' events in a large apply).
        return text
    return _CONTROL.sub("", _SEQUENCE.sub("", text))
