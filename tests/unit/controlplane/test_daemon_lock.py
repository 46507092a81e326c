"""Tests of the rule that two agents never manage one Docker daemon: ``daemon_taken``
(the control plane's check at registration) and ``daemon_identity`` (the agent's
``docker_daemon`` fact)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.dockerruntime import daemon_identity
from fleet.controlplane.registration import daemon_taken
from tests.unit.controlplane.builders import add_host, cluster

INFO = {"ID": "ABCD:EFGH", "Name": "node1", "DockerRootDir": "/var/lib/docker"}


def test_a_daemon_managed_by_a_connected_host_is_taken() -> None:
    state = cluster()
    add_host(state, "h1", facts={"docker_daemon": "d1"})
    why = daemon_taken(state, "h2", {"docker_daemon": "d1"})
    assert why is not None
    assert "already managed by host 'h1'" in why and "--host-id h1" in why


def test_the_same_host_registering_again_may() -> None:
    state = cluster()
    add_host(state, "h1", facts={"docker_daemon": "d1"})
    assert daemon_taken(state, "h1", {"docker_daemon": "d1"}) is None


def test_a_disconnected_host_holds_no_daemon() -> None:
    state = cluster()
    add_host(state, "h1", facts={"docker_daemon": "d1"}, connected=False)
    assert daemon_taken(state, "h2", {"docker_daemon": "d1"}) is None


def test_other_daemons_and_agents_without_the_fact_may() -> None:
    state = cluster()
    add_host(state, "h1", facts={"docker_daemon": "d1"})
    add_host(state, "old", facts={})
    assert daemon_taken(state, "h2", {"docker_daemon": "d2"}) is None
    assert daemon_taken(state, "h2", {}) is None  # an agent from before the fact


def test_identity_is_stable_and_short() -> None:
    assert daemon_identity(INFO) == daemon_identity(dict(INFO))
    assert len(daemon_identity(INFO)) == 16


@given(st.sampled_from(["ID", "Name", "DockerRootDir"]), st.text(min_size=1, max_size=20))
def test_daemons_sharing_a_docker_id_are_told_apart(field: str, suffix: str) -> None:
    """Before Docker 23 every daemon of a machine has the same ID (/etc/docker/key.json):
    a different host name or data root is another daemon."""
    other = {**INFO, field: INFO[field] + suffix}
    assert daemon_identity(other) != daemon_identity(INFO)
