"""kubectl's and docker's daily habits through the real CLI against a real control plane
and agent: -l selectors, -o name, --no-headers, ps -q, -w watches, logs --since and
--previous, rollout resume --wait and shell completion."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

from fleet.spec import load_documents
from fleet.testing.procs import without_fleet_env
from tests.integration.conftest import Fleet, fleet_cli, wait_containers, wait_until


def _cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return fleet_cli(*args, server=fleet.server.address, pki=fleet.pki)


def _apply(fleet: Fleet, text: str) -> None:
    fleet.client.apply(load_documents(text))


def _app(name: str, image: str, team: str, replicas: int = 1) -> str:
    return f"name: {name}\nimage: {image}\nreplicas: {replicas}\nlabels: {{team: {team}}}\n"


def test_selectors_and_output_shapes(fleet: Fleet) -> None:
    _apply(
        fleet,
        "\n---\n".join(
            [_app("wa", fleet.image, "web"), _app("wb", fleet.image, "web"),
             _app("ba", fleet.image, "batch")]
        ),
    )  # fmt: skip
    for name in ("wa", "wb", "ba"):
        wait_containers(fleet, name, 1)

    names = _cli(fleet, "get", "apps", "-l", "team=web", "-o", "name")
    assert names.returncode == 0, names.stderr
    assert names.stdout.split() == ["app/wa", "app/wb"]
    others = _cli(fleet, "get", "apps", "-l", "team!=web,team", "-o", "name")
    assert others.stdout.split() == ["app/ba"]
    bare = _cli(fleet, "get", "apps", "-l", "team=web", "--no-headers")
    assert [line.split()[0] for line in bare.stdout.splitlines()] == ["wa", "wb"]
    none = _cli(fleet, "get", "apps", "-l", "team=ops")
    assert none.returncode == 0 and none.stdout == ""
    assert "No resources found" in none.stderr
    bad = _cli(fleet, "get", "apps", "-l", "team==x")
    assert bad.returncode == 2 and "bad term" in bad.stderr

    # Hosts: admin labels and agent.* as constraints see them; -o name.
    assert _cli(fleet, "label", "host", fleet.host.name, "rack=r9").returncode == 0
    hosts = _cli(fleet, "get", "hosts", "-l", "rack=r9", "-o", "name")
    assert hosts.stdout.split() == [f"host/{fleet.host.name}"]
    assert _cli(fleet, "get", "hosts", "-l", "rack=r1", "-o", "name").stdout == ""

    # Containers and ps: by their app's labels; -q gives the ids Docker has.
    ids = _cli(fleet, "ps", "-q", "-l", "team=web")
    docker_ids = {
        c["Id"][:12]
        for name in ("wa", "wb")
        for c in fleet.docker.api.containers(filters={"label": f"fleet.app={name}"})
    }
    assert ids.returncode == 0 and set(ids.stdout.split()) == docker_ids
    table = _cli(fleet, "get", "containers", "-l", "team=batch", "--no-headers")
    assert [line.split()[0] for line in table.stdout.splitlines()] == ["ba.0"]
    assert _cli(fleet, "ps", "-l", "team=web", "-o", "name").stdout.split() == [
        "container/wa.0",
        "container/wb.0",
    ]

    # scale and delete take -l; selecting nothing is an error there.
    scaled = _cli(fleet, "scale", "-l", "team=web", "2")
    assert scaled.returncode == 0, scaled.stderr
    assert {a.name: a.desired for a in fleet.client.apps()} == {"wa": 2, "wb": 2, "ba": 1}
    assert _cli(fleet, "scale", "-l", "team=ops", "2").returncode == 1
    nothing = _cli(fleet, "delete", "app", "-l", "team=ops")
    assert nothing.returncode == 1 and "no app matches" in nothing.stderr
    gone = _cli(fleet, "delete", "app", "-l", "team=web")
    assert gone.returncode == 0, gone.stderr
    assert "app/wa deleted" in gone.stdout and "app/wb deleted" in gone.stdout
    assert [a.name for a in fleet.client.apps()] == ["ba"]

    # cordon takes -l too (the admin label set above).
    cordoned = _cli(fleet, "cordon", "-l", "rack=r9")
    assert cordoned.returncode == 0 and f"host/{fleet.host.name} cordoned" in cordoned.stdout
    assert _cli(fleet, "cordon", "-l", "rack=r1").returncode == 1
    assert fleet.client.hosts(fleet.host.name)[0].state == "cordoned"
    assert _cli(fleet, "uncordon", "-l", "rack=r9").returncode == 0
    assert fleet.client.hosts(fleet.host.name)[0].state == "ready"


def _env(fleet: Fleet, **extra: str) -> dict[str, str]:
    fleet.pki.client()
    env = without_fleet_env()
    env["FLEET_PKI_DIR"] = str(fleet.pki.dir)
    env["FLEET_SERVER"] = fleet.server.address
    env.update(extra)
    return env


def _lines(process: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The process's stdout lines as they come (read on a thread, waited on with a
    deadline)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def _wait_line(lines: queue.Queue[str], wanted: str, timeout: float) -> list[str]:
    seen: list[str] = []
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        try:
            line = lines.get(timeout=max(0.0, ends - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if wanted in line:
            return seen
    raise AssertionError(f"no line with {wanted!r} in {timeout}s; saw {seen}")


def test_watch_completion_and_logs_since_previous(fleet: Fleet) -> None:
    # (One test, so one control plane and agent start for all three: the file stays fast.)
    _apply(fleet, _app("ww", fleet.image, "web"))
    wait_containers(fleet, "ww", 1)
    command = [sys.executable, "-m", "fleet", "get", "apps", "-w", "-l", "team=web"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(fleet)
    ) as process:
        try:
            lines, reader = _lines(process)
            first = _wait_line(lines, "ww", 20)
            assert first[0].startswith("NAME") and "1/1" in first[-1]
            fleet.client.scale("ww", 2)
            # The row again, changed (desired 2); the header only once.
            changed = _wait_line(lines, "/2", 30)
            assert changed[-1].split()[0] == "ww"
            assert not any(line.startswith("NAME") for line in changed)
            process.send_signal(signal.SIGINT)
            assert process.wait(10) == 130
            reader.join(10)  # the rest of stdout read before the pipes close
            assert process.stderr is not None
            assert "Traceback" not in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
    _check_completion(fleet)
    _check_logs_since_and_previous(fleet)


def _check_completion(fleet: Fleet) -> None:
    """The completion script for each shell, and names completed from the pool."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "fleet", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, env=_env(fleet))

    script = run("completion", "bash")
    assert script.returncode == 0
    assert "_FLEET_COMPLETE=complete_bash" in script.stdout
    assert "complete -o default -F _fleet_completion fleet" in script.stdout
    for shell in ("zsh", "fish"):
        assert "_FLEET_COMPLETE" in run("completion", shell).stdout
    _apply(fleet, _app("comp-web", fleet.image, "web") + "---\n" + _app("other", fleet.image, "x"))

    def complete(words: str) -> list[str]:
        env = _env(
            fleet,
            _FLEET_COMPLETE="complete_bash",
            COMP_WORDS=words,
            COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        )
        done = subprocess.run(
            [sys.executable, "-m", "fleet"], capture_output=True, text=True, env=env, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("fleet logs comp") == ["comp-web"]
    assert sorted(complete("fleet scale ")) == ["comp-web", "other", "ww"]
    assert complete("fleet get hosts ") == [fleet.host.name]
    assert complete("fleet rollout status o") == ["other"]
    # No server there: no candidates, no noise.
    env_less = subprocess.run(
        [sys.executable, "-m", "fleet"],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **without_fleet_env(),
            "FLEET_SERVER": "127.0.0.1:1",
            "_FLEET_COMPLETE": "complete_bash",
            "COMP_WORDS": "fleet logs ",
            "COMP_CWORD": "2",
            "HOME": os.environ.get("HOME", "/root"),
        },
    )
    assert env_less.returncode == 0 and env_less.stdout.strip() == "" and env_less.stderr == ""


