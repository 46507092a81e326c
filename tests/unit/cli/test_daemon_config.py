"""Where `fleet server`'s and `fleet agent`'s options come from: a flag, its FLEET_*
variable, the --config file, the default, in that order; and what a bad file says.

The daemons are not started: their entry points are replaced by fakes that keep the
config the command built from its options."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleet.agent import AgentConfig
from fleet.agent.hostcontainer import ContainerRunner
from fleet.cli.daemonconfig import Setting, read_config
from fleet.cli.main import app
from fleet.controlplane.server import ServerConfig

# Wide: rich wraps error panels at the width, and tmp paths are long (under xdist too).
runner = CliRunner(env={"COLUMNS": "400"})


class Built:
    """The configs the commands built."""

    server: ServerConfig | None = None
    agent: AgentConfig | None = None
    runner: object = None  # where the agent's host commands run (None: processes)
    launcher: object = None  # how an edge's HAProxy starts (None: a process)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Built:
    for name in list(os.environ):
        if name.startswith("FLEET_") or name == "NOTIFY_SOCKET":
            monkeypatch.delenv(name)
    found = Built()

    async def run_server(config: ServerConfig, **_: Any) -> None:
        found.server = config

    class Agent:
        def __init__(
            self, config: AgentConfig, runtime: object, runner: object = None, **_: object
        ) -> None:
            found.agent = config
            found.runner = runner

        async def run_until(self, *_: object) -> None:
            return None

    class EdgeProxy:  # no HAProxy: only the configuration is under test
        def __init__(self, listen: str, state_dir: Path, launcher: object = None) -> None:
            found.launcher = launcher

        def update(self, config: object) -> None:
            pass

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

    monkeypatch.setattr("fleet.controlplane.server.run_server", run_server)
    monkeypatch.setattr("fleet.agent.edgeproxy.EdgeProxy", EdgeProxy)
    monkeypatch.setattr("fleet.agent.Agent", Agent)
    monkeypatch.setattr("fleet.agent.DockerRuntime", lambda url: None)
    monkeypatch.setattr("fleet.cli.servercmd.daemon_logging", lambda *_: False)
    monkeypatch.setattr("fleet.cli.agentcmd.daemon_logging", lambda *_: False)
    return found


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def server_config(built: Built, *args: str, env: dict[str, str] | None = None) -> ServerConfig:
    result = invoke("server", *args, env=env)
    assert result.exit_code == 0, result.output
    assert built.server is not None
    return built.server


def agent_config(built: Built, *args: str, env: dict[str, str] | None = None) -> AgentConfig:
    result = invoke("agent", *args, env=env)
    assert result.exit_code == 0, result.output
    assert built.agent is not None
    return built.agent


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_a_flag_wins_over_its_variable_which_wins_over_the_file(
    built: Built, tmp_path: Path
) -> None:
    config = toml(
        tmp_path,
        'etcd = "10.0.0.1:2379,10.0.0.2:2379"\nlisten = "0.0.0.0:7400"\nprefix = "/file/"\n'
        "insecure = true\n",
    )
    got = server_config(
        built,
        "--config",
        str(config),
        "--prefix",
        "/flag/",
        env={"FLEET_LISTEN": "127.0.0.1:9000", "FLEET_PREFIX": "/env/"},
    )
    assert list(got.etcd) == ["10.0.0.1:2379", "10.0.0.2:2379"]  # the file
    assert got.listen == "127.0.0.1:9000"  # the variable over the file
    assert got.prefix == "/flag/"  # the flag over both
    assert got.transport.insecure  # a TOML boolean
    assert got.leader_ttl == 4  # the default


def test_fleet_config_names_the_file(built: Built, tmp_path: Path) -> None:
    config = toml(tmp_path, 'insecure = true\nlisten = "127.0.0.1:7555"\n')
    got = server_config(built, env={"FLEET_CONFIG": str(config)})
    assert got.listen == "127.0.0.1:7555"


def test_every_kind_of_value_from_the_file(built: Built, tmp_path: Path) -> None:
    key = tmp_path / "secrets.key"
    config = toml(
        tmp_path,
        f"""
        etcd = ["10.0.0.1:2379", "10.0.0.2:2379"]   # an array joins as a comma list
        tls_ca = "/etc/fleet/pki/ca.crt"            # underscores or dashes
        tls-cert = "/etc/fleet/pki/server.crt"
        tls-key = "/etc/fleet/pki/server.key"
        etcd-max-txn-ops = 256
        max-host-cpus = 8                           # an integer where a number goes
        metrics-listen = "127.0.0.1:7401"
        secrets-key-file = "{key}"
        log-format = "json"
        """.replace("\n        ", "\n"),
    )
    got = server_config(built, "--config", str(config))
    assert list(got.etcd) == ["10.0.0.1:2379", "10.0.0.2:2379"]
    assert got.transport.tls is not None
    assert got.transport.tls.ca == Path("/etc/fleet/pki/ca.crt")
    assert got.transport.tls.key == Path("/etc/fleet/pki/server.key")
    assert got.etcd_max_txn_ops == 256
    assert got.host_limits.cpus == 8.0
    assert got.metrics_listen == "127.0.0.1:7401"
    # The server's start makes a missing key, and only for a pool that has none yet.
    assert got.secrets_key == key and not key.exists()


def test_the_images_variable_puts_host_commands_in_sibling_containers(built: Built) -> None:
    agent_config(built, "--host-id", "h1", "--insecure")
    assert built.runner is None  # processes of the agent's own
    env = {"FLEET_HOST_COMMANDS_IN": "container", "FLEET_HOST_COMMAND_PID": "42"}
    agent_config(built, "--host-id", "h1", "--insecure", env=env)
    assert isinstance(built.runner, ContainerRunner)
    assert (built.runner.host_id, built.runner.image, built.runner.target_pid) == ("h1", "", 42)


def test_the_agents_lists_booleans_and_servers(built: Built, tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        'host-id = "web-1"\nserver = ["cp1:7400", "cp2:7400"]\nlabel = ["zone=a", "disk=ssd"]\n'
        'allow-cap = ["NET_ADMIN"]\nallow-host-commands = true\ninsecure = true\ncpus = 2\n'
        f'state-dir = "{tmp_path}/state"\n',
    )
    got = agent_config(built, "--config", str(config), env={"FLEET_LABEL": "zone=b"})
    assert got.host_id == "web-1"
    assert got.servers == ["cp1:7400", "cp2:7400"]
    assert got.labels == {"zone": "b"}  # the variable replaces the file's list
    assert got.policy.allow_capabilities == ["NET_ADMIN"]
    assert got.allow_host_commands is True
    assert got.cpus == 2.0
    assert got.state_dir == tmp_path / "state"


def test_the_variables_the_cli_already_read_still_work(built: Built, tmp_path: Path) -> None:
    env = {
        "FLEET_SERVER": "cp1:7400,cp2:7400",
        "FLEET_TLS_CA": "/pki/ca.crt",
        "FLEET_TLS_CERT": "/pki/agent.crt",
        "FLEET_TLS_KEY": "/pki/agent.key",
        "FLEET_HOST_ID": "h7",
        "FLEET_STATE_DIR": str(tmp_path),
    }
    got = agent_config(built, env=env)
    assert got.servers == ["cp1:7400", "cp2:7400"]
    assert got.host_id == "h7"
    assert got.transport.tls is not None
    assert (got.transport.tls.ca, got.transport.tls.cert) == (
        Path("/pki/ca.crt"),
        Path("/pki/agent.crt"),
    )


def test_the_host_id_defaults_to_the_short_host_name(built: Built, tmp_path: Path) -> None:
    got = agent_config(built, "--insecure", "--state-dir", str(tmp_path))
    assert got.host_id == socket.gethostname().split(".")[0].lower()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('tls-cas = "x"\n', "unknown key 'tls-cas'; did you mean 'tls-ca'"),
        ("frobnicate = 1\n", "unknown key 'frobnicate'; the keys are the options"),
        ('insecure = "yes"\n', "'insecure' must be a boolean (true or false), not the string"),
        ('etcd-max-txn-ops = "256"\n', "'etcd-max-txn-ops' must be an integer, not the string"),
        ("listen = 7400\n", "'listen' must be a string, not the integer 7400"),
        ("max-host-cpus = true\n", "'max-host-cpus' must be a number, not the boolean"),
        ('etcd = ["a:1", 2]\n', "'etcd' must be a string or an array of strings"),
        ('tls-ca = "a"\ntls_ca = "b"\n', "'tls-ca' and 'tls_ca' are the same option"),
        ("[listen]\nport = 1\n", "'listen' must be a string, not the table"),
    ],
)
def test_a_bad_key_or_value_names_the_file_and_key(
    built: Built, tmp_path: Path, text: str, expected: str
) -> None:
    config = toml(tmp_path, text)
    result = invoke("server", "--config", str(config))
    assert result.exit_code == 2
    message = " ".join(result.output.replace("│", " ").split())
    assert f"Invalid value for --config: {config}: {expected}" in message, message
    assert built.server is None


def test_a_list_must_be_an_array(built: Built, tmp_path: Path) -> None:
    config = toml(tmp_path, 'label = "zone=a"\n')
    result = invoke("agent", "--config", str(config))
    message = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2
    assert "'label' must be an array of strings, not the string 'zone=a'" in message


def test_invalid_toml_names_the_file_and_line(built: Built, tmp_path: Path) -> None:
    config = toml(tmp_path, 'insecure = true\nlisten = "127.0.0.1\n')
    result = invoke("server", env={"FLEET_CONFIG": str(config)})
    message = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2
    assert f"Invalid value for FLEET_CONFIG: {config} is not valid TOML" in message
    assert "at line 2" in message


def test_an_unreadable_file_is_named(built: Built, tmp_path: Path) -> None:
    result = invoke("server", "--config", str(tmp_path / "missing.toml"))
    message = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2
    assert f"cannot read the config file {tmp_path / 'missing.toml'}" in message


def test_a_value_the_option_refuses_names_the_file_and_key(built: Built, tmp_path: Path) -> None:
    config = toml(tmp_path, "insecure = true\netcd-max-txn-ops = 8\n")
    result = invoke("server", "--config", str(config))
    message = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2
    assert f"Invalid value for 'etcd-max-txn-ops' in {config}:" in message
    # The same value from a flag names the flag (and its variable).
    result = invoke("server", "--insecure", "--etcd-max-txn-ops", "8")
    message = " ".join(result.output.replace("│", " ").split())
    assert "Invalid value for '--etcd-max-txn-ops' (env var: 'FLEET_ETCD_MAX_TXN_OPS')" in message


def test_help_shows_every_options_variable(built: Built) -> None:
    result = runner.invoke(app, ["server", "--help"], env={"COLUMNS": "250"})
    for variable in (
        "FLEET_ETCD",
        "FLEET_TLS_CA",
        "FLEET_SECRETS_KEY_FILE",
        "FLEET_METRICS_LISTEN",
        "FLEET_LOG_FORMAT",
        "FLEET_CONFIG",
    ):
        assert f"env var: {variable}]" in result.output, variable


def test_read_config_checks_each_kind(tmp_path: Path) -> None:
    settings = {
        "flag": Setting("flag", "flag", bool),
        "count": Setting("count", "count", int),
        "ratio": Setting("ratio", "ratio", float),
        "names": Setting("names", "names", list),
        "server": Setting("server", "server_", str),
    }
    path = toml(tmp_path, 'flag = false\ncount = 3\nratio = 1\nnames = []\nserver = ["a:1"]\n')
    assert read_config(path, settings) == {
        "flag": False,
        "count": 3,
        "ratio": 1.0,
        "names": [],
        "server_": "a:1",
    }


def test_the_clis_token_is_never_a_daemons_credential(built: Built, tmp_path: Path) -> None:
    """FLEET_TOKEN (for the CLI) in a daemon's environment must not turn its TLS off."""
    env = {"FLEET_TOKEN": "fleet_abc", "FLEET_TLS_CA": "/pki/ca.crt"}
    env |= {"FLEET_TLS_CERT": "/pki/server.crt", "FLEET_TLS_KEY": "/pki/server.key"}
    got = server_config(built, env=env)
    assert got.transport.token is None and got.transport.tls is not None
    assert got.transport.tls.cert == Path("/pki/server.crt")


