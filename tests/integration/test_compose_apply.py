"""``fleet apply -f compose.yaml`` against a real control plane, agent and dockerd: a web
app, a database with a named volume, a worker that depends on both and takes a secret;
each container read back through the Docker SDK. And a compose file with a key fleet
cannot honour stores nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from fleet.agent.runtime import LABEL_RESTART
from tests.integration.conftest import Fleet, fleet_cli, wait_containers

COMPOSE = """\
name: shop
services:
  worker:
    image: {image}
    command: ["sleep", "3600"]
    depends_on: [db, web]
    environment:
      TOKEN_FILE: /run/secrets/token
    secrets: [token]
    stop_signal: SIGINT
    deploy:
      replicas: 2
  web:
    image: {image}
    ports: ["8080"]
    environment:
      GREETING: "${{GREETING:-hello}}"
    labels:
      tier: front
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"]
      interval: 2s
      retries: 2
  db:
    image: {image}
    command: ["sh", "-c", "echo ready > /var/lib/db/marker; exec sleep 3600"]
    env_file: db.env
    volumes:
      - db_data:/var/lib/db
    deploy:
      restart_policy: {{condition: on-failure, max_attempts: 3}}
volumes:
  db_data:
secrets:
  token:
    file: ./token.txt
"""


def _write(tmp_path: Path, fleet: Fleet) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "compose.yaml").write_text(COMPOSE.format(image=fleet.image))
    (folder / "db.env").write_text("POSTGRES_DB=shop\n")
    (folder / ".env").write_text("GREETING=bonjour\n")
    (folder / "token.txt").write_text("tok-123")
    return folder / "compose.yaml"


def test_a_compose_project_applies_and_each_container_is_as_compose_says(
    fleet: Fleet, tmp_path: Path
) -> None:
    path = _write(tmp_path, fleet)
    # A dry run stores neither the apps nor the secret it would store first.
    dry = fleet_cli(
        "apply", "-f", str(path), "--dry-run", server=fleet.server.address, pki=fleet.pki
    )
    assert dry.returncode == 0, dry.stderr
    assert "secret/token would be created (dry run)" in dry.stderr
    assert "app/worker created (dry run)" in dry.stdout
    assert fleet.client.apps() == [] and fleet.client.secrets() == []
    done = fleet_cli("apply", "-f", str(path), server=fleet.server.address, pki=fleet.pki)
    assert done.returncode == 0, done.stderr
    # The secret was stored from its file, scoped to the one app that uses it.
    assert "secret/token created from ./token.txt" in done.stderr
    created = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("app/")}
    assert created == {"app/db", "app/web", "app/worker"}
    # Dependencies first: the worker, first in the file, after db and web.
    converted = subprocess.run(
        [sys.executable, "-m", "fleet", "convert", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    names = [line for line in converted.stdout.splitlines() if line.startswith("name: ")]
    assert names == ["name: db", "name: web", "name: worker"]
    [info] = fleet.client.secrets("token")
    assert list(info.scope.apps) == ["worker"]

    [web] = wait_containers(fleet, "web", 1)
    [db] = wait_containers(fleet, "db", 1)
    workers = wait_containers(fleet, "worker", 2)

    def env(container: object) -> dict[str, str]:
        pairs = container.attrs["Config"]["Env"]  # type: ignore[attr-defined]
        return dict(p.split("=", 1) for p in pairs)

    assert env(web)["GREETING"] == "bonjour"  # ${GREETING:-hello} from the .env beside it
    assert web.attrs["Config"]["Labels"]["tier"] == "front"
    assert web.attrs["Config"]["Labels"]["com.docker.compose.project"] == "shop"
    assert web.attrs["Config"]["Healthcheck"]["Test"] == [
        "CMD",
        "/bin/sh",
        "-c",
        "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1",
    ]
    assert "8080/tcp" in web.attrs["HostConfig"]["PortBindings"]

    assert env(db)["POSTGRES_DB"] == "shop"  # from env_file
    [mount] = [m for m in db.attrs["Mounts"] if m["Destination"] == "/var/lib/db"]
    assert (mount["Type"], mount["Name"]) == ("volume", "shop_db_data")  # compose's name
    assert db.attrs["Config"]["Labels"][LABEL_RESTART] == "on-failure:3"
    marker = db.exec_run(["cat", "/var/lib/db/marker"])
    assert marker.output == b"ready\n"

    for worker in workers:
        # TOKEN_FILE named the secret's file: the worker gets the value in TOKEN.
        assert env(worker)["TOKEN"] == "tok-123" and "TOKEN_FILE" not in env(worker)
        assert worker.exec_run(["sh", "-c", "echo $TOKEN"]).output == b"tok-123\n"
        assert worker.attrs["Config"]["StopSignal"] == "SIGINT"
        assert worker.attrs["Config"]["Labels"][LABEL_RESTART] == "always"
    # Compose's default network: each on the project's, where the worker reaches db by name.
    assert "fleet-shop-default" in workers[0].attrs["NetworkSettings"]["Networks"]
    reach = workers[0].exec_run(["ping", "-c", "1", "-W", "2", "db"])
    assert reach.exit_code == 0, reach.output

    # Re-applying changes nothing and leaves the stored secret alone.
    again = fleet_cli("apply", "-f", str(path), server=fleet.server.address, pki=fleet.pki)
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stderr
    assert all("unchanged" in line for line in again.stdout.splitlines() if line.strip())


def test_an_unsupported_key_stores_nothing_unless_ignored(fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            services:
              web:
                image: {fleet.image}
                container_name: my-web
            """
        )
    )
    refused = fleet_cli("apply", "-f", str(path), server=fleet.server.address, pki=fleet.pki)
    assert refused.returncode == 2
    assert f"{path}:4: services.web.container_name: fleet names" in refused.stderr
    assert "--ignore-unsupported" in refused.stderr
    assert fleet.client.apps() == []
    done = fleet_cli(
        "apply",
        "-f",
        str(path),
        "--ignore-unsupported",
        "-o",
        "json",
        server=fleet.server.address,
        pki=fleet.pki,
    )
    assert done.returncode == 0, done.stderr
    assert "ignored: " in done.stderr and "container_name" in done.stderr
    [change] = json.loads(done.stdout)
    assert change["app"] == "web"
    wait_containers(fleet, "web", 1)
