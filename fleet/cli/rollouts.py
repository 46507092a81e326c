"""``fleet rollout``, ``fleet set image``, ``fleet wait`` and ``fleet endpoints``: follow
and steer how a new revision of an app replaces the old one (or a job runs to its end),
and find where its replicas answer.

The rollout itself runs in the control plane (``fleet.controlplane.rollout``); these
commands only read its record and ask for changes. ``wait_for_rollout`` is also what
``fleet apply --wait`` uses; its exit codes (0 complete, 1 failed, 2 rolled back) are
defined here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Annotated, Literal, Protocol

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from fleet.cli.completion import complete_apps
from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.options import duration_option
from fleet.cli.output import (
    Format,
    OutputOpt,
    console,
    err_console,
    exit_with,
    print_error,
    print_one,
    print_records,
    safe,
    to_dict,
)
from fleet.errors import NotFound
from fleet.proto import fleet_pb2 as pb

__all__ = [
    "POLL_INTERVAL",
    "TimeoutOpt",
    "WaitOpt",
    "endpoints",
    "follow_changes",
    "rollout_app",
    "rollout_outcome",
    "set_app",
    "wait",
    "wait_for_job",
    "wait_for_rollout",
]

Outcome = Literal["waiting", "complete", "failed", "rolled-back"]

# Exit codes of a followed rollout; a rollback is told apart from a plain failure so a
# deploy script can see that the previous revision is serving again.
EXIT_COMPLETE, EXIT_FAILED, EXIT_ROLLED_BACK = 0, 1, 2

POLL_INTERVAL = 0.5

rollout_app = typer.Typer(
    help="Follow and steer rollouts: how a new revision of an app replaces the old one.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
set_app = typer.Typer(
    help="Change one field of a stored app, like an apply of that change alone.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

AppArg = Annotated[
    str,
    typer.Argument(
        metavar="APP", help="The app.", show_default=False, autocompletion=complete_apps
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="Then follow the rollout like `fleet rollout status`: exit 1 if it fails, "
        "2 if it was rolled back.",
    ),
]
TimeoutOpt = Annotated[
    str,
    typer.Option(
        "--timeout", help="How long to follow before giving up (exit 1), e.g. 10m, 30s, 90."
    ),
]


class RolloutSource(Protocol):
    def rollout_status(self, app: str) -> pb.RolloutInfo: ...


def _human_seconds(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"
    return f"{seconds:g}s"


# ---------------------------------------------------------------------- following


def rollout_outcome(info: pb.RolloutInfo, target: int, *, started: bool = True) -> Outcome:
    """Where the rollout of revision ``target`` stands, judged from one status poll.

    ``started=False`` says the poll may predate the controller's first look at
    ``target`` (right after an apply), so an older revision there is not yet news.
    """
    if info.revision == target and info.state == "complete":
        return "complete"
    if target and info.rollback_of == target:
        return "rolled-back"
    if info.revision == target:
        return "failed" if info.state == "failed" else "waiting"
    if not started and info.revision < target:
        return "waiting"
    # Another apply, set image or undo moved the app elsewhere: ours will never finish.
    return "failed"


def _counts(info: pb.RolloutInfo) -> str:
    text = f"updated {info.updated}/{info.replicas}, available {info.available}, total {info.total}"
    return text + (", paused" if info.paused else "")


def _status_line(app: str, info: pb.RolloutInfo) -> str:
    state = info.state or "unknown"
    if info.rollback_of:
        state += f" (rollback of revision {info.rollback_of})"
    line = f"app/{app} rev {info.revision} {state}: {_counts(info)}"
    return f"{line}: {info.message}" if info.message else line


class _Watch:
    """Shows a rollout while it is followed: a live bar on a terminal, otherwise a line
    whenever something a reader would care about changed (so logs stay short)."""

    def __init__(self, app: str, display: Console) -> None:
        self.app = app
        self.display = display
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.last: tuple[object, ...] | None = None

    def __enter__(self) -> _Watch:
        if self.display.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                console=self.display,
                transient=True,
            )
            self.progress.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.__exit__(kind, error, trace)

    def show(self, info: pb.RolloutInfo) -> None:
        if self.progress is not None:
            description = safe(f"app/{self.app} rev {info.revision}")
            detail = safe(f"{_counts(info)}  {info.message}".rstrip())
            done, total = info.updated_available, info.replicas
            if self.task is None:
                self.task = self.progress.add_task(
                    description, total=total, completed=done, detail=detail
                )
            else:
                self.progress.update(
                    self.task, description=description, total=total, completed=done, detail=detail
                )
            return
        seen = (
            info.revision,
            info.state,
            info.paused,
            info.replicas,
            info.updated,
            info.available,
            info.total,
            info.message,
        )
        if seen != self.last:
            self.last = seen
            self.display.print(safe(_status_line(self.app, info)), soft_wrap=True)


def _conclude(app: str, info: pb.RolloutInfo, target: int, outcome: Outcome) -> int:
    if outcome == "complete":
        console.print(
            safe(
                f"app/{app}: revision {target} rolled out "
                f"({info.updated_available}/{info.replicas} available)"
            )
        )
        return EXIT_COMPLETE
    if outcome == "rolled-back":
        # The cause, not the rollback's own progress ("revision 3 failed: image ... not
        # found in the registry; rolled back to revision 2").
        if info.failure:
            print_error(f"app/{app}: {info.failure}; rolled back to revision {info.revision}")
        else:  # a record from before failures were kept
            print_error(info.message or f"app/{app}: revision {target} rolled back")
        return EXIT_ROLLED_BACK
    if info.revision != target:
        print_error(f"app/{app}: revision {target} superseded by revision {info.revision}")
    else:
        print_error(info.message or f"app/{app}: revision {target} failed")
    return EXIT_FAILED


def wait_for_rollout(
    client: RolloutSource,
    app: str,
    target: int | None,
    timeout: float,
    output: Format,
    *,
    poll_interval: float = POLL_INTERVAL,
) -> int:
    """Follow ``app``'s rollout of revision ``target`` (None: whatever the first poll
    shows is rolling out) to its end or ``timeout`` seconds; return the exit code."""
    structured = output in (Format.json, Format.yaml)
    # JSON and YAML readers get one document on stdout: the progress goes to stderr.
    display = err_console if structured else console
    deadline = time.monotonic() + timeout
    # A target we were handed may not have reached the rollout record yet.
    started = target is None
    info: pb.RolloutInfo | None = None
    outcome: Outcome = "waiting"
    with _Watch(app, display) as watch:
        while True:
            try:
                polled: pb.RolloutInfo | None = client.rollout_status(app)
            except NotFound:
                # A new app has no rollout until the controller first looks at it.
                if started:
                    raise
                polled = None
            if polled is not None:
                info = polled
                if target is None:
                    # The latest rollout: a rollback is the end of the one it undid, so
                    # `set image; rollout status` fails however late the first poll is.
                    target = info.rollback_of or info.revision
                started = started or target in (info.revision, info.rollback_of)
                outcome = rollout_outcome(info, target, started=started)
                if outcome != "waiting":
                    break
                watch.show(info)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(poll_interval, remaining))
    if structured and info is not None:
        print_one(info, output)
    if info is None or target is None or outcome == "waiting":
        what = f" waiting for app/{app} revision {target}" if target is not None else ""
        print_error(f"timed out after {_human_seconds(timeout)}{what}")
        return EXIT_FAILED
    if structured:
        # The document says how it ended; only failures still need saying (on stderr).
        return EXIT_COMPLETE if outcome == "complete" else _conclude(app, info, target, outcome)
    return _conclude(app, info, target, outcome)


def follow_changes(
    conn: Connection, changes: Sequence[pb.AppChange], timeout: float, output: Format
) -> None:
    """``apply --wait``: follow every app the apply changed; exit with the worst code."""
    followed = [c for c in changes if c.action != "unchanged"]
    if not followed:
        return
    with conn.client() as client:
        code = max(wait_for_rollout(client, c.app, c.revision, timeout, output) for c in followed)
    exit_with(code)


# ---------------------------------------------------------------------- commands


@set_app.command("image")
@connected
def set_image(
    app_name: AppArg,
    image: Annotated[
        str,
        typer.Argument(metavar="IMAGE", help="The new image, e.g. nginx:1.27.", show_default=False),
    ],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = "10m",
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Point APP at IMAGE (a new revision, rolled out like an apply).

    The rest of the app's spec stays as stored.

    Examples:
      fleet set image web registry.example:5000/web:v2 --wait"""
    seconds = duration_option("--timeout", timeout)
    with conn.client() as client:
        change = client.set_image(app_name, image)
        if output in (Format.json, Format.yaml):
            print_one(change, output)
        elif change.action == "unchanged":
            console.print(
                safe(f"app/{app_name} image already {image} (revision {change.revision})")
            )
        else:
            console.print(safe(f"app/{app_name} image set to {image} (revision {change.revision})"))
        if wait:
            exit_with(wait_for_rollout(client, app_name, change.revision, seconds, output))


