"""`fleet context`: add, use, list, remove, and what a command connects with (flags over
FLEET_* variables over the context)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleet.cli.connection import CONNECTION
from fleet.cli.main import app
from fleet.contexts import Contexts
from fleet.errors import NotFound
from tests.helpers import documented_json

runner = CliRunner(env={"COLUMNS": "400"})


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("FLEET_SERVER", "FLEET_TLS_CA", "FLEET_TLS_CERT", "FLEET_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("FLEET_TOKEN", "FLEET_PKI_DIR", "FLEET_CONTEXT", "FLEET_READ_SERVER"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.toml"
    monkeypatch.setenv("FLEET_CLI_CONFIG", str(path))
    pki = tmp_path / "pki"
    pki.mkdir()
    for name in (
        "ca.crt",
        "client-admin.crt",
        "client-admin.key",
        "client-ci.crt",
        "client-ci.key",
    ):
        (pki / name).write_text("x")
    return path


def test_contexts_are_added_used_listed_and_removed(config: Path) -> None:
    pki = config.parent / "pki"
    added = runner.invoke(
        app, ["context", "add", "prod", "-s", "cp1:7400,cp2:7400", "--pki", str(pki)]
    )
    assert added.exit_code == 0, added.output
    assert "(current)" in added.output  # the first one
    staged = ["context", "add", "stage", "-s", "st:7400", "--pki", str(pki), "--client", "ci"]
    assert runner.invoke(app, staged).exit_code == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    listed = json.loads(runner.invoke(app, ["context", "list", "-o", "json"]).stdout)
    keys = documented_json()["fleet context list -o json"][1]  # docs/cli-json.md: an interface
    assert all(set(row) == keys for row in listed)
    assert [(c["name"], c["current"]) for c in listed] == [("prod", True), ("stage", False)]
    assert listed[1]["tls_cert"] == str(pki / "client-ci.crt")
    assert runner.invoke(app, ["context", "use", "stage"]).exit_code == 0
    assert Contexts.load().current == "stage"
    assert runner.invoke(app, ["context", "remove", "stage"]).exit_code == 0
    assert Contexts.load().current == "" and list(Contexts.load().items) == ["prod"]
    missing = runner.invoke(app, ["context", "use", "nope"])
    assert missing.exit_code != 0 and "no context 'nope'" in missing.output


def test_a_context_refuses_files_that_are_not_there(config: Path) -> None:
    bad = runner.invoke(app, ["context", "add", "x", "-s", "a:1", "--pki", str(config.parent)])
    assert bad.exit_code != 0 and "does not exist" in bad.output
    assert not config.exists()  # nothing written


def test_flags_win_over_variables_which_win_over_the_context(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = config.parent / "pki"
    runner.invoke(app, ["context", "add", "prod", "-s", "cp1:7400", "--pki", str(pki)])
    chosen = CONNECTION.resolved()
    assert (chosen.server, chosen.tls_cert) == ("cp1:7400", pki / "client-admin.crt")
    flagged = type(CONNECTION)(**{**CONNECTION.__dict__, "server": "other:1"}).resolved()
    assert flagged.server == "other:1" and flagged.tls_cert == pki / "client-admin.crt"
    monkeypatch.setenv("FLEET_SERVER", "env:2")
    monkeypatch.setenv("FLEET_PKI_DIR", str(pki))
    from_env = CONNECTION.resolved()
    assert (from_env.server, from_env.tls_cert) == ("env:2", None)  # the env's credentials
    with pytest.raises(NotFound, match="no context 'nope'"):
        type(CONNECTION)(**{**CONNECTION.__dict__, "context": "nope"}).resolved()


def test_reads_go_to_the_contexts_read_port_only_with_its_servers(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = config.parent / "pki"
    add = ["context", "add", "prod", "-s", "cp1:7400", "--pki", str(pki)]
    added = runner.invoke(app, [*add, "--read-server", "cp1:7402"])
    assert added.exit_code == 0, added.output
    assert Contexts.load().items["prod"].read_server == "cp1:7402"
    with CONNECTION.client() as client:
        assert (client.servers, client.read_servers) == (["cp1:7400"], ["cp1:7402"])
    # Another server given: the context's read port is not its.
    flagged = type(CONNECTION)(**{**CONNECTION.__dict__, "server": "other:1"})
    with flagged.client() as client:
        assert (client.servers, client.read_servers) == (["other:1"], [])
    monkeypatch.setenv("FLEET_READ_SERVER", "other:2")
    with flagged.client() as client:
        assert client.read_servers == ["other:2"]
    # A token context has no read port (it takes certificates), and a bad address is
    # refused when the context is added.
    token = ["context", "add", "ci", "-s", "cp1:7401", "--token", "fleet_x"]
    refused = runner.invoke(app, [*token, "--read-server", "cp1:7402"])
    assert refused.exit_code != 0 and "read port takes certificates" in refused.output
    bad = runner.invoke(app, [*add, "--read-server", "cp1"])
    assert bad.exit_code != 0 and "read server address 'cp1' must be HOST:PORT" in bad.output


def test_certs_issue_client_saves_a_context_that_uses_it(config: Path, tmp_path: Path) -> None:
    pki = tmp_path / "made"
    assert runner.invoke(app, ["certs", "init", "--dir", str(pki)]).exit_code == 0
    made = runner.invoke(
        app,
        [
            *("certs", "issue", "client", "ann", "--dir", str(pki), "--role", "viewer"),
            *("--save-context", "prod", "--server", "cp1.example:7400"),
        ],
    )
    assert made.exit_code == 0, made.output
    contexts = Contexts.load()
    prod = contexts.items["prod"]
    assert contexts.current == "prod"  # the first context becomes the current one
    assert prod.server == "cp1.example:7400"
    assert Path(prod.tls_cert) == (pki / "client-ann.crt").resolve()
    assert Path(prod.tls_key).exists() and Path(prod.tls_ca) == (pki / "ca.crt").resolve()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["agent", "h1", "--save-context", "x", "--server", "a:1"], "for client certificates"),
        (["client", "ann", "--save-context", "x"], "needs --server"),
        (["client", "ann", "--server", "a:1"], "give --save-context too"),
        (["client", "ann", "--save-context", "bad name", "--server", "a:1"], "context name"),
    ],
)
def test_certs_issue_refuses_a_context_it_cannot_save(
    config: Path, tmp_path: Path, args: list[str], said: str
) -> None:
    pki = tmp_path / "made"
    assert runner.invoke(app, ["certs", "init", "--dir", str(pki)]).exit_code == 0
    refused = runner.invoke(app, ["certs", "issue", *args, "--dir", str(pki)])
    assert refused.exit_code == 2 and said in refused.output, refused.output
    assert not (pki / "client-ann.crt").exists()  # nothing issued before the refusal
    assert Contexts.load().items == {}
