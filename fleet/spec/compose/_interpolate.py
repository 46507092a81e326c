"""Compose's variable interpolation (``$VAR``, ``${VAR}``, ``${VAR:-default}``,
``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``${VAR+alt}``,
``$$`` for a literal ``$``) and the ``.env`` / ``env_file`` format, as docker compose
reads them: from the environment first, then the ``.env`` file beside the compose file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["InterpolationError", "Interpolator", "parse_env_file"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:=\s*(.*))?")


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is missing, or a malformed ``${...}``."""


@dataclass
class Interpolator:
    """Substitutes variables from ``environ``; remembers the variables that were unset and
    had no default (compose warns of them and substitutes an empty string)."""

    environ: Mapping[str, str]
    unset: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> str:
        out, end = self._expand(text, 0, closing=False)
        assert end == len(text)
        return out

    def _expand(self, text: str, start: int, *, closing: bool) -> tuple[str, int]:
        """``text`` from ``start`` expanded, up to its end or (``closing``) to the ``}``
        that closes an enclosing ``${``; returns the text and where it stopped."""
        out: list[str] = []
        i = start
        while i < len(text):
            ch = text[i]
            if closing and ch == "}":
                return "".join(out), i
            if ch != "$":
                out.append(ch)
                i += 1
                continue
            following = text[i + 1 : i + 2]
            if following == "$":
                out.append("$")
                i += 2
            elif following == "{":
                value, i = self._braced(text, i + 2)
                out.append(value)
            else:
                match = _NAME.match(text, i + 1)
                if match is None:
                    out.append("$")  # a lone $ stays, as compose leaves it
                    i += 1
                else:
                    out.append(self._lookup(match[0]))
                    i = match.end()
        if closing:
            raise InterpolationError(f"unclosed ${{ in {text!r}")
        return "".join(out), i

    def _braced(self, text: str, start: int) -> tuple[str, int]:
        match = _NAME.match(text, start)
        if match is None:
            raise InterpolationError(
                f"invalid interpolation in {text!r}: expected a variable name after ${{"
            )
        name, i = match[0], match.end()
        if text[i : i + 1] == "}":
            return self._lookup(name), i + 1
        for operator in (":-", ":?", ":+", "-", "?", "+"):
            if text.startswith(operator, i):
                break
        else:
            raise InterpolationError(
                f"invalid interpolation in {text!r}: expected }}, :-, -, :?, ?, :+ or + "
                f"after ${{{name}"
            )
        # The default, message or alternative may hold variables of its own.
        argument, end = self._expand(text, i + len(operator), closing=True)
        value = self.environ.get(name)
        empty_counts = operator.startswith(":")
        missing = value is None or (empty_counts and value == "")
        if operator.endswith("-"):
            result = argument if missing else str(value)
        elif operator.endswith("?"):
            if missing:
                raise InterpolationError(
                    f"required variable {name} is missing a value: {argument or 'not set'}"
                )
            result = str(value)
        else:  # "+": the alternative when the variable is set
            result = "" if missing else argument
        return result, end + 1

    def _lookup(self, name: str) -> str:
        value = self.environ.get(name)
        if value is None:
            if name not in self.unset:
                self.unset.append(name)
            return ""
        return value


def parse_env_file(text: str) -> tuple[dict[str, str | None], list[tuple[int, str]]]:
    """The variables of a ``.env`` or ``env_file`` text (``KEY=VALUE`` lines, ``#``
    comments, optional quotes and ``export``; a bare ``KEY`` has no value), and the
    (line, text) of lines it could not read."""
    values: dict[str, str | None] = {}
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.fullmatch(line)
        if match is None:
            bad.append((number, line))
            continue
        name, raw = match[1], match[2]
        if raw is None:
            values[name] = None
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            value = raw[1:-1]
            if raw[0] == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        else:
            value = re.sub(r"\s+#.*$", "", raw)  # an inline comment after a space
        values[name] = value
    return values, bad
