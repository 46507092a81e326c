"""Compose files to fleet apps (``fleet.spec.compose``): each service key mapped, every
key fleet cannot honour reported at its line, and five files in the style of public
sample projects converted with exactly the report expected."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleet.cli.compose import guard_project
from fleet.cli.main import app as cli
from fleet.errors import SpecError
from fleet.spec import load_documents
from fleet.spec.compose import Conversion, compose_environ, convert, is_compose

DATA = Path(__file__).parents[2] / "data" / "compose"


def _convert(text: str, **kwargs: Any) -> Conversion:
    kwargs.setdefault("project", "demo")
    return convert(textwrap.dedent(text), "compose.yaml", **kwargs)


def _app(text: str, name: str = "web", **kwargs: Any) -> dict[str, Any]:
    conversion = _convert(text, **kwargs)
    [document] = [d for d in conversion.documents if d["name"] == name]
    return document


def _report(conversion: Conversion) -> list[tuple[int | None, str]]:
    return [(p.line, p.path) for p in conversion.unsupported]


def _errors(text: str, **kwargs: Any) -> list[str]:
    with pytest.raises(SpecError) as caught:
        _convert(text, **kwargs)
    return [str(p) for p in caught.value.problems]


def _sample(name: str) -> Conversion:
    folder = DATA / name
    dotenv = folder / ".env"
    environ = compose_environ({}, dotenv.read_text() if dotenv.exists() else None)
    return convert(
        (folder / "compose.yaml").read_text(),
        "compose.yaml",
        project=name,
        environ=environ,
        read_file=lambda path: (folder / path).read_text(),
    )


# --- the five sample projects -------------------------------------------------------


def test_counter_web_and_redis() -> None:
    conversion = _sample("counter")
    assert [d["name"] for d in conversion.documents] == ["redis", "web"]  # redis first
    assert conversion.unsupported == [] and conversion.notes == []
    web = conversion.documents[1]
    assert web["ports"] == ["8000:5000"]
    assert web["env"] == {"FLASK_DEBUG": "true", "REDIS_HOST": "redis"}
    # Compose's default network: both on one, where web reaches redis by name.
    assert web["networks"] == conversion.documents[0]["networks"] == ["counter-default"]


def test_wordpress_and_mysql_with_named_volumes() -> None:
    conversion = _sample("wordpress")
    assert conversion.unsupported == []
    assert [(n.line, n.path) for n in conversion.notes] == [(14, "services.db.expose")]
    db, wordpress = conversion.documents
    # Named as compose names them, so the volumes of a compose deployment are found again.
    assert db["volumes"] == ["wordpress_db_data:/var/lib/mysql"]
    assert wordpress["volumes"] == ["wordpress_wp_data:/var/www/html"]
    assert db["command"] == "--default-authentication-plugin=mysql_native_password"
    assert db["restart"] == "always"
    assert db["env"]["MYSQL_DATABASE"] == "wordpress"
    assert wordpress["ports"] == ["80:80"]


def test_queue_worker_with_depends_on_and_a_secret() -> None:
    conversion = _sample("queue")
    assert [d["name"] for d in conversion.documents] == ["rabbitmq", "api", "worker"]
    assert [(p.line, p.path, p.message.split(":")[0]) for p in conversion.unsupported] == [
        (
            10,
            "services.api.depends_on.rabbitmq.condition",
            "fleet applies rabbitmq first but does not wait for it (service_healthy)",
        ),
    ]
    worker = conversion.documents[2]
    # API_TOKEN_FILE pointed at the secret's file: the image takes API_TOKEN itself.
    assert worker["env"] == {
        "QUEUE_URL": "amqp://rabbitmq:5672",
        "API_TOKEN": {"secret": "api-token"},
    }
    assert worker["restart"] == "on-failure:5" and worker["replicas"] == 3
    assert worker["networks"] == ["queue-backend"]
    [secret] = conversion.secrets
    assert (secret.name, secret.file, secret.apps) == ("api-token", "./api_token.txt", ("worker",))
    assert secret.command() == (
        "fleet secrets set api-token --from-file ./api_token.txt --apps worker"
    )
    rabbitmq = conversion.documents[0]
    assert rabbitmq["health"] == {
        "exec": ["/bin/sh", "-c", "rabbitmq-diagnostics -q ping"],
        "interval": "10s",
        "timeout": "5s",
        "retries": 5,
    }


def test_prometheus_and_grafana() -> None:
    conversion = _sample("monitoring")
    assert _report(conversion) == [
        (5, "services.prometheus.container_name"),
        (12, "services.prometheus.volumes[0]"),
        (16, "services.grafana.container_name"),
        (24, "services.grafana.volumes[0]"),
        (33, "services.node-exporter.volumes[0]"),
    ]
    assert "rslave" in conversion.unsupported[-1].message
    assert [n.path for n in conversion.notes] == [
        f"services.{s}.restart" for s in ("prometheus", "grafana", "node-exporter")
    ]
    prometheus, grafana, exporter = conversion.documents
    assert prometheus["volumes"] == ["monitoring_prom_data:/prometheus"]  # the bind left out
    assert "volumes" not in grafana
    assert exporter["mode"] == "global" and exporter["host_network"] and exporter["host_pid"]
    assert exporter["volumes"] == ["/:/host:ro"] and "networks" not in exporter


def test_django_and_postgres_with_health_checks_and_env_files() -> None:
    conversion = _sample("django")
    assert _report(conversion) == [
        (26, "services.web.depends_on.db.condition"),
        (27, "services.web.depends_on.db.restart"),
    ]
    db, web = conversion.documents
    assert db["env"] == {"POSTGRES_USER": "django", "POSTGRES_PASSWORD": "django"} | {
        "POSTGRES_DB": "mysite"
    }
    assert db["shm_size"] == "128Mi"
    # $$ is a literal $: the shell in the container expands it.
    assert db["health"]["exec"] == [
        "/bin/sh",
        "-c",
        "pg_isready -U ${POSTGRES_USER} -d ${POSTGRES_DB}",
    ]
    assert web["image"] == "registry.example.com/django-app:2.3.1"  # TAG from .env
    assert web["env"]["SECRET_KEY"] == "change-me" and web["env"]["DEBUG"] == "0"
    assert web["env"]["DJANGO_ALLOWED_HOSTS"] == "localhost"
    assert web["resources"] == {"cpu": "1", "memory": "512Mi"}
    assert web["update"] == {
        "order": "start-first",
        "max_surge": 1,
        "max_unavailable": 0,
        "min_ready": "10s",
        "auto_rollback": True,
    }
    assert web["logging"] == {
        "driver": "json-file",
        "options": {"max-size": "10m", "max-file": "3"},
    }


@pytest.mark.parametrize("name", ["counter", "wordpress", "queue", "monitoring", "django"])
def test_every_sample_is_a_valid_app_file(name: str) -> None:
    conversion = _sample(name)
    again = load_documents(conversion.yaml(), "converted.yaml")
    assert [s.name for s in again] == [s.name for s in conversion.specs]
    assert again == conversion.specs


# --- field by field -------------------------------------------------------------------


def test_deploy_fields() -> None:
    web = _app(
        """\
        services:
          web:
            image: nginx
            deploy:
              replicas: 4
              resources:
                limits: {cpus: "0.5", memory: 1g}
                reservations: {memory: 1G}
              restart_policy: {condition: none}
              update_config: {parallelism: 2, delay: 5s, monitor: 10s, failure_action: pause}
              placement:
                constraints: ["node.labels.disk == ssd", "node.labels.zone != b"]
                max_replicas_per_node: 1
        """
    )
    assert web["replicas"] == 4
    assert web["resources"] == {"memory": "1Gi", "cpu": "0.5"}
    assert web["restart"] == "no"
    # Compose's default order is stop-first: parallelism is then what may be down.
    assert web["update"] == {
        "order": "stop-first",
        "max_unavailable": 2,
        "max_surge": 0,
        "min_ready": 15.0,
        "auto_rollback": False,
    }
    assert web["constraints"] == ["disk=ssd", "zone!=b"]
    assert web["max_per_host"] == 1


def test_restart_and_old_style_limits() -> None:
    web = _app(
        """\
        services:
          web: {image: nginx, restart: "on-failure:2", scale: 3, cpus: 1.5, mem_limit: 256m}
        """
    )
    assert (web["restart"], web["replicas"]) == ("on-failure:2", 3)
    assert web["resources"] == {"cpu": 1.5, "memory": "256Mi"}
    both = _convert("services:\n  web: {image: nginx, mem_limit: 1g, mem_reservation: 512m}\n")
    assert _report(both) == [(2, "services.web.mem_reservation")]
    assert both.documents[0]["resources"] == {"memory": "1Gi"}
    any_condition = _app(
        "services:\n  web:\n    image: nginx\n    deploy: {restart_policy: {condition: any}}\n"
    )
    assert any_condition["restart"] == "always"


def test_healthcheck_forms() -> None:
    def health(test: str) -> object:
        return _app(f"services:\n  web:\n    image: nginx\n    healthcheck: {test}\n").get("health")

    assert health('{test: ["CMD-SHELL", "curl -f localhost || exit 1"]}') == {
        "exec": ["/bin/sh", "-c", "curl -f localhost || exit 1"],
        "interval": "30s",  # compose's defaults, not fleet's
        "timeout": "30s",
    }
    assert health("{test: [CMD, pg_isready], retries: 2, start_period: 1m}") == {
        "exec": ["pg_isready"],
        "interval": "30s",
        "timeout": "30s",
        "retries": 2,
        "start_period": "1m",
    }
    assert health('{test: ["NONE"]}') is None
    assert health("{test: [CMD, x], disable: true}") is None


def test_ports_forms() -> None:
    conversion = _convert(
        """\
        services:
          web:
            image: nginx
            ports:
              - 80
              - "8080:81/tcp"
              - "53:53/udp"
              - "9000-9001:9100-9101"
              - {target: 443, published: "8443", protocol: tcp, mode: host}
              - "0.0.0.0:8000:8000"
              - "[::]:8001:8001/udp"
              - "[::1]:8002:8002"
              - {target: 8003, published: 8003, host_ip: 10.0.0.1}
        """
    )
    [web] = conversion.documents
    assert web["ports"] == [
        *("80", "8080:81", "53:53/udp", "9000:9100", "9001:9101", "8443:443"),
        *("8000:8000", "8001:8001/udp"),
    ]
    assert _report(conversion) == [(12, "services.web.ports[7]"), (13, "services.web.ports[8]")]
    assert "not only [::1]" in conversion.unsupported[0].message


def test_environment_forms_and_env_file() -> None:
    web = _app(
        """\
        services:
          web:
            image: nginx
            env_file: [a.env]
            environment: [A=1, FROM_SHELL, NOT_SET, "B=x=y"]
        """,
        environ={"FROM_SHELL": "shell"},
        read_file=lambda path: "A=0\nC='quoted # not a comment'\nD=v # comment\n",
    )
    assert web["env"] == {
        "A": "1",
        "C": "quoted # not a comment",
        "D": "v",
        "FROM_SHELL": "shell",
        "B": "x=y",
    }
    assert _errors("services:\n  web: {image: nginx, env_file: gone.env}\n") == [
        "compose.yaml:2: services.web.env_file: cannot read env file gone.env: no file "
        "reader given for gone.env"
    ]


def test_docker_run_fields_pass_through() -> None:
    web = _app(
        """\
        services:
          web:
            image: nginx
            entrypoint: /docker-entrypoint.sh
            command: ["nginx", "-g", "daemon off;"]
            user: "101:101"
            working_dir: /srv
            hostname: web-1
            read_only: true
            tmpfs: /run
            stop_signal: SIGQUIT
            stop_grace_period: 1m30s
            init: true
            ulimits: {nofile: {soft: 1024, hard: 2048}}
            dns: 10.0.0.2
            dns_search: [svc.local]
            extra_hosts: ["gw:host-gateway"]
            sysctls: [net.core.somaxconn=1024]
            shm_size: 64m
            cap_add: [NET_ADMIN]
            cap_drop: [ALL]
            devices: ["/dev/fuse"]
            privileged: false
            labels: [team=web]
            logging: {driver: local}
        """
    )
    for key, value in {
        "entrypoint": "/docker-entrypoint.sh",
        "command": ["nginx", "-g", "daemon off;"],
        "user": "101:101",
        "working_dir": "/srv",
        "hostname": "web-1",
        "read_only": True,
        "tmpfs": "/run",
        "stop_signal": "SIGQUIT",
        "stop_grace_period": "1m30s",
        "init": True,
        "ulimits": {"nofile": {"soft": 1024, "hard": 2048}},
        "dns": "10.0.0.2",
        "dns_search": ["svc.local"],
        "extra_hosts": ["gw:host-gateway"],
        "sysctls": ["net.core.somaxconn=1024"],
        "shm_size": "64Mi",
        "cap_add": ["NET_ADMIN"],
        "cap_drop": ["ALL"],
        "devices": ["/dev/fuse"],
        "logging": {"driver": "local"},
    }.items():
        assert web[key] == value, key
    assert web["labels"] == {
        "team": "web",
        "com.docker.compose.project": "demo",
        "com.docker.compose.service": "web",
    }


def test_volumes_forms() -> None:
    web = _app(
        """\
        services:
          web:
            image: nginx
            volumes:
              - data:/data
              - /var/log:/host-logs:ro
              - {type: volume, source: cache, target: /cache, read_only: true}
              - {type: bind, source: /etc/ssl, target: /ssl}
              - {type: tmpfs, target: /scratch, tmpfs: {size: 1000000}}
        volumes:
          data:
          cache: {external: true}
        """
    )
    assert web["volumes"] == [
        "demo_data:/data",
        "/var/log:/host-logs:ro",
        "cache:/cache:ro",  # external: the name as it is
        "/etc/ssl:/ssl",
    ]
    assert web["tmpfs"] == ["/scratch:size=1000000"]


def test_networks_and_network_mode() -> None:
    conversion = _convert(
        """\
        services:
          web: {image: nginx, networks: {front: , back: }}
          db: {image: postgres, networks: [back]}
          probe: {image: busybox, network_mode: host}
        networks:
          front:
          back: {name: shared_back}
        """
    )
    web, db, probe = conversion.documents
    assert web["networks"] == ["demo-front", "shared-back"]
    assert db["networks"] == ["shared-back"]
    assert probe["host_network"] is True and "networks" not in probe


def test_service_names_become_dns_labels() -> None:
    conversion = _convert("services:\n  my_web: {image: nginx}\n")
    assert conversion.documents[0]["name"] == "my-web"
    assert [n.message for n in conversion.notes] == [
        "becomes app my-web: other apps reach it by that name, not my_web"
    ]


def test_secret_as_a_file_is_unsupported_and_becomes_env_when_ignored() -> None:
    conversion = _convert(
        """\
        services:
          web:
            image: nginx
            secrets:
              - db_password
              - source: api_key
                target: key
                mode: 0400
        secrets:
          db_password: {file: ./db_password.txt}
          api_key: {external: true}
        """
    )
    assert _report(conversion) == [
        (5, "services.web.secrets[0]"),
        (6, "services.web.secrets[1]"),
        (8, "services.web.secrets[1].mode"),
    ]
    assert conversion.documents[0]["env"] == {
        "DB_PASSWORD": {"secret": "db-password"},
        "KEY": {"secret": "api-key"},
    }
    external = conversion.secrets[1]
    assert external.external and external.command() == "fleet secrets set api-key --apps web"


# --- the report of keys fleet cannot honour, at their lines ---------------------------

UNSUPPORTED = """\
services:
  web:
    image: nginx
    container_name: web
    build: .
    ports:
      - "127.0.0.1:8080:80"
    volumes:
      - ./site:/usr/share/nginx/html
      - /anonymous
    deploy:
      labels: {a: b}
      resources:
        limits: {cpus: "1", pids: 100}
        reservations: {cpus: "0.5"}
      restart_policy: {condition: any, max_attempts: 3, window: 2m}
      update_config: {failure_action: continue, max_failure_ratio: 0.1}
      placement:
        constraints: [node.role == manager]
    healthcheck: {test: [CMD, x], start_interval: 1s}
    networks:
      back: {aliases: [www]}
    tty: true
    x-custom: ignored by compose too
