"""The rollout commands' own logic: judging a status poll, following a rollout to its end,
and the commands' wiring. No server: a scripted stand-in answers the status polls."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from fleet.cli import rollouts
from fleet.cli.connection import Connection
from fleet.cli.main import app
from fleet.cli.output import Format
from fleet.cli.rollouts import rollout_outcome, wait_for_rollout
from fleet.errors import NotFound
from fleet.proto import fleet_pb2 as pb

runner = CliRunner()


def info(revision: int, state: str = "progressing", **fields: Any) -> pb.RolloutInfo:
    fields.setdefault("replicas", 3)
    return pb.RolloutInfo(app="web", revision=revision, state=state, **fields)


class ScriptedClient:
    """Answers rollout_status with the next scripted answer, then keeps repeating the
    last one (a rollout that stopped moving). An exception in the script is raised."""

    def __init__(self, *script: pb.RolloutInfo | Exception) -> None:
        self.script = list(script)
        self.polls = 0

    def rollout_status(self, app: str) -> pb.RolloutInfo:
        assert app == "web"
        answer = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def follow(client: ScriptedClient, target: int | None, **kwargs: Any) -> int:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("output", Format.table)
    return wait_for_rollout(client, "web", target, poll_interval=0.001, **kwargs)


# ---------------------------------------------------------------------- rollout_outcome


@pytest.mark.parametrize(
    ("polled", "outcome"),
    [
        (info(5, "complete"), "complete"),
        (info(5, "progressing"), "waiting"),
        (info(5, "progressing", paused=True), "waiting"),
        (info(5, "failed", message="crash-looping"), "failed"),
        # The controller pointed the app back at 4 after 5 failed.
        (info(4, "progressing", rollback_of=5), "rolled-back"),
        (info(4, "complete", rollback_of=5), "rolled-back"),
        # Someone else's change replaced ours.
        (info(6, "progressing"), "failed"),
        (info(6, "complete"), "failed"),
        (info(4, "progressing"), "failed"),
        (info(3, "complete", rollback_of=4), "failed"),
    ],
)
def test_rollout_outcome(polled: pb.RolloutInfo, outcome: str) -> None:
    assert rollout_outcome(polled, 5) == outcome


def test_following_a_rollback_completes_when_the_rollback_does() -> None:
    # The first poll showed the rollback to 4, so 4 is the target.
    assert rollout_outcome(info(4, "progressing", rollback_of=5), 4) == "waiting"
    assert rollout_outcome(info(4, "complete", rollback_of=5), 4) == "complete"


def test_an_older_revision_before_ours_started_is_not_yet_news() -> None:
    stale = info(4, "complete")
    assert rollout_outcome(stale, 5, started=False) == "waiting"
    assert rollout_outcome(stale, 5, started=True) == "failed"
    assert rollout_outcome(info(6, "progressing"), 5, started=False) == "failed"


# ---------------------------------------------------------------------- wait_for_rollout


def test_wait_follows_the_first_polled_revision_to_completion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = ScriptedClient(
        info(5, updated=1, available=3, total=4, updated_available=0, message="rolling out"),
        info(5, updated=2, available=3, total=4, updated_available=1, message="rolling out"),
        info(5, updated=2, available=3, total=4, updated_available=1, message="rolling out"),
        info(5, "complete", updated=3, available=3, total=3, updated_available=3),
    )
    assert follow(client, None) == 0
    assert client.polls == 4
    out = capsys.readouterr().out.splitlines()
    # Not a terminal: one line per change, none for a repeated poll.
    assert out == [
        "app/web rev 5 progressing: updated 1/3, available 3, total 4: rolling out",
        "app/web rev 5 progressing: updated 2/3, available 3, total 4: rolling out",
        "app/web: revision 5 rolled out (3/3 available)",
    ]


def test_wait_reports_a_failed_revision(capsys: pytest.CaptureFixture[str]) -> None:
    client = ScriptedClient(info(5), info(5, "failed", message="revision 5 failed: crashed"))
    assert follow(client, None) == 1
    assert "revision 5 failed: crashed" in capsys.readouterr().err


def test_wait_reports_a_rollback_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    message = "revision 5 failed: unhealthy; rolling back to revision 4"
    client = ScriptedClient(info(5), info(4, rollback_of=5, message=message))
    assert follow(client, None) == 2
    assert message in capsys.readouterr().err


def test_a_rollback_ends_with_the_cause_not_its_own_progress(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cause = "revision 5 failed: image 127.0.0.1:5000/web:v9 not found in the registry"
    done = info(4, "complete", rollback_of=5, message="revision 4 is available on all 3")
    done.failure = cause
    client = ScriptedClient(info(5), done)
    assert follow(client, 5) == 2
    assert capsys.readouterr().err.strip() == f"error: app/web: {cause}; rolled back to revision 4"


def test_without_a_target_a_rollback_seen_first_is_the_failed_rollout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``fleet set image web v5; fleet rollout status web`` fails when v5 was rolled
    back, even when the rollback had finished before the first poll."""
    done = info(4, "complete", rollback_of=5, failure="revision 5 failed: unhealthy")
    assert follow(ScriptedClient(done), None) == 2
    assert "revision 5 failed: unhealthy; rolled back to revision 4" in capsys.readouterr().err
    assert follow(ScriptedClient(info(4, rollback_of=5)), None) == 2


