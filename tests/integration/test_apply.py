"""The walking skeleton on real components: apply, scale, change, re-apply, delete and an
agent restart, each checked through the Docker SDK and etcd rather than through fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleet.spec import AppSpec, load_documents
from fleet.testing import wait_until
from fleet.testing.certs import TestPKI
from tests.helpers import etcd_json, etcd_prefix, wait_http
from tests.integration.conftest import Fleet, fleet_cli, wait_containers


def web_spec(image: str, **changes: Any) -> AppSpec:
    text = f"""
name: web
image: {image}
replicas: 3
command: [httpd, -f, -p, "8080", -h, /www]
env: {{GREETING: hello}}
ports: ["8080"]
resources: {{cpu: 0.25, memory: 64Mi}}
labels: {{team: web}}
stop_grace_period: 1s  # busybox httpd as PID 1 ignores SIGTERM; SIGKILL follows after 1 s
"""
    spec = load_documents(text, "web.yaml")[0]
    return spec.model_copy(update=changes) if changes else spec


def host_port(container: Any, port: str = "8080/tcp") -> int:
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"][port][0]["HostPort"])


def test_apply_runs_replicas_with_labels_env_ports_and_limits(fleet: Fleet) -> None:
    changes = fleet.client.apply([web_spec(fleet.image)])
    assert [(c.app, c.action) for c in changes] == [("web", "created")]

    containers = wait_containers(fleet, "web", 3)
    assert sorted(c.labels["fleet.slot"] for c in containers) == ["0", "1", "2"]
    for container in containers:
        attrs = container.attrs
        assert container.labels["team"] == "web"
        assert container.labels["fleet.revision"] == "1"
        assert "GREETING=hello" in attrs["Config"]["Env"]
        assert attrs["HostConfig"]["NanoCpus"] == 250_000_000
        assert attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert attrs["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
        assert attrs["Config"]["StopTimeout"] == 1
        assert attrs["Config"]["Cmd"] == ["httpd", "-f", "-p", "8080", "-h", "/www"]
        # Each replica answers on its own ephemeral host port at the host's address.
        wait_http(fleet.host.address, host_port(container), "hello from v1")

    # The desired state is in etcd under this test's prefix.
    stored = etcd_json(fleet.etcd, f"{fleet.prefix}apps/web")
    assert stored is not None and stored["spec"]["replicas"] == 3
    replicas = etcd_prefix(fleet.etcd, f"{fleet.prefix}replicas/web/")
    assert len(replicas) == 3
    assert {json.loads(v)["host"] for v in replicas.values()} == {fleet.host.name}


def test_scale_up_and_down(fleet: Fleet) -> None:
    fleet.client.apply([web_spec(fleet.image, replicas=2)])
    wait_containers(fleet, "web", 2)

    fleet.client.scale("web", 5)
    containers = wait_containers(fleet, "web", 5)
    assert sorted(int(c.labels["fleet.slot"]) for c in containers) == [0, 1, 2, 3, 4]

    fleet.client.scale("web", 1)
    containers = wait_containers(fleet, "web", 1)
    assert containers[0].labels["fleet.slot"] == "0"
    assert len(etcd_prefix(fleet.etcd, f"{fleet.prefix}replicas/web/")) == 1


def test_changed_env_replaces_every_container(fleet: Fleet) -> None:
    spec = web_spec(fleet.image)
    fleet.client.apply([spec])
    before = {c.id for c in wait_containers(fleet, "web", 3)}

    changed = spec.model_copy(update={"env": {"GREETING": "bonjour"}})
    [change] = fleet.client.apply([changed])
    assert (change.action, list(change.fields), change.revision) == ("changed", ["env"], 2)

    def replaced() -> bool:
        containers = wait_containers(fleet, "web", 3)
        return all(
            "GREETING=bonjour" in c.attrs["Config"]["Env"] and c.id not in before
            for c in containers
        )

    wait_until(replaced, 60, what="all three replicas replaced with the new env")
    assert all(c.labels["fleet.revision"] == "2" for c in wait_containers(fleet, "web", 3))


def test_reapplying_the_same_spec_changes_nothing(fleet: Fleet) -> None:
    spec = web_spec(fleet.image)
    fleet.client.apply([spec])
    ids = {c.id for c in wait_containers(fleet, "web", 3)}
    # The rollout record follows the replicas becoming available; wait for its end.
    wait_until(
        lambda: fleet.client.rollout_status("web").state == "complete", 30, what="the rollout"
    )
    before = etcd_prefix(fleet.etcd, fleet.prefix)

    [change] = fleet.client.apply([spec])
    assert change.action == "unchanged"
    assert {c.id for c in wait_containers(fleet, "web", 3)} == ids
    after = etcd_prefix(fleet.etcd, fleet.prefix)

    def desired_state(keys: dict[str, bytes]) -> dict[str, bytes]:
        # Reports and events are what happened, written as it happens; the rest is desired.
        happened = ("/status/", "/reports/", "/events/")
        return {k: v for k, v in keys.items() if not any(h in k for h in happened)}

    assert desired_state(after) == desired_state(before)


def test_delete_removes_every_container_and_key(fleet: Fleet) -> None:
    fleet.client.apply([web_spec(fleet.image)])
    wait_containers(fleet, "web", 3)

    fleet.client.delete_app("web")
    wait_containers(fleet, "web", 0)
    keys = etcd_prefix(fleet.etcd, fleet.prefix)
    assert not [k for k in keys if "/apps/" in k or "/replicas/" in k or "/revisions/" in k]


def test_containers_fleet_did_not_create_are_left_alone(fleet: Fleet) -> None:
    bystander = fleet.docker.containers.run(fleet.image, name="bystander", detach=True)
    try:
        fleet.client.apply([web_spec(fleet.image, replicas=1)])
        wait_containers(fleet, "web", 1)
        fleet.client.delete_app("web")
        wait_containers(fleet, "web", 0)
        bystander.reload()
        assert bystander.status == "running"
    finally:
        bystander.remove(force=True)


def test_agent_killed_and_restarted_adopts_without_duplicates(fleet: Fleet) -> None:
    fleet.client.apply([web_spec(fleet.image)])
    ids = {c.id for c in wait_containers(fleet, "web", 3)}

    fleet.agent.kill()
    # While the agent is gone its containers keep running.
    assert {c.id for c in wait_containers(fleet, "web", 3)} == ids
    fleet.agent.start()
    fleet.wait_connected()

    # Wait for the restarted agent to report that it applied the current desired set.
    def applied() -> bool:
        status = etcd_json(fleet.etcd, f"{fleet.prefix}status/{fleet.host.name}")
        reports = etcd_prefix(fleet.etcd, f"{fleet.prefix}reports/{fleet.host.name}/")
        return bool(status and status["applied_version"] > 0 and len(reports) == 3)

    wait_until(applied, 30, what="the restarted agent to apply and report its desired set")
    assert {c.id for c in wait_containers(fleet, "web", 3)} == ids


def test_cli_apply_ps_and_get_json(fleet: Fleet, tmp_path: Path) -> None:
    app_file = tmp_path / "web.yaml"
    app_file.write_text(web_spec(fleet.image, replicas=2).model_dump_json())
    dry = fleet_cli(
        "apply", "-f", str(app_file), "--dry-run", server=fleet.server.address, pki=fleet.pki
    )
    assert dry.returncode == 0, dry.stderr
    assert "web.0 -> h1" in dry.stdout and "web.1 -> h1" in dry.stdout
    assert not etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/")

    applied = fleet_cli("apply", "-f", str(app_file), server=fleet.server.address, pki=fleet.pki)
    assert applied.returncode == 0, applied.stderr
    assert "app/web created" in applied.stdout
    wait_containers(fleet, "web", 2)

    def listed() -> list[Any] | None:
        result = fleet_cli("ps", "web", "-o", "json", server=fleet.server.address, pki=fleet.pki)
        rows = json.loads(result.stdout)
        return rows if all(r["status"]["state"] == "running" for r in rows) else None

    rows = wait_until(listed, 30, what="fleet ps to show both replicas running")
    assert sorted((r["app"], r["slot"], r["host"]) for r in rows) == [
        ("web", 0, "h1"),
        ("web", 1, "h1"),
    ]
    docker_ids = {c.id for c in wait_containers(fleet, "web", 2)}
    assert {r["status"]["container_id"] for r in rows} == docker_ids

    diff = fleet_cli("diff", "-f", str(app_file), server=fleet.server.address, pki=fleet.pki)
    assert diff.returncode == 0 and diff.stdout == ""


def test_cli_rejects_a_bad_file_and_stores_nothing(fleet: Fleet, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: web\nimage: {fleet.image}\nreplicas: -1\nportz: []\n")
    before = etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/")
    result = fleet_cli("apply", "-f", str(bad), server=fleet.server.address, pki=fleet.pki)
    assert result.returncode == 2
    assert f"{bad}:3" in result.stderr and "replicas" in result.stderr
    assert f"{bad}:4" in result.stderr and "portz" in result.stderr
    assert "Traceback" not in result.stderr
    assert etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/") == before


def test_cli_says_plainly_when_the_server_is_unreachable(pki: TestPKI) -> None:
    from fleet.testing import free_port

    result = fleet_cli("get", "apps", server=f"127.0.0.1:{free_port()}", pki=pki)
    assert result.returncode == 1
    assert "cannot reach the fleet control plane" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_apply_planned_on_an_old_generation_is_refused_not_merged(fleet: Fleet) -> None:
    from fleet.errors import Conflict

    spec = web_spec(fleet.image, replicas=1)
    [created] = fleet.client.apply([spec], base_generations={"web": 0})
    assert created.generation == 1
    # Someone else scales it in between.
    fleet.client.scale("web", 2)
    mine = spec.model_copy(update={"env": {"GREETING": "mine"}})
    with pytest.raises(Conflict, match="changed since this apply was planned"):
        fleet.client.apply([mine], base_generations={"web": 1})
    stored = etcd_json(fleet.etcd, f"{fleet.prefix}apps/web")
    assert stored is not None
    assert (stored["generation"], stored["spec"]["replicas"]) == (2, 2)
    assert stored["spec"]["env"] == {"GREETING": "hello"}  # nothing of mine was written
    [changed] = fleet.client.apply([mine], base_generations={"web": 2})
    assert changed.action == "changed"


def test_replicas_that_fit_nowhere_make_one_event_per_app_and_reason(fleet: Fleet) -> None:
    """Three slots too big for any host: one `unschedulable` event names them all (one
    per replica made 100,000 events when a large pool went away)."""
    spec = web_spec(fleet.image)
    huge = spec.resources.model_copy(update={"cpu": 1000.0})
    fleet.client.apply([spec.model_copy(update={"resources": huge})])

    def unschedulable() -> list[Any]:
        return [e for e in fleet.client.events(app="web") if e.kind == "unschedulable"]

    wait_until(lambda: unschedulable(), 30, what="the unschedulable event")
    [event] = unschedulable()
    assert event.message.startswith("3 replicas (slots 0, 1, 2): 0/1 hosts fit"), event.message
    assert "insufficient cpu" in event.message, event.message