@rollout_app.command("status")
@connected
def rollout_status(
    app_name: AppArg,
    timeout: TimeoutOpt = "10m",
    no_follow: Annotated[
        bool, typer.Option("--no-follow", help="Print the current state once and exit 0.")
    ] = False,
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Follow APP's current rollout until it completes, fails or is rolled back.

    Exit 0 when it completes; 1 when it fails, another revision supersedes it or
    --timeout passes; 2 when the controller rolled it back.

    Examples:
      fleet rollout status web --timeout 5m"""
    seconds = duration_option("--timeout", timeout)
    with conn.client() as client:
        if no_follow:
            info = client.rollout_status(app_name)
            if output in (Format.json, Format.yaml):
                print_one(info, output)
            else:
                console.print(safe(_status_line(app_name, info)), soft_wrap=True)
            return
        code = wait_for_rollout(client, app_name, None, seconds, output)
    exit_with(code)


@rollout_app.command("history")
@connected
def rollout_history(
    app_name: AppArg,
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """List APP's revisions: image, when and why each was made, and how its rollout
    ended (complete, failed, rolled back, and why) as far as the last rollout tells.

    The current one is marked (current).

    Examples:
      fleet rollout history web"""
    with conn.client() as client:
        revisions = list(client.rollout_history(app_name).revisions)
    rows = [
        [
            f"{r.revision} (current)" if r.current else str(r.revision),
            r.image,
            r.created_at or "-",
            r.cause or "-",
            r.outcome or "-",
            r.outcome_reason or "-",
        ]
        for r in revisions
    ]
    print_records(
        revisions, output, ["REVISION", "IMAGE", "CREATED", "CAUSE", "OUTCOME", "REASON"], rows
    )


@rollout_app.command("undo")
@connected
def rollout_undo(
    app_name: AppArg,
    to_revision: Annotated[
        int,
        typer.Option(
            "--to-revision",
            min=0,
            help="The revision to go back to (see `fleet rollout history`). "
            "Default: the one before the current.",
            show_default=False,
        ),
    ] = 0,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = "10m",
    conn: Connection = CONNECTION,
) -> None:
    """Roll APP back to an earlier revision (by default the one before the current).

    Examples:
      fleet rollout undo web
      fleet rollout undo web --to-revision 3"""
    seconds = duration_option("--timeout", timeout)
    with conn.client() as client:
        info = client.rollout_undo(app_name, to_revision)
        console.print(safe(f"app/{app_name} rolling back to revision {info.revision}"))
        if wait:
            exit_with(wait_for_rollout(client, app_name, info.revision, seconds, Format.table))


@rollout_app.command("pause")
@connected
def rollout_pause(app_name: AppArg, conn: Connection = CONNECTION) -> None:
    """Stop replacing APP's replicas until `fleet rollout resume`.

    Replicas already replaced stay on the new revision; the rest stay as they are.

    Examples:
      fleet rollout pause web
      fleet rollout resume web --wait"""
    with conn.client() as client:
        client.rollout_pause(app_name, paused=True)
    console.print(safe(f"app/{app_name} rollout paused"))


@rollout_app.command("resume")
@connected
def rollout_resume(
    app_name: AppArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = "10m",
    conn: Connection = CONNECTION,
) -> None:
    """Carry on with APP's paused rollout.

    Examples:
      fleet rollout resume web
      fleet rollout resume web --wait     # exit 1 if the rollout fails"""
    seconds = duration_option("--timeout", timeout)
    with conn.client() as client:
        info = client.rollout_pause(app_name, paused=False)
        console.print(safe(f"app/{app_name} rollout resumed"))
        if wait:
            # The revision being rolled out when it was paused.
            exit_with(wait_for_rollout(client, app_name, info.revision, seconds, Format.table))


@rollout_app.command("restart")
@connected
def rollout_restart(
    app_name: AppArg,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = "10m",
    conn: Connection = CONNECTION,
) -> None:
    """Replace every replica of APP with a fresh container of the same spec.

    The replacement is rolled out under the app's update rules, like a new image.

    Examples:
      fleet rollout restart web
      fleet rollout status web"""
    seconds = duration_option("--timeout", timeout)
    with conn.client() as client:
        info = client.rollout_restart(app_name)
        console.print(safe(f"app/{app_name} restarting (revision {info.revision})"))
        if wait:
            exit_with(wait_for_rollout(client, app_name, info.revision, seconds, Format.table))


def _address(endpoint: pb.Endpoint) -> str:
    if not endpoint.address:
        return "-"
    host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
    return f"{host}:{endpoint.host_port}"


def _endpoint_rows(found: Sequence[pb.Endpoint]) -> list[list[str]]:
    return [
        [
            e.app,
            str(e.slot),
            e.host,
            _address(e),
            f"{e.container_port}/{e.protocol}",
            str(e.revision),
        ]
        for e in found
    ]


_ENDPOINT_COLUMNS = ["APP", "SLOT", "HOST", "ADDRESS", "CONTAINER PORT", "REVISION"]


def _print_change(app: str, change: pb.EndpointList, output: Format) -> None:
    """One change of a watch: a JSON line, a YAML document, or a titled table ("app"
    is "" when the watch follows every app)."""
    found = list(change.endpoints)
    if output == Format.json:
        document = {"app": app, "version": change.version, "endpoints": [to_dict(e) for e in found]}
        print(json.dumps(document, separators=(",", ":")), flush=True)
    elif output == Format.yaml:
        document = {"app": app, "version": change.version, "endpoints": [to_dict(e) for e in found]}
        print("---\n" + yaml.safe_dump(document, sort_keys=False), end="", flush=True)
    else:
        title = app or "every app"
        console.print(safe(f"# {title}: {len(found)} endpoint(s), version {change.version}"))
        print_records(found, output, _ENDPOINT_COLUMNS, _endpoint_rows(found))
        console.file.flush()


@connected
def endpoints(
    app_name: Annotated[
        str,
        typer.Argument(
            metavar="[APP]", help="The app; every app's endpoints without it.", show_default=False
        ),
    ] = "",
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="Print the whole list now, then again each time it changes, until "
            "Ctrl-C. With -o json each list is ONE line, a JSON document "
            '{"app", "version", "endpoints": [...]} (version rises with each change): '
            "follow it line by line from a script. A broken stream reconnects to "
            "another --server.",
        ),
    ] = False,
) -> None:
    """Where APP answers (every app, without APP): host address and published port of
    each available replica.

    For pointing a load balancer or a client at the app (--watch to follow it). Edge
    hosts (agent --ingress) do this by themselves: see `fleet describe app`.

    Examples:
      fleet endpoints web
      fleet endpoints --watch -o json"""
    with conn.client() as client:
        if watch:
            try:
                for change in client.watch_endpoints(app_name):
                    _print_change(app_name, change, output)
            except KeyboardInterrupt:
                raise typer.Exit(130) from None  # Ctrl-C: the usual end of a watch
            return
        found = client.endpoints(app_name)
    print_records(found, output, _ENDPOINT_COLUMNS, _endpoint_rows(found))