def test_wait_reports_a_superseded_revision(capsys: pytest.CaptureFixture[str]) -> None:
    client = ScriptedClient(info(5), info(6))
    assert follow(client, None) == 1
    assert "revision 5 superseded by revision 6" in capsys.readouterr().err


def test_wait_for_a_given_revision_outlasts_the_previous_record() -> None:
    # Right after an apply the controller may not have started revision 5 yet (or even
    # made the new app's first rollout record).
    client = ScriptedClient(
        NotFound("no rollout for web"), info(4, "complete"), info(5), info(5, "complete")
    )
    assert follow(client, 5) == 0
    assert client.polls == 4


def test_wait_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    client = ScriptedClient(info(5))
    assert follow(client, None, timeout=0.05) == 1
    assert client.polls > 1
    assert "timed out after 0.05s waiting for app/web revision 5" in capsys.readouterr().err


def test_wait_with_json_prints_only_the_final_info_on_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = ScriptedClient(info(5, message="rolling out"), info(4, rollback_of=5))
    assert follow(client, None, output=Format.json) == 2
    out, err = capsys.readouterr()
    final = json.loads(out)  # one rollout: an object
    assert (final["revision"], final["rollback_of"]) == (4, 5)
    assert "rolling out" in err


def test_wait_without_a_rollout_at_all_is_an_error() -> None:
    with pytest.raises(NotFound):
        follow(ScriptedClient(NotFound("app web not found")), None)


# ---------------------------------------------------------------------- the commands


class FakeClient(ScriptedClient):
    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def rollout_history(self, app: str) -> pb.RevisionList:
        return pb.RevisionList(
            app=app,
            revisions=[
                pb.RevisionInfo(revision=1, image="nginx:1.26", cause="apply"),
                pb.RevisionInfo(revision=2, image="nginx:1.27", cause="set image", current=True),
            ],
        )

    def endpoints(self, app: str) -> list[pb.Endpoint]:
        return [
            pb.Endpoint(
                app=app,
                slot=0,
                host="h1",
                address="10.0.0.1",
                host_port=32768,
                container_port=80,
                protocol="tcp",
                revision=2,
            )
        ]

    def set_image(self, app: str, image: str) -> pb.AppChange:
        return pb.AppChange(app=app, action="changed", fields=["image"], revision=5)


def no_sleep(seconds: float) -> None:
    pass


