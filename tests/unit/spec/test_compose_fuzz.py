"""Fuzzing the compose converter (hypothesis): services of compose's keys with values of
any JSON-like shape, and mutations of the sample projects. ``convert`` must either return
apps that validate again as an app file, or raise ``SpecError``; never another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.errors import SpecError
from fleet.spec import load_documents
from fleet.spec.compose import convert

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DATA = Path(__file__).parents[2] / "data" / "compose"
_KEYS = [
    *("image", "build", "command", "entrypoint", "environment", "env_file", "ports"),
    *("volumes", "networks", "network_mode", "pid", "depends_on", "secrets", "labels"),
    *("logging", "healthcheck", "deploy", "restart", "scale", "shm_size", "mem_limit"),
    *("mem_reservation", "cpus", "expose", "user", "tmpfs", "ulimits", "container_name"),
]
_NESTED = [
    *("replicas", "resources", "limits", "reservations", "cpus", "memory", "mode"),
    *("restart_policy", "condition", "max_attempts", "update_config", "parallelism"),
    *("order", "delay", "monitor", "failure_action", "placement", "constraints", "test"),
    *("interval", "timeout", "retries", "start_period", "disable", "source", "target"),
    *("type", "read_only", "published", "host_ip", "protocol", "file", "external", "name"),
    *("driver", "options", "required", "path", "tmpfs", "size", "max_replicas_per_node"),
]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["web", "db", "data", "back", "tok", "8080:80", "1g", "${X:-y}", "./a"]),
    st.sampled_from(["on-failure", "any", "none", "start-first", "[CMD, x]", "/x:/y:ro", ""]),
    st.text(max_size=12),
)
_nested_keys = st.one_of(st.sampled_from(_NESTED), st.text(max_size=6))
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(_NESTED), st.text(max_size=6)), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
_service = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6)
_top = st.fixed_dictionaries(
    {"services": st.dictionaries(st.sampled_from(["web", "db", "back"]), _service, min_size=1)},
    optional={
        "volumes": st.dictionaries(st.sampled_from(["data", "db"]), _values, max_size=2),
        "networks": st.dictionaries(st.sampled_from(["back", "front"]), _values, max_size=2),
        "secrets": st.dictionaries(st.sampled_from(["tok", "db"]), _values, max_size=2),
        "name": _scalars,
    },
)


def _check(data: Any) -> None:
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        conversion = convert(text, "fuzz.yaml", project="fuzz", read_file=lambda p: "A=1\n")
    except SpecError as error:
        assert error.problems and all(p.message for p in error.problems)
        return
    again = load_documents(conversion.yaml(), "converted.yaml")
    assert again == conversion.specs
    for problem in [*conversion.unsupported, *conversion.notes]:
        assert problem.message and problem.line is not None and problem.line >= 1


@SETTINGS
@given(_top)
def test_random_services_convert_or_fail_cleanly(data: dict[str, Any]) -> None:
    _check(data)


@SETTINGS
@given(st.sampled_from(["counter", "wordpress", "queue", "monitoring", "django"]), st.data())
def test_mutated_samples_convert_or_fail_cleanly(name: str, draw: st.DataObject) -> None:
    data = yaml.safe_load((DATA / name / "compose.yaml").read_text())
    service = draw.draw(st.sampled_from(sorted(data["services"])), label="service")
    key = draw.draw(st.sampled_from(_KEYS), label="key")
    data["services"][service][key] = draw.draw(_values, label="value")
    _check(data)


# Deep places a random service seldom reaches, each given a value of any shape.
_DEEP = [
    ("deploy", "placement", "constraints"),
    ("deploy", "placement", "max_replicas_per_node"),
    ("deploy", "resources", "limits", "cpus"),
    ("deploy", "resources", "reservations", "memory"),
    ("deploy", "restart_policy", "max_attempts"),
    ("deploy", "update_config", "parallelism"),
    ("deploy", "update_config", "delay"),
    ("healthcheck", "test"),
    ("healthcheck", "interval"),
    ("logging", "options"),
    ("depends_on", "db", "condition"),
    ("networks", "back", "aliases"),
]


@SETTINGS
@given(st.sampled_from(_DEEP), _values, st.sampled_from(["queue", "django"]))
def test_deep_values_convert_or_fail_cleanly(path: tuple[str, ...], value: Any, name: str) -> None:
    data = yaml.safe_load((DATA / name / "compose.yaml").read_text())
    node = data["services"][next(iter(data["services"]))]
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    _check(data)