def _check_logs_since_and_previous(fleet: Fleet) -> None:
    """logs --since shows only the recent lines; --previous the exited container's."""
    ticker = '["sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 1; done"]'
    once = '["sh", "-c", "echo last-words; exit 3"]'
    _apply(
        fleet,
        f"name: lt\nimage: {fleet.image}\nreplicas: 1\ncommand: {ticker}\n---\n"
        f"name: lp\nimage: {fleet.image}\nreplicas: 1\nrestart: 'no'\ncommand: {once}\n",
    )
    wait_containers(fleet, "lt", 1)
    wait_until(lambda: "tick6" in _cli(fleet, "logs", "lt").stdout, 30, what="tick6")
    recent = _cli(fleet, "logs", "lt", "--since", "2s")
    assert recent.returncode == 0, recent.stderr
    ticks = [line.split("| ")[1] for line in recent.stdout.splitlines()]
    # tick0 is 6 s old or more: only the last two or three seconds' ticks are shown.
    assert ticks and "tick0" not in ticks and len(ticks) <= 4, ticks
    bad = _cli(fleet, "logs", "lt", "--since", "soon")
    assert bad.returncode == 2 and "--since" in bad.stderr

    def exited() -> bool:
        found = fleet.docker.api.containers(all=True, filters={"label": "fleet.app=lp"})
        return len(found) == 1 and found[0]["State"] == "exited"

    wait_until(exited, 30, what="lp's container to exit")
    previous = _cli(fleet, "logs", "lp/0", "--previous")
    assert previous.returncode == 0, previous.stderr
    assert "lp.0        | last-words" in previous.stdout
    none = _cli(fleet, "logs", "lt/0", "--previous")
    assert "no exited container of lt.0" in none.stdout + none.stderr

    # A rollout replaces lt's container (the agent removes the old one, and Docker's
    # log with it): --previous still shows what the replaced container said, and its
    # replacement's own lines are not in it.
    first = fleet.docker.api.containers(filters={"label": "fleet.app=lt"})[0]["Id"]
    marked = '["sh", "-c", "echo second-container; sleep 3600"]'
    _apply(fleet, f"name: lt\nimage: {fleet.image}\nreplicas: 1\ncommand: {marked}\n")

    def replaced() -> bool:
        found = fleet.docker.api.containers(all=True, filters={"label": "fleet.app=lt"})
        return [c["Id"] for c in found] != [first] and first not in {c["Id"] for c in found}

    wait_until(replaced, 60, what="lt's first container replaced and removed")
    kept = _cli(fleet, "logs", "lt/0", "--previous", "--tail", "3")
    assert kept.returncode == 0, kept.stderr
    lines = [line.split("| ")[1] for line in kept.stdout.splitlines()]
    assert len(lines) == 3 and all(line.startswith("tick") for line in lines), lines
    assert "second-container" not in kept.stdout
