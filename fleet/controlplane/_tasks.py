"""A background loop of a service, started on first use and again if it ever ended."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["running"]


def running(
    task: asyncio.Task[None] | None, start: Callable[[], Coroutine[Any, Any, None]], name: str
) -> asyncio.Task[None]:
    """``task`` while it runs; otherwise a new one from ``start``."""
    if task is None or task.done():
        return asyncio.create_task(start(), name=name)
    return task
