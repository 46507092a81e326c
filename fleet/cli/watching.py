"""``-w/--watch`` of listings (``get``, ``ps``): print the list, then the rows that
change, until Ctrl-C; and what an empty selected listing says."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from fleet.cli.output import ListFormat, View, err_console, safe
from fleet.cli.selectors import Selector

__all__ = ["WATCH_INTERVAL", "WatchOpt", "run_listing", "show_selected"]

T = TypeVar("T")

# A person watches: one poll a second is fresh enough and costs the server one list.
WATCH_INTERVAL = 1.0

WatchOpt = Annotated[
    bool,
    typer.Option(
        "--watch",
        "-w",
        help="After the list, print rows again as they change (until Ctrl-C).",
    ),
]


def show_selected(
    items: list[T],
    selector: Selector,
    output: ListFormat,
    view: View,
    printer: Callable[[list[T], ListFormat, View], None],
) -> None:
    """``printer`` over ``items``; when ``selector`` matched nothing, a table is not
    printed and stderr says so (as kubectl's "No resources found"; exit status 0, said
    once in a watch). JSON and YAML still print their empty list."""
    if items or not selector or output in (ListFormat.json, ListFormat.yaml):
        printer(items, output, view)
    elif not view.started:
        err_console.print(safe(f"No resources found matching -l {selector}"))
        view.started = True


def run_listing(show: Callable[[View], None], view: View) -> None:
    """``show`` once; watched, again every ``WATCH_INTERVAL`` until Ctrl-C (exit 130,
    nothing more said: the usual end of a watch)."""
    if not view.watch:
        show(view)
        return
    try:
        while True:
            show(view)
            time.sleep(WATCH_INTERVAL)  # polled: the listings have no watch rpc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
