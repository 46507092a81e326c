"""Option values read from text (durations, memory sizes): a bad one exits 2 before any
server is asked, with an error that names the flag it was given to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer

from fleet.cli.connection import Connection
from fleet.cli.main import main
from fleet.cli.options import share_option

BAD = "10q"


def refuse_to_connect(self: Connection) -> None:
    raise AssertionError("a bad option value must be refused before connecting")


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["drain", "h1", "--deadline", BAD], "--deadline"),
        (["drain", "h1", "--deadline", "5m", "--timeout", BAD], "--timeout"),
        (["apply", "-f", "{app}", "--timeout", BAD], "--timeout"),
        (["rollout", "status", "web", "--timeout", BAD], "--timeout"),
        (["rollout", "undo", "web", "--timeout", BAD], "--timeout"),
        (["rollout", "restart", "web", "--timeout", BAD], "--timeout"),
        (["set", "image", "web", "nginx", "--timeout", BAD], "--timeout"),
        (["wait", "web", "--timeout", BAD], "--timeout"),
        (["upgrade-hosts", "--timeout", BAD], "--timeout"),
        (["events", "--since", BAD], "--since"),
        (["server", "--insecure", "--host-down-after", BAD], "--host-down-after"),
        (["server", "--insecure", "--reschedule-after", BAD], "--reschedule-after"),
        (["server", "--insecure", "--hold-moves-when-down", BAD], "--hold-moves-when-down"),
        (["server", "--insecure", "--leader-ttl", BAD], "--leader-ttl"),
        (["server", "--insecure", "--heartbeat-interval", BAD], "--heartbeat-interval"),
        (["server", "--insecure", "--compact-interval", BAD], "--compact-interval"),
        (["server", "--insecure", "--max-host-memory", BAD], "--max-host-memory"),
        (["agent", "--host-id", "h1", "--insecure", "--memory", BAD], "--memory"),
        (["agent", "--host-id", "h1", "--insecure", "--image-gc-after", BAD], "--image-gc-after"),
    ],
)
def test_a_bad_value_is_refused_naming_its_flag(
    args: list[str],
    flag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app_file = tmp_path / "app.yaml"
    app_file.write_text("name: web\nimage: nginx\n")
    monkeypatch.setattr(Connection, "client", refuse_to_connect)
    monkeypatch.setattr(sys, "argv", ["fleet", *(a.format(app=app_file) for a in args)])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"error: {flag} '{BAD}': "), line


@pytest.mark.parametrize(
    ("text", "share"),
    [("55%", 0.55), ("100%", 1.0), (" 7.5% ", 0.075), ("off", None), ("OFF", None)],
)
def test_a_share_is_a_percentage_or_off(text: str, share: float | None) -> None:
    assert share_option("--hold-moves-when-down", text) == share


@pytest.mark.parametrize("text", ["0%", "101%", "55", "0.55", "%", "x%", "-5%"])
def test_a_share_out_of_range_is_refused(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as ended:
        share_option("--hold-moves-when-down", text)
    assert ended.value.exit_code == 2
    assert "give a percentage of hosts above 0 and at most 100%" in capsys.readouterr().err