def test_an_edge_hosts_ingress_from_the_flag_the_variable_or_the_file(
    built: Built, tmp_path: Path
) -> None:
    base = ("--insecure", "--host-id", "edge-1", "--state-dir", str(tmp_path))
    assert agent_config(built, *base).ingress == ""  # not an edge
    assert agent_config(built, *base, "--ingress", "0.0.0.0:80").ingress == "0.0.0.0:80"
    got = agent_config(built, *base, env={"FLEET_INGRESS": "[::]:8443"})
    assert got.ingress == "[::]:8443"
    config = toml(tmp_path, 'ingress = "10.0.0.5:80"\n')
    assert agent_config(built, *base, "--config", str(config)).ingress == "10.0.0.5:80"
    result = invoke("agent", *base, "--ingress", "edge:80")
    assert result.exit_code != 0
    assert "--ingress: the ingress address must be ADDR:PORT" in result.output


def test_an_edges_haproxy_runs_as_a_process_or_in_a_sibling_container(
    built: Built, tmp_path: Path
) -> None:
    from fleet.agent.edgelaunch import ContainerLauncher

    base = ("--insecure", "--host-id", "edge-1", "--state-dir", str(tmp_path))
    agent_config(built, *base, "--ingress", "0.0.0.0:80")
    assert built.launcher is None  # a process of its own session
    agent_config(built, *base, "--ingress", "0.0.0.0:80", "--edge-proxy-in", "container")
    assert isinstance(built.launcher, ContainerLauncher)
    built.launcher = None
    # The image sets FLEET_EDGE_PROXY_IN=container.
    agent_config(built, *base, "--ingress", "[::]:80", env={"FLEET_EDGE_PROXY_IN": "container"})
    assert isinstance(built.launcher, ContainerLauncher)
