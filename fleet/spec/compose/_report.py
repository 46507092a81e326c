"""Where a compose conversion's findings are: each at its compose key and line, in one of
three kinds (errors, keys fleet cannot honour, notes on a changed meaning)."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from fleet.errors import SpecProblem
from fleet.spec._files import _node_line
from fleet.spec._quote import clean_text

__all__ = ["Path", "Report", "path_text"]

Path = tuple[str | int, ...]


def path_text(path: Path) -> str:
    """``services.web.ports[0]`` from its parts."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:  # a YAML key may be any scalar (0E0 is a float): shown as text
            text += f".{clean_text(str(part))}" if text else clean_text(str(part))
    return text


@dataclass
class Report:
    """Collects findings against one compose document's YAML node."""

    source: str
    node: yaml.Node | None
    errors: list[SpecProblem] = field(default_factory=list)
    unsupported_keys: list[SpecProblem] = field(default_factory=list)
    notes: list[SpecProblem] = field(default_factory=list)

    def line(self, path: Path, *, at_key: bool = True) -> int | None:
        if self.node is None:
            return None
        return _node_line(self.node, path, at_key)

    def _problem(self, path: Path, message: str) -> SpecProblem:
        return SpecProblem(self.source, 0, path_text(path), self.line(path), message)

    def error(self, path: Path, message: str) -> None:
        """Something no flag lets through (a missing image, a bad value)."""
        self.errors.append(self._problem(path, message))

    def unsupported(self, path: Path, message: str) -> None:
        """A key fleet cannot honour: nothing is stored unless the user says to ignore it."""
        self.unsupported_keys.append(self._problem(path, message))

    def note(self, path: Path, message: str) -> None:
        """A key mapped onto something close but not the same, said on every run."""
        self.notes.append(self._problem(path, message))
