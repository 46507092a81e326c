"""Where an asyncio task waits: its whole chain of awaits, for logs that say why
something is not moving. ``Task.get_stack`` gives only the task's outermost coroutine
(a suspended coroutine's frame has no ``f_back``); the awaits are followed here."""

from __future__ import annotations

import asyncio
from types import FrameType
from typing import Any

__all__ = ["await_chain", "where_it_waits"]


def await_chain(task: asyncio.Task[Any], most: int = 30) -> list[FrameType]:
    """The frames of ``task``'s coroutine and of each coroutine it awaits, outermost
    first, down to the innermost await (at most ``most``)."""
    frames: list[FrameType] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(frames) < most:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break  # finished, or not a coroutine (a future: the chain ends at it)
        frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return frames


def where_it_waits(task: asyncio.Task[Any], most: int = 30) -> str:
    """``task``'s chain of awaits as lines ``file:line in function``, innermost last."""
    return "\n".join(
        f"  {frame.f_code.co_filename}:{frame.f_lineno or frame.f_code.co_firstlineno} "
        f"in {frame.f_code.co_name}"
        for frame in await_chain(task, most)
    )
