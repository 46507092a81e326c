"""What ``fleet describe`` adds to an app's or a host's record: its rollout, its recent
events and what blocks a host's drain, as sections of text or, with ``-o json|yaml``,
as one object (``describe_document``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from fleet.cli.output import Format, console, print_records, safe, to_dict
from fleet.proto import fleet_pb2 as pb

__all__ = [
    "RECENT_EVENTS",
    "describe_document",
    "print_drain_blockers",
    "print_recent_events",
    "print_rollout",
]

RECENT_EVENTS = 10  # as kubectl describe's Events: the last few, the rest in `fleet events`


def rollout_line(info: pb.RolloutInfo) -> str:
    """``progressing to revision 3 (from 2), 1/2 updated, 1 available; paused``, and
    for a rollback the cause of the failure it undoes, not its own success."""
    state = "paused" if info.paused and info.state == "progressing" else info.state
    line = (
        f"{state} to revision {info.revision} (from {info.from_revision}): "
        f"{info.updated}/{info.replicas} updated, {info.available} available"
    )
    if info.rollback_of:
        why = info.failure or f"revision {info.rollback_of} failed"
        line += f"; rolled back: {why}"
    elif info.state == "failed" and info.failure:
        line += f"; failed: {info.failure}"
    elif info.message:
        line += f"; {info.message}"
    return line


def print_rollout(info: pb.RolloutInfo | None) -> None:
    console.print(
        "[bold]rollout[/bold] " + safe(rollout_line(info) if info else "-"), soft_wrap=True
    )


def print_recent_events(events: Sequence[pb.Event]) -> None:
    """The last events of an app or host, oldest first (``fleet events`` has them all)."""
    console.print("[bold]events[/bold]" + ("" if events else " none kept"))
    if not events:
        return
    rows = [
        [
            e.time,
            e.host or e.source or "-",
            f"{e.app}.{e.slot}" if e.app else "-",
            e.kind,
            e.message + (f" (x{e.count})" if e.count > 1 else ""),
        ]
        for e in events
    ]
    print_records(events, Format.table, ["TIME", "HOST", "REPLICA", "KIND", "MESSAGE"], rows)


def print_drain_blockers(host: pb.HostInfo) -> None:
    """The replicas a drain of ``host`` cannot move yet, and why (kubectl drain's
    "cannot evict pod" list)."""
    if not host.blocked:
        return
    console.print("[bold]drain blocked by[/bold]")
    for b in host.blocked:
        console.print(safe(f"  {b.app}.{b.slot}: {b.reason}"), soft_wrap=True)


def describe_document(output: Format, **parts: Any) -> None:
    """Print one object of ``parts`` (a message, a list of them, or None each) as JSON
    or YAML: ``describe`` says one thing, as ``kubectl get -o json NAME`` does."""

    def plain(part: Any) -> Any:
        if part is None:
            return None
        if isinstance(part, list | tuple):
            return [to_dict(m) for m in part]
        return to_dict(part)

    document = {key: plain(part) for key, part in parts.items()}
    if output == Format.yaml:
        print(yaml.safe_dump(document, sort_keys=False), end="")
    else:
        console.print_json(json.dumps(document))
