"""Tests of an app's ``ingress:``: what it accepts, the routes it claims, the path the
edges check, and every refusal with its field and line."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import SpecError, SpecProblem
from fleet.spec import AppSpec, load_documents, parse_spec_json

BASE = "name: web\nimage: img\n"  # what follows starts on line 3


def one_problem(text: str) -> SpecProblem:
    with pytest.raises(SpecError) as info:
        load_documents(text, "app.yaml")
    [problem] = info.value.problems
    return problem


def test_defaults_route_the_apps_name_on_every_path() -> None:
    [app] = load_documents(BASE + "ingress: {port: 8080}\n")
    assert app.ingress is not None
    assert (app.ingress.hosts("web"), app.ingress.route_path()) == (["web"], "/")
    assert app.ingress.route_names("web") == ["http:web/"]
    assert app.ingress_check_path() == ""


def test_hosts_paths_and_tcp() -> None:
    text = BASE + "ingress:\n  port: 8080\n  host: [b.example.com, '*.example.com']\n"
    [app] = load_documents(text + "  path: /api/\n")
    assert app.ingress is not None
    assert app.ingress.path == "/api"  # "/api/" is the same prefix
    assert app.ingress.route_names("web") == ["http:*.example.com/api", "http:b.example.com/api"]
    [app] = load_documents(BASE + "ingress: {port: 8080, host: web.example.com}\n")
    assert app.ingress is not None and app.ingress.host == ["web.example.com"]
    [app] = load_documents(BASE + "ingress: {port: 5432, tcp: 15432}\n")
    assert app.ingress is not None and app.ingress.route_names("web") == ["tcp:15432"]


def test_check_path_is_the_http_health_checks_on_the_same_port() -> None:
    check = "health: {http: 'http://:8080/healthz?deep=1'}\n"
    [app] = load_documents(BASE + check + "ingress: {port: 8080}\n")
    assert app.ingress_check_path() == "/healthz?deep=1"
    [app] = load_documents(BASE + check + "ingress: {port: 9090}\n")
    assert app.ingress_check_path() == ""  # another port: a TCP connect
    [app] = load_documents(BASE + "health: {tcp: 8080}\ningress: {port: 8080}\n")
    assert app.ingress_check_path() == ""


@pytest.mark.parametrize(
    ("extra", "path", "line", "expected"),
    [
        ("ingress: {}", "ingress.port", 3, "required field is missing"),
        ("ingress: {port: 0}", "ingress.port", 3, "expected a port from 1 to 65535, got 0"),
        ("ingress:\n  port: '80'", "ingress.port", 4, "expected a port from 1 to 65535, got '80'"),
        ("ingress: {port: 80, host: Web.Example}", "ingress.host", 3, "write 'web.example'"),
        ("ingress:\n  port: 80\n  host: [a.b, a_b]", "ingress.host", 5, "a lowercase DNS name"),
        ("ingress: {port: 80, host: []}", "ingress.host", 3, "a non-empty list"),
        ("ingress: {port: 80, host: [a, a]}", "ingress.host", 3, "host 'a' is listed twice"),
        ("ingress: {port: 80, host: 'a.*.b'}", "ingress.host", 3, "'*.' in front"),
        ("ingress: {port: 80, path: api}", "ingress.path", 3, "starting with '/'"),
        ("ingress: {port: 80, path: '/a b'}", "ingress.path", 3, "no spaces"),
        ("ingress: {port: 80, path: '/a?b=1'}", "ingress.path", 3, "'?'"),
        ("ingress: {port: 80, path: '/a//b'}", "ingress.path", 3, "'//'"),
        ("ingress: {port: 80, tcp: 70000}", "ingress.tcp", 3, "from 1 to 65535"),
        (
            f"ingress: {{port: 80, host: [{', '.join(f'h{i}' for i in range(33))}]}}",
            "ingress.host",
            3,
            "at most 32 host names",
        ),
        (f"ingress: {{port: 80, path: /{'a' * 256}}}", "ingress.path", 3, "at most 256 characters"),
        ("ingress:\n  port: 80\n  tcp: 5432\n  path: /x", "ingress", 4, "remove path"),
        ("ingress: {port: 80, tcp: 1, host: a}", "ingress", 3, "not by host: remove host"),
        ("ingress: {port: 80, hots: a}", "ingress.hots", 3, "did you mean 'host'?"),
        ("mode: job\ningress:\n  port: 80", "ingress", 5, "ingress does not apply to mode job"),
    ],
)
def test_invalid_ingress(extra: str, path: str, line: int, expected: str) -> None:
    problem = one_problem(BASE + extra + "\n")
    assert (problem.source, problem.document, problem.path, problem.line) == (
        "app.yaml",
        1,
        path,
        line,
    )
    assert expected in problem.message


def test_global_apps_may_have_an_ingress() -> None:
    [app] = load_documents(BASE + "mode: global\ningress: {port: 80}\n")
    assert app.ingress is not None


def test_the_json_round_trip_keeps_it() -> None:
    [app] = load_documents(BASE + "ingress: {port: 80, host: [a.example], path: /x/}\n")
    again = parse_spec_json(app.model_dump_json())
    assert again == app and again.ingress is not None and again.ingress.path == "/x"


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(
    st.lists(st.lists(_LABEL, min_size=1, max_size=3).map(".".join), min_size=1, max_size=3),
    st.lists(_LABEL, max_size=3).map(lambda parts: "/" + "/".join(parts)),
)
def test_property_routes_are_one_per_host_and_survive_the_round_trip(
    hosts: list[str], path: str
) -> None:
    data = {"name": "web", "image": "img", "ingress": {"port": 80, "host": hosts, "path": path}}
    if len(set(hosts)) < len(hosts):
        with pytest.raises(ValueError, match="listed twice"):
            AppSpec.model_validate(data)
        return
    app = AppSpec.model_validate(data)
    assert app.ingress is not None
    routes = app.ingress.route_names("web")
    assert len(routes) == len(hosts) and routes == sorted(routes)
    assert all(r.endswith(path.rstrip("/") or "/") for r in routes)
    assert parse_spec_json(app.model_dump_json()) == app


def test_an_app_without_ingress_dumps_as_before_ingresses() -> None:
    """No "ingress" key: a control plane replica of the version before reads the record
    (its model forbids unknown fields) during a rolling upgrade."""
    [app] = load_documents(BASE)
    assert "ingress" not in app.model_dump() and "ingress" not in app.model_dump_json()
    [app] = load_documents(BASE + "ingress: {port: 80}\n")
    assert app.model_dump()["ingress"]["port"] == 80


def test_timeout_defaults_to_a_minute_and_takes_a_duration() -> None:
    [app] = load_documents(BASE + "ingress: {port: 8080}\n")
    assert app.ingress is not None and app.ingress.timeout == 60.0
    [app] = load_documents(BASE + "ingress: {port: 8080, timeout: 2.5s}\n")
    assert app.ingress is not None and app.ingress.timeout == 2.5
    problem = one_problem(BASE + "ingress:\n  port: 8080\n  timeout: 0s\n")
    assert (problem.path, problem.line) == ("ingress.timeout", 5)
    assert "from 100ms to 1h" in problem.message