networks:
  back:
    driver: overlay
    attachable: true
volumes:
  unused: {driver: nfs}
configs:
  site: {file: ./site.conf}
x-anchors: {}
"""


def test_every_unsupported_key_is_reported_at_its_line() -> None:
    conversion = _convert(UNSUPPORTED)
    assert _report(conversion) == [
        (4, "services.web.container_name"),
        (5, "services.web.build"),
        (7, "services.web.ports[0]"),
        (9, "services.web.volumes[0]"),
        (10, "services.web.volumes[1]"),
        (12, "services.web.deploy.labels"),
        (14, "services.web.deploy.resources.limits.pids"),
        (15, "services.web.deploy.resources.reservations.cpus"),
        (16, "services.web.deploy.restart_policy.window"),
        (16, "services.web.deploy.restart_policy.max_attempts"),
        (17, "services.web.deploy.update_config.max_failure_ratio"),
        (17, "services.web.deploy.update_config.failure_action"),
        (19, "services.web.deploy.placement.constraints[0]"),
        (20, "services.web.healthcheck.start_interval"),
        (22, "services.web.networks.back.aliases"),
        (23, "services.web.tty"),
        (27, "networks.back.driver"),
        (28, "networks.back.attachable"),
        (30, "volumes.unused.driver"),
        (31, "configs"),
    ]
    by_path = {p.path: p.message for p in conversion.unsupported}
    assert "docker compose build web && docker compose push web" in by_path["services.web.build"]
    assert (
        "the limit 1 is used for both" in by_path["services.web.deploy.resources.reservations.cpus"]
    )
    assert "nothing crosses hosts" in by_path["networks.back.driver"]
    # Ignored, what is left is a valid app with nothing of the unsupported keys.
    [web] = conversion.documents
    assert ("ports" not in web and web["volumes"] == []) or "volumes" not in web
    assert web["resources"] == {"cpu": "1"} and web["restart"] == "always"


def test_build_without_an_image_is_an_error() -> None:
    assert _errors("services:\n  web:\n    build: ./web\n") == [
        "compose.yaml:3: services.web.build: fleet does not build images: build the image "
        "and push it to a registry the hosts pull from (docker compose build web && docker "
        "compose push web), then remove build:"
    ]


def test_errors_are_at_their_lines() -> None:
    assert _errors(
        """\
        services:
          web:
            image: nginx
            volumes: [data:/data]
            networks: [nowhere]
            depends_on: [db]
            secrets: [token]
            ports: ["x:y"]
            deploy: {replicas: lots}
          worker: {image: "bad image"}
        """
    ) == [
        "compose.yaml:4: services.web.volumes[0]: volume 'data' is not declared under the "
        "top-level volumes:",
        "compose.yaml:5: services.web.networks[0]: network 'nowhere' is not declared under "
        "the top-level networks:",
        "compose.yaml:6: services.web.depends_on[0]: depends on 'db', which is no service here",
        "compose.yaml:7: services.web.secrets[0]: secret 'token' is not declared under the "
        "top-level secrets:",
        "compose.yaml:8: services.web.ports[0]: expected a port like 8080, "
        "80:8080 or 9000/udp ([HOST:]CONTAINER[/PROTOCOL]), got 'x:y'",
        "compose.yaml:9: services.web.deploy.replicas: expected a whole number from 0 to "
        "10000, got 'lots'",
        "compose.yaml:10: services.worker.image: expected an image reference like "
        "nginx:1.27 or registry:5000/web:v1 (no spaces, at most 512 characters), got "
        "'bad image'",
    ]


def test_dependency_order_and_cycles() -> None:
    conversion = _convert(
        """\
        services:
          web: {image: nginx, depends_on: [api]}
          api: {image: api, depends_on: {db: {condition: service_started}}}
          db: {image: postgres}
        """
    )
    assert [d["name"] for d in conversion.documents] == ["db", "api", "web"]
    assert conversion.unsupported == []
    assert _errors(
        "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [a]}\n"
    ) == ["compose.yaml:2: services.a.depends_on: a dependency cycle: a -> b -> a"]


# --- interpolation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("${TAG}", {"TAG": "1"}, "1"),
        ("$TAG-x", {"TAG": "1"}, "1-x"),
        ("${TAG:-latest}", {"TAG": ""}, "latest"),
        ("${TAG-latest}", {"TAG": ""}, ""),
        ("${TAG-latest}", {}, "latest"),
        ("${TAG:+set}", {"TAG": "1"}, "set"),
        ("${TAG+set}", {}, ""),
        ("${A:-${B:-deep}}", {}, "deep"),
        ("$$HOME and $${X}", {}, "$HOME and ${X}"),
        ("cost: 5$", {}, "cost: 5$"),
    ],
)
def test_interpolation(text: str, environ: dict[str, str], expected: str) -> None:
    web = _app(
        f"services:\n  web:\n    image: nginx\n    labels: {{v: '{text}'}}\n", environ=environ
    )
    assert web["labels"]["v"] == expected


def test_interpolation_errors_and_unset_variables() -> None:
    assert _errors("services:\n  web:\n    image: ${IMAGE:?set IMAGE to the image}\n") == [
        "compose.yaml:3: services.web.image: required variable IMAGE is missing a value: set "
        "IMAGE to the image"
    ]
    assert _errors("services:\n  web:\n    image: ${IMAGE\n") == [
        "compose.yaml:3: services.web.image: invalid interpolation in '${IMAGE': expected }, "
        ":-, -, :?, ?, :+ or + after ${IMAGE"
    ]
    conversion = _convert("services:\n  web:\n    image: nginx\n    command: echo $NOPE\n")
    assert [str(n) for n in conversion.notes] == [
        "compose.yaml:4: services.web.command: variable NOPE is not set: it became an empty string"
    ]


def test_dotenv_is_overridden_by_the_environment() -> None:
    assert compose_environ({"A": "env"}, "A=file\nB=file\n# c\nexport C='x y'\n") == {
        "A": "env",
        "B": "file",
        "C": "x y",
    }


def test_is_compose() -> None:
    assert is_compose("services:\n  web: {image: nginx}\n")
    assert not is_compose("name: web\nimage: nginx\n")
    assert not is_compose("name: web\nimage: nginx\n---\nname: db\nimage: x\n")


# --- the CLI ---------------------------------------------------------------------------


def test_fleet_convert_refuses_then_lists_what_it_ignores(tmp_path: Path) -> None:
    path = tmp_path / "compose.yaml"
    path.write_text("services:\n  web:\n    image: nginx\n    container_name: w\n")
    runner = CliRunner()
    refused = runner.invoke(cli, ["convert", str(path)])
    assert refused.exit_code != 0 and refused.stdout == ""
    assert isinstance(refused.exception, SpecError)
    assert "services.web.container_name" in str(refused.exception)
    done = runner.invoke(cli, ["convert", str(path), "--ignore-unsupported", "-p", "site"])
    assert done.exit_code == 0, done.output
    assert "ignored: " in done.stderr and "container_name" in done.stderr
    [spec] = load_documents(done.stdout)
    assert spec.name == "web" and spec.labels["com.docker.compose.project"] == "site"


class _Stored:
    """What ``FleetClient.apps`` answers of one stored app, as far as the guard reads it."""

    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.name = name
        self.spec_json = json.dumps({"name": name, "image": "x", "labels": labels})


class _Client:
    def __init__(self, *stored: _Stored) -> None:
        self.stored = list(stored)

    def apps(self) -> list[_Stored]:
        return self.stored


def test_apply_refuses_to_overwrite_an_app_another_project_made() -> None:
    conversion = _convert("services:\n  db: {image: postgres}\n  web: {image: nginx}\n")
    ours = _Stored("db", {"com.docker.compose.project": "demo"})
    guard_project(_Client(ours), conversion)  # type: ignore[arg-type]
    theirs = _Stored("web", {"com.docker.compose.project": "blog"})
    plain = _Stored("db", {})
    with pytest.raises(SpecError) as caught:
        guard_project(_Client(theirs, plain), conversion)  # type: ignore[arg-type]
    assert [str(p) for p in caught.value.problems] == [
        "compose.yaml: services.db: app db exists already, made by an app file, not this "
        "compose project (demo): rename the service, or delete that app first",
        "compose.yaml: services.web: app web exists already, made by compose project blog "
        "(demo): rename the service, or delete that app first",
    ]


def test_anchors_and_merge_keys_as_compose_files_use_them() -> None:
    conversion = _convert(
        """\
        x-common: &common
          restart: always
          logging: {driver: local}
          tty: true
        services:
          web:
            <<: *common
            image: nginx
            restart: on-failure
          db:
            <<: *common
            image: postgres
        """
    )
    web, db = conversion.documents
    # An override of a merged key is no duplicate key.
    assert (web["restart"], db["restart"]) == ("on-failure", "always")
    assert web["logging"] == db["logging"] == {"driver": "local"}
    # A merged key is reported where the service merges it (its <<: line).
    assert _report(conversion) == [(7, "services.web.tty"), (11, "services.db.tty")]
