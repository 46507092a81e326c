"""`fleet server` and `fleet agent` started from a config file and FLEET_* variables
alone (no option on the command line but --config), against the real etcd and dockerd:
the server serves where the variable said (over the file), logs in the format the
variable chose, and the agent registers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fleet.client import FleetClient
from fleet.testing import DockerHost, EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.procs import ManagedProcess, free_port, without_fleet_env


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without FLEET_* variables, plus ``extra``."""
    env = without_fleet_env()
    return {**env, **extra}


def test_daemons_start_from_a_config_file_and_variables(
    etcd_server: EtcdServer, clean_host: DockerHost, pki: TestPKI, tmp_path: Path
) -> None:
    server_tls, agent_tls = pki.server(), pki.agent(clean_host.name)
    file_port, env_port = free_port(), free_port()
    server_toml = tmp_path / "server.toml"
    server_toml.write_text(
        f'etcd = ["{etcd_server.endpoint}"]\n'
        f'listen = "127.0.0.1:{file_port}"\n'  # FLEET_LISTEN wins over it
        'prefix = "/t-daemon-config/"\n'
        f'tls-ca = "{server_tls.ca}"\ntls_cert = "{server_tls.cert}"\n'
        f'tls-key = "{server_tls.key}"\n'
        f'secrets-key-file = "{tmp_path / "secrets.key"}"\n'
        'leader-ttl = "3s"\n'
    )
    server = ManagedProcess(
        [sys.executable, "-m", "fleet", "server"],
        tmp_path / "server.log",
        name="fleet server",
        env=clean_env(
            FLEET_CONFIG=str(server_toml),
            FLEET_LISTEN=f"127.0.0.1:{env_port}",
            FLEET_LOG_FORMAT="json",
        ),
    )
    agent_toml = tmp_path / "agent.toml"
    agent_toml.write_text(
        f'host-id = "{clean_host.name}"\nserver = ["127.0.0.1:{env_port}"]\n'
        f'docker = "{clean_host.docker_url}"\nlabel = ["zone=a"]\n'
        f'tls-ca = "{agent_tls.ca}"\ntls-cert = "{agent_tls.cert}"\n'
        f'tls-key = "{agent_tls.key}"\nstate-dir = "{tmp_path / "agent"}"\n'
        'log-format = "journal"\n'
    )
    agent = ManagedProcess(
        [sys.executable, "-m", "fleet", "agent", "--config", str(agent_toml)],
        tmp_path / "agent.log",
        name="fleet agent",
        env=clean_env(),
    )
    client = FleetClient([f"127.0.0.1:{env_port}"], pki.client_transport(), timeout=2)
    with server, agent, client:
        server.wait_ready(client.hosts, 30, what="the server to answer on FLEET_LISTEN")

        def registered() -> bool:
            return any(h.connected and h.agent_labels.get("zone") == "a" for h in client.hosts())

        agent.wait_ready(registered, 30, what="the agent to register")
        assert client.hosts()[0].host_id == clean_host.name
        # Nothing listens where the file said: the variable won.
        unused = FleetClient([f"127.0.0.1:{file_port}"], pki.client_transport(), timeout=1)
        with unused:
            assert wait_until(lambda: _refused(unused), 5, what="the file's port to be unused")
        # FLEET_LOG_FORMAT=json: every line the server logged is one JSON object.
        lines = [
            line
            for line in server.log_path.read_text().splitlines()
            if not line.startswith("--- start")
        ]
        entries = [json.loads(line) for line in lines]
        assert any("listening on" in e["message"] for e in entries), lines
        # log-format = "journal" from the agent's file: priority prefixes, no time.
        agent_lines = agent.log_path.read_text().splitlines()
        assert any(
            line.startswith("<6>fleet.agent.session: registered with") for line in agent_lines
        ), agent_lines


def _refused(client: FleetClient) -> bool:
    try:
        client.hosts()
    except Exception:
        return True
    return False