class JobSource(Protocol):
    def apps(self, name: str = "") -> list[pb.AppInfo]: ...


def wait_for_job(
    client: JobSource, app: str, timeout: float, *, poll_interval: float = POLL_INTERVAL
) -> int:
    """Poll a job until it is complete (0) or failed (1), or ``timeout`` passes (1)."""
    ends = time.monotonic() + timeout
    said = ""
    while True:
        [info] = client.apps(app)
        job = info.job
        line = (
            f"job/{app}: {job.succeeded}/{job.completions} succeeded, "
            f"{job.running} running, {job.failed} failed"
        )
        if line != said:
            err_console.print(safe(line))
            said = line
        if job.state == "complete":
            console.print(safe(f"job/{app} complete"))
            return EXIT_COMPLETE
        if job.state == "failed":
            print_error(f"job/{app} failed: {job.message}")
            return EXIT_FAILED
        if time.monotonic() > ends:
            print_error(f"job/{app} still {job.state} after {_human_seconds(timeout)}")
            return EXIT_FAILED
        time.sleep(poll_interval)


@connected
def wait(
    app_name: AppArg,
    timeout: TimeoutOpt = "10m",
    conn: Connection = CONNECTION,
) -> None:
    """Wait for APP: a job until it completes (exit 1 if it failed), any other app until
    its rollout is complete (like `fleet rollout status`). For pipelines: run a
    migration job, `fleet wait` for it, then roll out.

    Examples:
      fleet apply -f migrate.yaml && fleet wait migrate && fleet apply -f web.yaml"""
    limit = duration_option("--timeout", timeout)
    with conn.client() as client:
        [info] = client.apps(app_name)
        if info.mode == "job":
            code = wait_for_job(client, app_name, limit)
        else:
            code = wait_for_rollout(client, app_name, None, limit, Format.table)
    exit_with(code)
