"""Image hygiene: remove images fleet's containers stopped using a while ago.

Only images a fleet container has used are candidates, and never one any container on
the host (fleet's or not) still uses. When each was last used is kept in the agent's
state dir, so an agent restart does not make old images look new.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ImageKeeper", "stale_images"]

log = logging.getLogger(__name__)


def stale_images(
    last_used: dict[str, float], in_use: set[str], now: float, after: float
) -> list[str]:
    """Images unused by any container for at least ``after`` seconds."""
    return sorted(i for i, t in last_used.items() if i not in in_use and now - t >= after)


class ImageKeeper:
    """Remembers when fleet containers last used each image."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self.last_used: dict[str, float] = {}
        if path is not None:
            try:
                saved = json.loads(path.read_text())
                self.last_used = {str(k): float(v) for k, v in saved.items()}
            except (OSError, ValueError, AttributeError):
                self.last_used = {}

    def saw(self, images: Iterable[str], now: float) -> None:
        for image in images:
            self.last_used[image] = now

    def forget(self, image: str) -> None:
        self.last_used.pop(image, None)

    def save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.last_used, sort_keys=True))
        temporary.replace(self._path)
