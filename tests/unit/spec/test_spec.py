"""Tests of fleet.spec: parsing app files, the messages and lines of every rejection, and the
JSON round trip the API relies on."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from docker.auth import INDEX_NAME, resolve_repository_name, split_repo_name
from docker.utils import parse_repository_tag
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import SpecError, SpecProblem
from fleet.spec import (
    AppSpec,
    Constraint,
    PortSpec,
    Resources,
    RestartPolicy,
    format_memory,
    json_schema,
    load_documents,
    load_file,
    parse_duration,
    parse_memory,
    parse_spec_json,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
Mi = 1 << 20

FULL = """\
name: web
image: 127.0.0.1:5000/web:v1
replicas: 3
command: [httpd, -f, -p, "8080", -h, /www]
env: {GREETING: hello}
ports: ["8080", "9090:9000/udp"]
resources: {cpu: 0.25, memory: 64Mi}
restart: on-failure:3
labels: {team: web}
constraints: ["role=edge", "disk!=hdd", "gpu"]
stop_grace_period: 10s
"""
BASE = "name: web\nimage: img\n"  # what follows starts on line 3


def problems(text: str) -> list[SpecProblem]:
    with pytest.raises(SpecError) as info:
        load_documents(text, "app.yaml")
    return info.value.problems


def one_problem(text: str) -> SpecProblem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_full_spec_parses_to_the_expected_values() -> None:
    [spec] = load_documents(FULL)
    assert spec.name == "web"
    assert spec.image == "127.0.0.1:5000/web:v1"
    assert spec.replicas == 3
    assert spec.command == ["httpd", "-f", "-p", "8080", "-h", "/www"]
    assert spec.env == {"GREETING": "hello"}
    assert spec.ports == [
        PortSpec(host_port=0, container_port=8080, protocol="tcp"),
        PortSpec(host_port=9090, container_port=9000, protocol="udp"),
    ]
    assert spec.resources == Resources(cpu=0.25, memory=64 * Mi)
    assert spec.restart == RestartPolicy(kind="on-failure", max_retries=3)
    assert spec.labels == {"team": "web"}
    assert spec.constraints == [
        Constraint(key="role", op="=", value="edge"),
        Constraint(key="disk", op="!=", value="hdd"),
        Constraint(key="gpu", op="exists"),
    ]
    assert spec.stop_grace_period == 10.0


def test_defaults() -> None:
    [spec] = load_documents(BASE)
    assert spec.replicas == 1
    assert spec.command is None
    assert spec.env == {} and spec.labels == {}
    assert spec.ports == [] and spec.constraints == []
    assert spec.resources == Resources(cpu=0.0, memory=0)
    assert str(spec.restart) == "always"
    assert spec.stop_grace_period == 10.0


def test_null_collections_mean_empty() -> None:
    [spec] = load_documents(BASE + "env:\nlabels:\nports:\nconstraints:\nresources:\n")
    assert spec.env == {} and spec.labels == {} and spec.ports == [] and spec.constraints == []
    assert spec.resources == Resources()


def test_multi_document_file() -> None:
    text = "---\nname: a\nimage: img\n---\n---\nname: b\nimage: img\nreplicas: 0\n---\n"
    specs = load_documents(text)
    assert [(s.name, s.replicas) for s in specs] == [("a", 1), ("b", 0)]


def test_yaml_is_read_like_yaml_1_2_as_compose_does() -> None:
    text = BASE + "restart: no\nenv: {DEBUG: yes, N: 010, F: 1.5, T: true}\nports: [22:22]\n"
    [spec] = load_documents(text)
    assert str(spec.restart) == "no"
    assert spec.env == {"DEBUG": "yes", "N": "10", "F": "1.5", "T": "true"}
    assert spec.ports == [PortSpec(host_port=22, container_port=22)]


def test_command_string_is_split_into_words() -> None:
    [spec] = load_documents(BASE + "command: sh -c 'echo $HOME'\n")
    assert spec.command == ["sh", "-c", "echo $HOME"]


@pytest.mark.parametrize(
    ("extra", "path", "line", "expected"),
    [
        ("replicas: -1", "replicas", 3, "expected a whole number from 0 to 10000, got -1"),
        ("replicas: true", "replicas", 3, "expected a whole number from 0 to 10000, got true"),
        ("replicas: '3'", "replicas", 3, "expected a whole number from 0 to 10000, got '3'"),
        ("ports: ['0']", "ports[0]", 3, "expected a container port from 1 to 65535, got 0"),
        ("ports: ['70000']", "ports[0]", 3, "expected a container port from 1 to 65535, got 70000"),
        ("ports: ['1:2', 'a:b']", "ports[1]", 3, "expected a port like 8080, 80:8080 or 9000/udp"),
        ("ports:\n  - 80\n  - 80/sctp", "ports[1]", 5, "expected protocol tcp or udp, got 'sctp'"),
        ("ports: ['80', '8080:80']", "ports[1]", 3, "container port 80/tcp is already mapped by"),
        (
            "ports:\n- 90:1\n- 90:2",
            "ports[1]",
            5,
            "host port 90/tcp is already published by ports[0]",
        ),
        ("resources:\n  memory: 64Mb", "resources.memory", 4, "expected a size in bytes like 512"),
        ("resources: {memory: 3Mi}", "resources.memory", 3, "Docker needs at least 6Mi"),
        ("resources: {cpu: 2000}", "resources.cpu", 3, "expected a number of CPU cores from 0"),
        ("resources: {mem: 1}", "resources.mem", 3, "unknown field 'mem' (did you mean 'memory'?)"),
        ("stop_grace_period: 10 sec", "stop_grace_period", 3, "expected a duration like 10s"),
        ("stop_grace_period: 2h", "stop_grace_period", 3, "expected a duration from 0 to 1h"),
        ("restart: sometimes", "restart", 3, "expected no, always, on-failure or on-failure:N"),
        ("restart: on-failure:-1", "restart", 3, "expected on-failure:N with N a whole number"),
        ("constraints: ['=x']", "constraints[0]", 3, "expected a host label selector KEY=VALUE"),
        ("constraints:\n- a\n- a==b", "constraints[1]", 5, "KEY!=VALUE or KEY (the label exists)"),
        ("labels:\n  fleet.app: x", "labels.fleet.app", 4, "starting with 'fleet.' are reserved"),
        ("env:\n  OK: 1\n  1BAD: x", "env.1BAD", 5, "expected an environment variable name"),
        ("env: {A: null}", "env.A", 3, "expected a value, got nothing (null)"),
        ("command: []", "command", 3, "expected a non-empty list of strings"),
        ("image: x", "image", 3, "duplicate key: YAML would silently keep only the last"),
        ("health: {}", "health", 3, "expected exactly one of http, tcp or exec, got none"),
        ("health: {tcp: 80, exec: [x]}", "health", 3, "got tcp and exec"),
        ("health: {http: 'https://:8/'}", "health.http", 3, "expected an http URL"),
        ("health: {http: 'http://x/'}", "health.http", 3, "with the container port"),
        ("health: {tcp: 0}", "health.tcp", 3, "expected a container port from 1 to 65535"),
        ("health: {tcp: 80, interval: 0s}", "health.interval", 3, "interval from 0.1s"),
        ("health:\n  tcp: 80\n  retries: 0", "health.retries", 5, "greater than or equal to 1"),
        ("update: {max_surge: 101%}", "update.max_surge", 3, "a percentage like 25%"),
        ("update: {max_surge: 0}", "update", 3, "cannot both be 0"),
        ("update: {order: stop-first}", "update", 3, "needs max_unavailable of at least 1"),
        ("update: {progress_deadline: 0s}", "update.progress_deadline", 3, "from 1s"),
        ("update: {auto_rollback: 1}", "update.auto_rollback", 3, "expected true or false"),
        ("update: {surge: 1}", "update.surge", 3, "did you mean 'max_surge'?"),
        ("volumes: ['/srv/../etc:/x']", "volumes[0]", 3, "source /srv/../etc contains '..'"),
        ("volumes:\n- data:/d\n- /srv//y/:/y", "volumes[1]", 5, "normal form (no '.', '//'"),
        ("volumes: ['/srv/./y:/y:ro']", "volumes[0]", 3, "/srv/./y is not in normal form"),
        ("volumes: ['/srv/data/:/y']", "volumes[0]", 3, "trailing '/'): write /srv/data"),
        ("volumes: ['/a:/b/../c']", "volumes[0]", 3, "expected NAME:/path or /host/path:/path"),
    ],
)
def test_invalid_field(extra: str, path: str, line: int, expected: str) -> None:
    problem = one_problem(BASE + extra + "\n")
    assert (problem.source, problem.document, problem.path, problem.line) == (
        "app.yaml",
        1,
        path,
        line,
    )
    assert expected in problem.message
    assert not problem.message.startswith("Value error")


def test_update_counts_round_like_kubernetes() -> None:
    """Surge percentages round up, unavailable ones down; at least one can move."""
    [app] = load_documents(BASE + "update: {max_surge: 25%, max_unavailable: 25%}\n")
    assert (app.update.surge(10), app.update.unavailable(10)) == (3, 2)
    [app] = load_documents(BASE + "update: {max_surge: 0%, max_unavailable: 10%}\n")
    assert (app.update.surge(5), app.update.unavailable(5)) == (0, 1)
    [app] = load_documents(BASE + "update: {max_unavailable: 2, order: stop-first}\n")
    assert (app.update.surge(4), app.update.unavailable(4)) == (0, 2)
    [app] = load_documents(BASE)
    assert (app.update.surge(4), app.update.unavailable(4), app.update.order) == (
        1,
        0,
        "start-first",
    )


def test_health_check_forms() -> None:
    [app] = load_documents(BASE + "health: {http: 'http://:8080/healthz?x=1', interval: 500ms}\n")
    assert app.health is not None
    assert (app.health.kind, app.health.http_target(), app.health.interval) == (
        "http",
        (8080, "/healthz?x=1"),
        0.5,
    )
    [app] = load_documents(BASE + "health: {exec: 'pg_isready -q', start_period: 1m}\n")
    assert app.health is not None
    assert (app.health.kind, app.health.exec, app.health.start_period) == (
        "exec",
        ["pg_isready", "-q"],
        60.0,
    )


def test_bad_name_message() -> None:
    problem = one_problem("name: Web_1\nimage: img\n")
    assert (problem.path, problem.line) == ("name", 1)
    assert problem.message == (
        "expected a DNS label (lowercase letters, digits and '-', at most 63 characters, "
        "starting and ending with a letter or digit), got 'Web_1'"
    )


def test_unknown_field_names_it_and_lists_the_known_ones() -> None:
    problem = one_problem(BASE + "imgae: x\n")
    assert (problem.path, problem.line) == ("imgae", 3)
    assert problem.message.startswith("unknown field 'imgae' (did you mean 'image'?)")
    assert "known fields: name, image, replicas, mode, command" in problem.message


def test_missing_fields_point_at_the_document() -> None:
    found = problems("# web\n\nreplicas: 2\n")
    assert [(p.path, p.line, p.message) for p in found] == [
        ("name", 3, "required field is missing"),
        ("image", 3, "required field is missing"),
    ]


def test_all_problems_of_a_file_are_reported_at_once() -> None:
    text = "name: Web\nimage: img\nreplicas: -1\n---\nname: ok\nimage: img\nrestart: maybe\n"
    found = problems(text)
    assert [(p.document, p.path, p.line) for p in found] == [
        (1, "name", 1),
        (1, "replicas", 3),
        (2, "restart", 7),
    ]


def test_yaml_syntax_error_has_its_line() -> None:
    text = "name: a\nimage: img\n---\nname: b\nimage: [x\nreplicas: 2\n"
    problem = one_problem(text)
    assert (problem.document, problem.path, problem.line) == (2, "", 6)
    assert problem.message == (
        "invalid YAML: while parsing a flow sequence started on line 5, "
        "expected ',' or ']', but got ':'"
    )


def test_control_character_has_its_line() -> None:
    problem = one_problem(BASE + "env: {A: \x07}\n")
    assert (problem.document, problem.line) == (1, 3)
    assert problem.message == "invalid YAML: character #x0007 is not allowed in YAML"


def test_yaml_syntax_error_line_is_the_mark() -> None:
    problem = one_problem("name: a\nimage: b\n  bad: indent\n")
    assert (problem.document, problem.line) == (1, 3)
    assert problem.message.startswith("invalid YAML:")


def test_document_that_is_not_a_mapping() -> None:
    problem = one_problem(BASE + "---\n- name: b\n")
    assert (problem.document, problem.path, problem.line) == (2, "", 4)
    assert problem.message == "expected a mapping of app fields (name, image, ...), got a list"


def test_duplicate_app_names() -> None:
    problem = one_problem(BASE + "---\nimage: other\nname: web\n")
    assert (problem.document, problem.path, problem.line) == (2, "name", 5)
    assert "'web' is already used by document 1 (line 1)" in problem.message


@pytest.mark.parametrize("text", ["", "# nothing here\n", "---\n---\n"])
def test_file_without_apps(text: str) -> None:
    problem = one_problem(text)
    assert (problem.document, problem.line) == (0, None)
    assert problem.message.startswith("no apps in the file")


def test_file_larger_than_1_mib() -> None:
    problem = one_problem(BASE + "# " + "x" * (1 << 20) + "\n")
    assert (problem.document, problem.line) == (0, None)
    assert "larger than 1 MiB" in problem.message


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(FULL)
    [spec] = load_file(path)
    assert spec == load_documents(FULL)[0]
    path.write_text("name: x\n")
    with pytest.raises(SpecError) as info:
        load_file(str(path))
    assert info.value.problems[0].source == str(path)


def test_load_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_file(missing)
    [problem] = info.value.problems
    assert (problem.source, problem.document, problem.path, problem.line) == (
        str(missing),
        0,
        "",
        None,
    )
    assert "cannot read the app file: No such file or directory" in problem.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name: \xff\n", "the file is not UTF-8 text (bad byte at offset 6)"),
        (b"#" * (1 << 20) + b"\n", "the file is larger than 1 MiB"),
    ],
)
def test_load_file_unusable_content(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "app.yaml"
    path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_file(path)
    assert [(p.document, p.line, p.message) for p in info.value.problems] == [(0, None, message)]


def test_duplicate_keys_are_reported_where_they_are() -> None:
    problem = one_problem(BASE + "env:\n  A: x\n  B: y\n  A: z\n")
    assert (problem.path, problem.line) == ("env.A", 6)


def test_specs_are_frozen() -> None:
    [spec] = load_documents(BASE)
    with pytest.raises(ValueError, match="frozen"):
        spec.replicas = 2


def test_load_file_dash_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(BASE))
    assert [s.name for s in load_file("-")] == ["web"]


@pytest.mark.parametrize("name", ["hello.yaml", "multi.yaml"])
def test_examples_load(name: str) -> None:
    specs = load_file(EXAMPLES / name)
    assert specs
    for spec in specs:
        assert parse_spec_json(spec.model_dump_json()) == spec


def test_hello_example() -> None:
    [hello] = load_file(EXAMPLES / "hello.yaml")
    assert (hello.name, hello.image, hello.replicas) == ("hello", "fleet-demo/hello:v1", 3)
    assert [str(p) for p in hello.ports] == ["8080"]
    assert hello.resources == Resources(cpu=0.1, memory=32 * Mi)
    assert hello.labels == {"app": "hello"} and hello.env == {"GREETING": "hello"}


def test_json_round_trip_and_wire_form() -> None:
    [spec] = load_documents(FULL)
    text = spec.model_dump_json()
    assert AppSpec.model_validate_json(text) == spec
    assert parse_spec_json(text.encode()) == spec
    dumped = spec.model_dump(mode="json")
    assert dumped["ports"] == ["8080", "9090:9000/udp"]
    assert dumped["restart"] == "on-failure:3"
    assert dumped["constraints"] == ["role=edge", "disk!=hdd", "gpu"]
    assert dumped["resources"] == {"cpu": 0.25, "memory": 64 * Mi}
    assert dumped["stop_grace_period"] == 10.0


def test_parse_spec_json_errors_have_paths_and_no_lines() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec_json('{"name": "A", "image": "b", "ports": ["80/sctp"], "imagee": 1}')
    found = [(p.source, p.document, p.path, p.line) for p in info.value.problems]
    assert found == [
        ("<request>", 1, "name", None),
        ("<request>", 1, "ports[0]", None),
        ("<request>", 1, "imagee", None),
    ]
    for text, message in [("{", "invalid JSON"), ("[]", "expected a mapping, got an empty list")]:
        with pytest.raises(SpecError) as info:
            parse_spec_json(text)
        assert info.value.problems[0].message.startswith(message)


def test_duplicate_ports_in_json() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec_json('{"name": "a", "image": "b", "ports": ["80", "9000:80/udp", "80/udp"]}')
    [problem] = info.value.problems
    assert (problem.path, problem.line) == ("ports[2]", None)
    assert problem.message == "container port 80/udp is already mapped by ports[1]"


def test_template_hash() -> None:
    [spec] = load_documents(FULL)
    assert spec.template_hash() == load_documents(FULL)[0].template_hash()
    assert len(spec.template_hash()) == 12
    assert set(spec.template()) == {
        "image",
        "command",
        "env",
        "ports",
        "resources",
        "restart",
        "labels",
        "stop_grace_period",
        "privileged",
        "host_network",
        "host_pid",
        "cap_add",
        "volumes",
        "health",
        "shutdown_delay",
    }
    scaled = spec.model_copy(update={"replicas": 7, "constraints": []})
    assert scaled.template_hash() == spec.template_hash()
    changed = load_documents(FULL.replace("GREETING: hello", "GREETING: bye"))[0]
    assert changed.template_hash() != spec.template_hash()


def test_port_forms() -> None:
    assert PortSpec.model_validate(8080) == PortSpec(container_port=8080)
    assert str(PortSpec.model_validate("8080/tcp")) == "8080"
    assert str(PortSpec.model_validate("80:8080")) == "80:8080"
    assert str(PortSpec.model_validate("9090:9000/UDP")) == "9090:9000/udp"


def test_restart_and_constraint_forms() -> None:
    for text in ["no", "always", "on-failure", "on-failure:0", "on-failure:3"]:
        assert str(RestartPolicy.model_validate(text)) == text
    with pytest.raises(ValueError, match="max_retries applies only to on-failure"):
        RestartPolicy(kind="always", max_retries=2)
    for text in ["role=edge", "disk!=hdd", "gpu", "topology.io/zone=a"]:
        assert str(Constraint.model_validate(text)) == text


def test_constraint_matches() -> None:
    labels = {"role": "edge", "gpu": ""}
    assert Constraint.model_validate("role=edge").matches(labels)
    assert not Constraint.model_validate("role=core").matches(labels)
    assert Constraint.model_validate("disk!=hdd").matches(labels)  # absent counts as different
    assert not Constraint.model_validate("role!=edge").matches(labels)
    assert Constraint.model_validate("gpu").matches(labels)
    assert not Constraint.model_validate("ssd").matches(labels)


def test_memory_and_duration_helpers() -> None:
    assert parse_memory("64Mi") == 64 * Mi
    assert parse_memory("1G") == 10**9
    assert parse_memory("2k") == parse_memory("2K") == 2000
    assert parse_memory("512") == parse_memory(512) == 512
    assert parse_memory("1.5Gi") == 1536 * Mi
    assert format_memory(67108864) == "64Mi"
    assert format_memory(0) == "0" and format_memory(1000) == "1000"
    for bad in ["64Mb", "-1", "", "1.5"]:
        with pytest.raises(ValueError):
            parse_memory(bad)
    assert parse_duration("10s") == 10.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("2h") == 7200.0
    assert parse_duration(5) == 5.0 and parse_duration("2.5") == 2.5
    for bad_duration in ["1w", "-1s", "s", "1s2", ""]:
        with pytest.raises(ValueError):
            parse_duration(bad_duration)


def test_json_schema_describes_what_users_write() -> None:
    schema = json_schema()
    props = schema["properties"]
    assert schema["additionalProperties"] is False and schema["required"] == ["name", "image"]
    assert {"type": "string", "pattern": props["ports"]["items"]["anyOf"][0]["pattern"]} in props[
        "ports"
    ]["items"]["anyOf"]
    assert props["restart"]["type"] == "string" and props["restart"]["default"] == "always"
    assert props["constraints"]["items"]["type"] == "string"
    assert {a["type"] for a in props["stop_grace_period"]["anyOf"]} == {"number", "string"}
    memory = schema["$defs"]["Resources"]["properties"]["memory"]
    assert {a["type"] for a in memory["anyOf"]} == {"integer", "string"}
    assert all("description" in p or "examples" in p for p in props.values())


def test_placement_and_max_per_host() -> None:
    """``placement`` is binpack (the default) or spread; ``max_per_host`` is no limit (the
    default) or a whole number of at least 1."""
    [default] = load_documents(BASE)
    assert (default.placement, default.max_per_host) == ("binpack", None)
    [spread] = load_documents(BASE + "placement: spread\nmax_per_host: 2\n")
    assert (spread.placement, spread.max_per_host) == ("spread", 2)
    [unset] = load_documents(BASE + "max_per_host:\n")  # null: no limit
    assert unset.max_per_host is None


@pytest.mark.parametrize(
    ("extra", "path", "expected"),
    [
        ("placement: pack", "placement", "expected binpack or spread, got 'pack'"),
        ("placement: Spread", "placement", "expected binpack or spread, got 'Spread'"),
        ("placement: 1", "placement", "expected binpack or spread, got 1"),
        ("max_per_host: 0", "max_per_host", "expected a whole number from 1 to 10000"),
        ("max_per_host: -1", "max_per_host", "expected a whole number from 1 to 10000"),
        ("max_per_host: 1.5", "max_per_host", "expected a whole number from 1 to 10000"),
        ("max_per_host: true", "max_per_host", "expected a whole number from 1 to 10000"),
        ("max_per_host: '2'", "max_per_host", "expected a whole number from 1 to 10000"),
        ("max_per_host: 10001", "max_per_host", "expected a whole number from 1 to 10000"),
    ],
)
def test_invalid_placement_fields(extra: str, path: str, expected: str) -> None:
    problem = one_problem(BASE + extra + "\n")
    assert (problem.path, problem.line) == (path, 3)
    assert problem.message.startswith(expected), problem.message
    if path == "max_per_host":
        assert problem.message.endswith(f"(leave it out for no limit), got {extra.split(': ')[1]}")


def test_placement_fields_in_json_and_schema_but_not_the_template() -> None:
    """Both fields travel in the JSON form, are described in the schema, and, like the
    count and constraints, leave the container template (and its hash) alone."""
    [spec] = load_documents(FULL + "placement: spread\nmax_per_host: 1\n")
    assert parse_spec_json(spec.model_dump_json()) == spec
    assert spec.template_hash() == load_documents(FULL)[0].template_hash()
    assert not {"placement", "max_per_host"} & set(spec.template())
    props = json_schema()["properties"]
    assert props["placement"]["enum"] == ["binpack", "spread"]
    assert props["placement"]["default"] == "binpack"
    assert {"type": "integer", "minimum": 1, "maximum": 10000} in props["max_per_host"]["anyOf"]
    assert props["max_per_host"]["default"] is None
    assert "description" in props["placement"] and "description" in props["max_per_host"]


# Image references: Docker's grammar, the one `docker pull` parses.

H64 = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "image",
    [
        "nginx",
        "nginx:1.27",
        "127.0.0.1:5000/web:v1",
        "registry:5000/hello:v2",
        "localhost:5000/a/b:c",
        "localhost/web",
        "docker.io/library/nginx:latest",
        "fleet-demo/hello:v1",
        "a__b/c---d.e_f:X_y.Z-1",
        "Registry.Example.com/web",
        "Team/web",  # Docker takes an uppercase first part for a registry host
        "[::1]:5000/web",
        f"busybox@sha256:{H64}",
        f"name:tag@sha256:{H64}",
        f"web@sha512:{H64 * 2}",
        "web:_",
        "web:" + "v" * 128,
        "a/" * 126 + "bcd",  # 255 characters
    ],
)
def test_valid_image_references(image: str) -> None:
    [spec] = load_documents(f"name: web\nimage: '{image}'\n")
    assert spec.image == image


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("web::v1", "'web::v1' is not an image reference: a tag follows a single ':'; use web:v1"),
        ("reg:5000/web:::v1", "a tag follows a single ':'; use reg:5000/web:v1"),
        ("web:v1:v2", "a reference has at most one tag, after a single ':' (e.g. web:v1)"),
        (
            "Web:v1",
            "'Web:v1' is not an image reference: repository names must be lowercase; use web:v1",
        ),
        ("reg.io/Team/Web", "repository names must be lowercase; use reg.io/team/web"),
        ("Team/Web:v2", "repository names must be lowercase; use team/web:v2"),
        ("web@sha256:abc", "a sha256 digest is 64 hexadecimal digits (0-9, a-f), got 3"),
        (f"web@sha256:{H64}0", "a sha256 digest is 64 hexadecimal digits (0-9, a-f), got 65"),
        (f"web@sha256:{H64[:-1]}g", "a sha256 digest is 64 hexadecimal digits (0-9, a-f), got '"),
        (f"web@sha256:{H64.upper()}", f"digits (0-9, a-f) in lowercase; use web@sha256:{H64}"),
        (
            "web@" + H64,
            "a digest is sha256: followed by 64 hexadecimal digits (e.g. web@sha256:<64",
        ),
        (
            f"web@md5:{H64}",
            "Docker knows the digest algorithms sha256, sha384 and sha512, got 'md5'",
        ),
        (f"web@sha256:{H64}@x", "a sha256 digest is 64 hexadecimal digits (0-9, a-f), got '"),
        ("web@", "nothing follows the '@': add a digest (e.g. web@sha256:<64 hexadecimal digits>)"),
        (
            "registry:5000//web",
            "a repository path has no empty parts: no '//' and no '/' at either end; "
            "use registry:5000/web",
        ),
        ("web/", "a repository path has no empty parts: no '//' and no '/' at either end; use web"),
        ("registry:5000/", "nothing follows the registry: name the repository (e.g. registry"),
        ("web-", "'web-' ends with '-': each part of a repository name starts and ends with a"),
        ("web.", "'web.' ends with '.': each part of a repository name starts and ends with a"),
        ("reg.io/_web:v1", "'_web' starts with '_': each part of a repository name starts"),
        ("a..b", "'a..b' joins letters with '..': separate them with one '.', one '_', '__' or"),
        ("a___b", "'a___b' joins letters with '___'"),
        ("we$b", "'we$b' holds '$': repository names are lowercase letters, digits and the"),
        ("web:-v1", "a tag starts with a letter, digit or '_', got '-v1'"),
        ("web:v1+x", "a tag is letters, digits, '_', '.' and '-', got 'v1+x' with '+'"),
        ("web:" + "v" * 129, "a tag is at most 128 characters, got 129"),
        (
            "web:",
            "nothing follows the ':'; add a tag (e.g. web:v1) or leave the ':' out for latest",
        ),
        (":v1", "it names no repository (e.g. web:v1)"),
        (
            "registry::5000/web",
            "a registry's port is a number (e.g. registry:5000/web), got ':5000'",
        ),
        ("reg_istry.io/web", "the registry 'reg_istry.io' is not a host name: letters, digits"),
        ("-reg.io/web", "the registry '-reg.io' is not a host name"),
        (H64, "64 hexadecimal digits name an image ID, which Docker does not pull; name the"),
        ("a/" * 127 + "bc", "a repository name is at most 255 characters, got 256"),
        ("web v1", "expected an image reference like nginx:1.27 or registry:5000/web:v1 (no"),
        ("w" * 513, "(no spaces, at most 512 characters), got 'wwwwwwww"),
    ],
)
def test_invalid_image_reference(image: str, expected: str) -> None:
    problem = one_problem(f"name: web\nreplicas: 2\nimage: '{image}'\n")
    assert (problem.source, problem.document, problem.path, problem.line) == (
        "app.yaml",
        1,
        "image",
        3,
    )
    assert expected in problem.message


def test_image_refusal_over_the_api() -> None:
    """``fleet set image`` and ``fleet apply`` send specs the server checks the same way."""
    text = json.dumps({"name": "web", "image": "Web::v1"})
    with pytest.raises(SpecError) as info:
        parse_spec_json(text, source="<image for web>")
    [problem] = info.value.problems
    assert (problem.source, problem.path, problem.line) == ("<image for web>", "image", None)
    assert (
        problem.message
        == "'Web::v1' is not an image reference: a tag follows a single ':' (e.g. web:v1)"
    )


def test_image_schema_pattern() -> None:
    pattern = json_schema()["properties"]["image"]["pattern"]
    for good in ["nginx", "127.0.0.1:5000/web:v1", f"name:tag@sha256:{H64}", "[::1]:5000/web"]:
        assert re.search(pattern, good), good
    for bad in ["web::v1", "Web", "web@sha256:abc", "registry:5000//web", "web-", "web:-v1"]:
        assert not re.search(pattern, bad), bad


# Property tests: generated valid specs survive the wire, and the text forms re-parse.

# Strings fleet hands to Docker never hold NUL nor lone surrogates (refused as input:
# neither can travel in JSON or be a container label).
_TEXT = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))

ports = st.builds(
    PortSpec,
    host_port=st.one_of(st.just(0), st.integers(1, 65535)),
    container_port=st.integers(1, 65535),
    protocol=st.sampled_from(["tcp", "udp"]),
)
_domain_components = st.from_regex(r"[a-zA-Z0-9]{1,6}(-{1,2}[a-zA-Z0-9]{1,6})?", fullmatch=True)
_hosts = st.one_of(
    st.just("localhost"),
    st.just("[::1]"),
    st.lists(_domain_components, min_size=2, max_size=3).map(".".join),
    st.lists(st.integers(0, 255), min_size=4, max_size=4).map(lambda ns: ".".join(map(str, ns))),
)
_registries = st.one_of(
    st.none(),
    st.tuples(_hosts, st.one_of(st.none(), st.integers(1, 65535))).map(
        lambda h: h[0] if h[1] is None else f"{h[0]}:{h[1]}"
    ),
    st.tuples(_domain_components, st.integers(1, 65535)).map(lambda h: f"{h[0]}:{h[1]}"),
)
_path_components = st.from_regex(
    r"[a-z0-9]{1,6}((\.|_|__|-{1,3})[a-z0-9]{1,6}){0,2}", fullmatch=True
)
# (registry, repository path, tag, sha256 digest); without a registry, the first part of the
# path has no '.', else Docker would take it for one.
image_parts = st.tuples(
    _registries,
    st.lists(_path_components, min_size=1, max_size=3).map("/".join),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
    st.one_of(st.none(), st.text("0123456789abcdef", min_size=64, max_size=64)),
).filter(lambda p: p[0] is not None or "." not in p[1].split("/")[0])


def _image_text(registry: str | None, path: str, tag: str | None, digest: str | None) -> str:
    text = f"{registry}/{path}" if registry else path
    return text + (f":{tag}" if tag else "") + (f"@sha256:{digest}" if digest else "")


images = image_parts.map(lambda p: _image_text(*p))
label_keys = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,20}", fullmatch=True).filter(
    lambda k: not k.startswith("fleet.")
)
specs = st.builds(
    AppSpec.model_validate,
    st.fixed_dictionaries(
        {
            "name": st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True),
            "image": images,
            "replicas": st.integers(0, 10_000),
            "command": st.one_of(st.none(), st.lists(_TEXT, min_size=1, max_size=4)),
            "env": st.dictionaries(
                st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), _TEXT
            ),
            "ports": st.lists(
                ports,
                max_size=5,
                unique_by=(
                    lambda p: (p.container_port, p.protocol),
                    lambda p: (p.host_port, p.protocol) if p.host_port else id(p),
                ),
            ),
            "resources": st.fixed_dictionaries(
                {
                    "cpu": st.floats(0, 1024, allow_nan=False),
                    "memory": st.one_of(st.just(0), st.integers(6 * Mi, 1 << 40)),
                }
            ),
            "restart": st.one_of(
                st.sampled_from(["no", "always", "on-failure"]),
                st.integers(0, 100).map(lambda n: f"on-failure:{n}"),
            ),
            "labels": st.dictionaries(label_keys, _TEXT.filter(lambda t: len(t) <= 30), max_size=3),
            "constraints": st.lists(
                st.one_of(
                    label_keys,
                    st.tuples(label_keys, st.sampled_from(["=", "!="]), label_keys).map("".join),
                ),
                max_size=3,
            ),
            "stop_grace_period": st.floats(0, 3600, allow_nan=False),
            "placement": st.sampled_from(["binpack", "spread"]),
            "max_per_host": st.one_of(st.none(), st.integers(1, 10_000)),
        }
    ),
)


@given(specs)
def test_json_round_trip_property(spec: AppSpec) -> None:
    assert parse_spec_json(spec.model_dump_json()) == spec
    assert spec.template_hash() == parse_spec_json(spec.model_dump_json()).template_hash()


@given(st.integers(0, 1 << 40).map(lambda n: n * 1024))
def test_memory_format_round_trip_binary(n: int) -> None:
    assert parse_memory(format_memory(n)) == n


@given(st.integers(0, 1 << 62))
def test_memory_format_round_trip_any(n: int) -> None:
    text = format_memory(n)
    assert parse_memory(text) == n
    if n % 1024:
        assert text == str(n)


@given(ports)
def test_port_text_round_trip(port: PortSpec) -> None:
    assert PortSpec.model_validate(str(port)) == port


@given(image_parts)
def test_valid_images_split_like_docker_py(
    parts: tuple[str | None, str, str | None, str | None],
) -> None:
    """What fleet accepts, docker-py (which the agent pulls with) splits into the same
    repository, tag or digest, and registry."""
    registry, path, tag, digest = parts
    image = _image_text(*parts)
    assert AppSpec.model_validate({"name": "web", "image": image}).image == image
    name = f"{registry}/{path}" if registry else path
    if digest:
        assert parse_repository_tag(image) == (
            name + (f":{tag}" if tag else ""),
            f"sha256:{digest}",
        )
    else:
        assert parse_repository_tag(image) == (name, tag)
    assert split_repo_name(name) == ((registry, path) if registry else (INDEX_NAME, name))
    resolve_repository_name(name)  # raises when docker-py finds the registry invalid
