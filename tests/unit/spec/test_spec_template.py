"""Tests of the container template: which fields of a spec make a new revision of its
containers (``AppSpec.template``) and ``template_of``, the spec a rollback or an undo
writes. Both read the one set of fields that only say how many, where and how."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fleet.spec import DOCKER_FIELDS, AppSpec, load_documents, template_of

# The fields that are not the container template, as rollout.template_of spelled them
# before fleet.spec had the one set: the old behaviour the new function must keep.
_KEPT_BEFORE = {"name", "replicas", "constraints", "placement", "max_per_host", "update"}
_KEPT_BEFORE |= {"min_available", "mode", "completions", "parallelism", "backoff_limit"}
_KEPT_BEFORE.add("ttl_after_finished")
# The ingress came later and is not the template either (only the port it may publish
# is, as ``ingress_port``: see test_ingress_port_is_template_only_when_it_publishes).
_KEPT_BEFORE.add("ingress")
# And drain_surge, how many replicas a drain moves at once.
_KEPT_BEFORE.add("drain_surge")


def template_of_before(current: AppSpec, revision_spec: AppSpec) -> AppSpec:
    """``controlplane.rollout.template_of`` as it was."""
    template = {k: v for k, v in revision_spec.model_dump().items() if k not in _KEPT_BEFORE}
    return AppSpec.model_validate({**current.model_dump(), **template})


_MODES: dict[str, dict[str, Any]] = {
    "replicated": {
        "replicas": st.integers(0, 20),
        "min_available": st.sampled_from([1, "50%"]),
        "drain_surge": st.sampled_from([2, "25%"]),
    },
    "global": {"min_available": st.sampled_from([0, "100%"])},
    "job": {
        "completions": st.integers(1, 5),
        "parallelism": st.integers(1, 3),
        "backoff_limit": st.integers(0, 6),
        "ttl_after_finished": st.sampled_from(["1m", 30]),
    },
}
_TEMPLATE: dict[str, Any] = {
    "image": st.sampled_from(["img:v1", "img:v2", "registry:5000/web@sha256:" + "a" * 64]),
    "command": st.sampled_from([["sleep", "1"], "httpd -f"]),
    "env": st.dictionaries(st.sampled_from(["A", "B"]), st.sampled_from(["1", "x"])),
    "ports": st.sampled_from([["8080"], ["80:8080", "53/udp"]]),
    "resources": st.sampled_from([{"cpu": 0.5}, {"memory": "64Mi"}]),
    "restart": st.sampled_from(["no", "on-failure", "on-failure:2", "always"]),
    "labels": st.sampled_from([{"team": "web"}, {}]),
    "stop_grace_period": st.sampled_from(["1s", 30]),
    "shutdown_delay": st.sampled_from(["2s", 0]),
    "privileged": st.booleans(),
    "cap_add": st.sampled_from([["NET_ADMIN"], []]),
    "volumes": st.sampled_from([["data:/data"], ["/srv:/srv:ro"]]),
    "health": st.sampled_from([{"tcp": 80}, {"http": "http://:8080/", "interval": "1s"}]),
}
# Docker's other options came later still: a spec that leaves them out dumps without them.
_DOCKER: dict[str, Any] = {
    "entrypoint": st.sampled_from([["sh", "-c"], "tini --"]),
    "user": st.sampled_from(["1000:1000", "nobody"]),
    "working_dir": st.just("/app"),
    "hostname": st.just("web-1"),
    "read_only": st.booleans(),
    "tmpfs": st.sampled_from([["/run:size=64m"], "/tmp"]),
    "stop_signal": st.sampled_from(["SIGQUIT", "INT"]),
    "init": st.booleans(),
    "ulimits": st.sampled_from([{"nofile": 1024}, {"nproc": {"soft": 1, "hard": 2}}]),
    "dns": st.just(["10.0.0.2"]),
    "dns_search": st.just("example.com"),
    "extra_hosts": st.sampled_from([["db:10.0.0.5"], {"gw": "host-gateway"}]),
    "sysctls": st.sampled_from([{"net.core.somaxconn": 1024}, ["kernel.shmmax=65536"]]),
    "shm_size": st.sampled_from(["256Mi", None]),
    "cap_drop": st.sampled_from([["NET_RAW"], "ALL"]),
    "devices": st.just(["/dev/fuse"]),
    "logging": st.sampled_from([{"driver": "local"}, {"driver": "none"}, None]),
}
_EVERY_OPTION: dict[str, Any] = {
    "entrypoint": "tini --",
    "user": "nobody",
    "working_dir": "/app",
    "hostname": "web-1",
    "read_only": True,
    "tmpfs": "/tmp",
    "stop_signal": "INT",
    "init": True,
    "ulimits": {"nofile": 1024},
    "dns": "10.0.0.2",
    "dns_search": "example.com",
    "extra_hosts": {"gw": "host-gateway"},
    "sysctls": ["kernel.shmmax=65536"],
    "shm_size": "256Mi",
    "cap_drop": "ALL",
    "devices": "/dev/fuse",
    "logging": {"driver": "none"},
    "networks": "backend",
}
_PLACEMENT: dict[str, Any] = {
    "constraints": st.sampled_from([["role=edge"], ["gpu", "disk!=hdd"]]),
    "placement": st.sampled_from(["binpack", "spread"]),
    "max_per_host": st.integers(1, 3),
    "update": st.sampled_from([{"max_surge": 0, "max_unavailable": 1}, {"min_ready": "3s"}]),
}


@st.composite
def specs(draw: st.DrawFn, name: str = "web", docker: bool = False) -> AppSpec:
    """A valid spec of any mode, with some of every kind of field (and of Docker's
    other options if ``docker``)."""
    mode = draw(st.sampled_from(sorted(_MODES)))
    optional = {**_TEMPLATE, **_PLACEMENT, **_MODES[mode], **(_DOCKER if docker else {})}
    keys = draw(st.lists(st.sampled_from(sorted(optional)), unique=True))
    data = {"name": name, "image": "img", "mode": mode}
    data.update({key: draw(optional[key]) for key in keys})
    if mode == "job" and data.get("restart") == "always":
        data["restart"] = "no"
    return AppSpec.model_validate(data)


def outcome(make: Any) -> AppSpec | list[tuple[Any, ...]]:
    """The spec ``make`` returns, or what its refusal says where."""
    try:
        spec: AppSpec = make()
    except ValidationError as error:
        return [(e["type"], e["loc"], e["msg"]) for e in error.errors()]
    return spec


@settings(max_examples=300, deadline=None)
@given(specs(), specs())
def test_property_template_of_keeps_the_old_behaviour(current: AppSpec, revision: AppSpec) -> None:
    """Whatever the modes, ``template_of`` gives the spec the rollout's own did (or the
    same refusal, as for a job given a revision whose restart is always)."""
    assert outcome(lambda: template_of(current, revision)) == outcome(
        lambda: template_of_before(current, revision)
    )


@settings(max_examples=300, deadline=None)
@given(specs(docker=True), specs(docker=True))
def test_property_template_of_takes_the_template_and_keeps_the_rest(
    current: AppSpec, revision: AppSpec
) -> None:
    """The result runs the revision's containers (the same template and hash) and keeps
    everything else of the current spec."""
    try:
        result = template_of(current, revision)
    except ValidationError:
        assert current.mode == "job" and revision.restart.kind == "always"
        return
    assert result.template() == revision.template()
    assert result.template_hash() == revision.template_hash()
    rest = {k: v for k, v in current.model_dump().items() if k in _KEPT_BEFORE}
    assert {k: v for k, v in result.model_dump().items() if k in _KEPT_BEFORE} == rest


def test_the_template_and_the_rest_are_every_field() -> None:
    """Every field is either the container template or kept by ``template_of``; Docker's
    other options are the template only when set."""
    [spec] = load_documents("name: web\nimage: img\n")
    template = set(spec.template())
    assert template | _KEPT_BEFORE | set(DOCKER_FIELDS) == set(AppSpec.model_fields)
    assert not template & (_KEPT_BEFORE | set(DOCKER_FIELDS))
    every = AppSpec.model_validate({"name": "web", "image": "img", **_EVERY_OPTION})
    assert set(DOCKER_FIELDS) <= set(every.template())


@pytest.mark.parametrize(
    "field, value",
    [
        ("user", "1000"),
        ("entrypoint", ["sh"]),
        ("read_only", True),
        ("ulimits", {"nofile": 10}),
        ("sysctls", {"net.ipv4.ip_forward": 1}),
        ("logging", {"driver": "local"}),
        ("cap_drop", ["ALL"]),
        ("devices", ["/dev/fuse"]),
        ("networks", ["backend"]),
    ],
)
def test_a_docker_option_changes_the_template_and_leaving_it_out_does_not(
    field: str, value: object
) -> None:
    """Setting one makes a new revision (another hash); an app without any hashes as
    before they existed (so upgrading fleet rolls nothing), and a rollback to such a
    revision takes the option away again."""
    [plain] = load_documents("name: web\nimage: img\nenv: {A: b}\nports: ['80']\n")
    assert plain.template_hash() == "1fce0fa45828"  # what fleet before these options said
    assert not set(plain.model_dump()) & set(DOCKER_FIELDS)
    changed = AppSpec.model_validate({**plain.model_dump(), field: value})
    assert changed.template_hash() != plain.template_hash()
    assert template_of(changed, plain).template_hash() == plain.template_hash()
    assert getattr(template_of(changed, plain), field) == getattr(plain, field)


def test_ingress_port_is_template_only_when_it_publishes() -> None:
    """A host, path or tcp change is no new revision; a port the ingress publishes
    (``ports`` does not) is, and so is its change; an app without an ingress hashes as
    it did before ingresses existed."""
    base = "name: web\nimage: img\n"
    [plain] = load_documents(base)
    assert "ingress_port" not in plain.template()
    [published] = load_documents(base + "ports: ['8080']\ningress: {port: 8080}\n")
    [other_host] = load_documents(
        base + "ports: ['8080']\ningress: {port: 8080, host: a.example, path: /x}\n"
    )
    assert published.template_hash() == other_host.template_hash()
    [with_ports] = load_documents(base + "ports: ['8080']\n")
    assert published.template_hash() == with_ports.template_hash()
    [own_port] = load_documents(base + "ingress: {port: 8080}\n")
    [own_other] = load_documents(base + "ingress: {port: 9090}\n")
    assert own_port.template()["ingress_port"] == 8080
    assert len({own_port.template_hash(), own_other.template_hash(), plain.template_hash()}) == 3
    [tcp] = load_documents(base + "ingress: {port: 8080, tcp: 5432}\n")
    assert tcp.template_hash() == own_port.template_hash()
    # The published port is a container port like any other, on an ephemeral host port.
    assert [str(p) for p in own_port.container_ports()] == ["8080"]
    [udp] = load_documents(base + "ports: ['8080/udp']\ningress: {port: 8080}\n")
    assert [str(p) for p in udp.container_ports()] == ["8080/udp", "8080"]


@pytest.mark.parametrize("mode", ["global", "job"])
def test_template_of_keeps_the_mode_and_its_counts(mode: str) -> None:
    counts = "" if mode == "global" else "completions: 3\n"
    [current] = load_documents(f"name: web\nimage: img:v2\nmode: {mode}\n{counts}restart: no\n")
    [revision] = load_documents("name: web\nimage: img:v1\nreplicas: 5\nrestart: on-failure\n")
    result = template_of(current, revision)
    assert (result.mode, result.image, str(result.restart)) == (mode, "img:v1", "on-failure")
    assert result.completions == current.completions
