"""What the CLI prints of users' files and hosts' reports: shown as written, never read
as rich markup (a stray ``[/bold]`` crashed it) and never as terminal escapes (a host
could retitle an operator's window). No server: a stand-in client answers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from fleet.cli.connection import Connection
from fleet.cli.main import app, main
from fleet.cli.output import to_dict
from fleet.errors import NotFound
from fleet.proto import fleet_pb2 as pb
from tests.unit.cli.builders import HOSTILE, SHOWN, assert_clean

runner = CliRunner()


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """``fleet ARGS`` as the installed command runs it (errors become one line)."""
    monkeypatch.setattr(sys, "argv", ["fleet", *args])
    with pytest.raises(SystemExit) as ended:
        main()
    return int(ended.value.code or 0)


# ---------------------------------------------------------------------- app files


@pytest.mark.parametrize("command", ["apply", "diff", "delete"])
@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('name: web\nimage: nginx\nports: ["abc"]\n', "([HOST:]CONTAINER[/PROTOCOL]), got 'abc'"),
        ('name: "[/bold]"\nimage: nginx\n', "got '[/bold]'"),
    ],
)
def test_spec_errors_are_shown_as_written(
    command: str,
    document: str,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The file is checked before any server is asked: exit 2 and the message."""
    path = tmp_path / "app.yaml"
    path.write_text(document)
    assert run_main(monkeypatch, command, "-f", str(path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and expected in err, err
    assert_clean(err)


def test_an_argument_with_markup_is_shown_as_written(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(monkeypatch, "get", "[/bold]") == 2
    err = capsys.readouterr().err
    assert err == "error: unknown kind '[/bold]': use apps, hosts or containers\n"


# ---------------------------------------------------------------------- hosts' reports


class HostileClient:
    """Answers every read with what a hostile agent could have made the server store."""

    def __enter__(self) -> HostileClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def events(self, **kwargs: Any) -> Iterator[pb.Event]:
        yield pb.Event(
            time="2026-01-02T03:04:05.000Z",
            source="agent",
            host="h1",
            app="web",
            slot=0,
            kind="die[/x]\x1b[2J",
            message=HOSTILE,
        )

    def top(self, **kwargs: Any) -> list[pb.TopResponse]:
        process = pb.ProcessRow(fields=["1", HOSTILE])
        return [
            pb.TopResponse(
                app="web", slot=0, host="h1", titles=["PID", "[/CMD]"], processes=[process]
            )
        ]

    def hosts(self, name: str = "") -> list[pb.HostInfo]:
        return []

    def host_list(self, name: str = "") -> pb.HostList:
        return pb.HostList(moves_held=HOSTILE)  # (the server's own text: never so, but)

    def rollout_status(self, app: str) -> pb.RolloutInfo:
        return pb.RolloutInfo(app=app, revision=2, state="failed", message=HOSTILE)

    def set_host_state(self, host: str, state: str) -> pb.HostInfo:
        raise NotFound(f"host {HOSTILE} not found")


@contextmanager
def hostile_server() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Connection, "client", lambda self: HostileClient())
        yield


def test_events_are_printed_without_markup_or_escapes() -> None:
    with hostile_server():
        result = runner.invoke(app, ["events"])
    assert result.exit_code == 0, result.output
    assert_clean(result.stdout)
    header, line = result.stdout.splitlines()
    assert header.split() == ["TIME", "HOST", "REPLICA", "KIND", "MESSAGE"]
    assert line.split()[2:4] == ["web.0", "die[/x]"]
    assert line.endswith(SHOWN)


def test_tables_show_cells_and_titles_as_written() -> None:
    with hostile_server():
        result = runner.invoke(app, ["top", "web"])
    assert result.exit_code == 0, result.output
    assert_clean(result.stdout)
    heading, titles, row = result.stdout.splitlines()
    assert heading == "web.0 on h1"
    assert titles.split() == ["PID", "[/CMD]"]
    assert row.split(maxsplit=1) == ["1", SHOWN]


def test_get_hosts_says_moves_are_held_below_a_table_only() -> None:
    """The warning goes to stderr, as written, under a table; JSON stays the list."""
    with hostile_server():
        table = runner.invoke(app, ["get", "hosts"])
        listed = runner.invoke(app, ["get", "hosts", "-o", "json"])
    assert table.exit_code == 0 and listed.exit_code == 0, table.output + listed.output
    assert_clean(table.stderr)
    assert table.stderr == f"warning: {SHOWN}\n"
    assert listed.stdout.strip() == "[]" and listed.stderr == ""


def test_a_rollout_message_is_shown_as_written() -> None:
    with hostile_server():
        result = runner.invoke(app, ["rollout", "status", "web", "--no-follow"])
    assert result.exit_code == 0, result.output
    assert_clean(result.stdout)
    assert result.stdout.rstrip("\n").endswith(f": {SHOWN}")


def test_a_server_error_is_one_clean_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Connection, "client", lambda self: HostileClient())
    assert run_main(monkeypatch, "cordon", "h1") == 1
    err = capsys.readouterr().err
    assert_clean(err)
    assert err == f"error: host {SHOWN} not found\n"


def test_a_certs_error_is_one_clean_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fleet certs`` reports through the same printer as every other command."""
    missing = tmp_path / "[/bold]\x1b]0;evil\x07.crt"
    assert run_main(monkeypatch, "certs", "show", str(missing)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_clean(err)
    assert err == f"error: cannot read {tmp_path}/[/bold].crt: No such file or directory\n"


@given(st.lists(st.sampled_from([0.1, 0.2, 0.25, 0.3, 0.7, 1.5]), max_size=40))
def test_json_has_no_float_noise(cpus: list[float]) -> None:
    """A sum the server made (reserved cpus) prints as the decimal it is."""
    total = sum(cpus, 0.0)
    shown = to_dict(pb.HostInfo(reserved=pb.Resources(cpu=total)))["reserved"]["cpu"]
    assert shown == round(total, 6)
    assert repr(shown) == repr(round(total, 6))  # 0.3, never 0.30000000000000004


def test_wide_is_refused_where_it_would_print_the_table_unchanged() -> None:
    """-o wide only where a table has wider columns (get, ps): elsewhere it is refused
    before anything connects, as kubectl refuses a format a command cannot print."""
    refused = CliRunner().invoke(app, ["describe", "app", "web", "-o", "wide"])
    assert refused.exit_code == 2 and "wide" in refused.output
    assert "'wide' is not one of" in refused.output or "Invalid value" in refused.output