@contextmanager
def fake_server(client: FakeClient) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Connection, "client", lambda self: client)
        # The commands poll every 0.5 s; the script has no reason to make the test wait.
        patch.setattr(rollouts, "time", SimpleNamespace(monotonic=time.monotonic, sleep=no_sleep))
        yield


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["rollout", "set", "endpoints", "apply"]),
        (["rollout"], ["status", "history", "undo", "pause", "resume", "restart"]),
        (["set", "image"], ["APP", "IMAGE", "--wait", "--timeout", "--output"]),
        (["endpoints"], ["APP", "--output"]),
        (["apply"], ["--wait", "--timeout"]),
        (["rollout", "status"], ["--timeout", "--no-follow", "--output"]),
        (["rollout", "undo"], ["--to-revision", "--wait"]),
    ],
)
def test_help(args: list[str], expected: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for word in expected:
        assert word in result.stdout


def test_status_no_follow_json() -> None:
    with fake_server(FakeClient(info(5, message="rolling out"))):
        result = runner.invoke(app, ["rollout", "status", "web", "--no-follow", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["revision"] == 5  # one rollout: an object


def test_status_exit_code_is_the_outcome() -> None:
    client = FakeClient(info(5), info(4, rollback_of=5, message="rolling back"))
    with fake_server(client):
        result = runner.invoke(app, ["rollout", "status", "web"])
    assert result.exit_code == 2, result.output


def test_set_image_wait() -> None:
    with fake_server(FakeClient(info(4, "complete"), info(5), info(5, "complete"))):
        result = runner.invoke(app, ["set", "image", "web", "nginx:1.27", "--wait"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "app/web image set to nginx:1.27 (revision 5)"
    assert lines[-1] == "app/web: revision 5 rolled out (0/3 available)"


def test_bad_timeout_exits_2() -> None:
    result = runner.invoke(app, ["rollout", "status", "web", "--timeout", "soon"])
    assert result.exit_code == 2


def test_history_marks_the_current_revision() -> None:
    with fake_server(FakeClient(info(2))):
        result = runner.invoke(app, ["rollout", "history", "web"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["REVISION", "IMAGE", "CREATED", "CAUSE", "OUTCOME", "REASON"]
    assert rows[2][:3] == ["2", "(current)", "nginx:1.27"]


def test_endpoints_table_and_json() -> None:
    with fake_server(FakeClient(info(2))):
        table = runner.invoke(app, ["endpoints", "web"])
        as_json = runner.invoke(app, ["endpoints", "web", "-o", "json"])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[1].split() == [
        "web",
        "0",
        "h1",
        "10.0.0.1:32768",
        "80/tcp",
        "2",
    ]
    [endpoint] = json.loads(as_json.stdout)
    assert (endpoint["address"], endpoint["host_port"]) == ("10.0.0.1", 32768)


class ApplyClient(FakeClient):
    def apps(self, name: str = "") -> list[pb.AppInfo]:
        return []

    def apply(self, specs: list[Any], **kwargs: Any) -> list[pb.AppChange]:
        return [
            pb.AppChange(app="web", action="changed", fields=["image"], revision=5),
            pb.AppChange(app="db", action="unchanged", revision=2),
        ]


def test_apply_wait_follows_the_changed_apps_only(tmp_path: Path) -> None:
    spec = tmp_path / "apps.yaml"
    spec.write_text("name: web\nimage: nginx:1.27\n---\nname: db\nimage: postgres:16\n")
    # ScriptedClient fails the test if anything but web is polled.
    client = ApplyClient(info(5), info(4, rollback_of=5, message="rolled back"))
    with fake_server(client):
        result = runner.invoke(app, ["apply", "-f", str(spec), "--wait"])
    assert result.exit_code == 2, result.output
    assert result.stdout.splitlines()[:2] == ["app/web changed (image)", "app/db unchanged"]

    with fake_server(ApplyClient(info(5, "complete"))):
        result = runner.invoke(app, ["apply", "-f", str(spec), "--wait", "-o", "json"])
    assert result.exit_code == 0, result.output
