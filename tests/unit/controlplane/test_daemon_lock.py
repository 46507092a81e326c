"""Tests of the rule that two agents never manage one Docker daemon: ``daemon_taken``
(the control plane's check at registration) and ``daemon_identity`` (the agent's
``docker_daemon`` fact)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.dockerruntime import daemon_identity
from fleet.controlplane.registration import DaemonIndex, daemon_taken
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


class CountedWalks(dict):  # type: ignore[type-arg]
    """A hosts' table that counts the walks of it."""

    walks = 0

    def items(self):  # type: ignore[no-untyped-def]
        self.walks += 1
        return super().items()


def test_an_index_walks_the_hosts_once_per_table() -> None:
    """Registrations while no host record changes (a restart's reconnects) look the
    daemon up; the table is walked again only once it is another."""
    state = cluster()
    for n in range(50):
        add_host(state, f"h{n}", facts={"docker_daemon": f"d{n}"})
    table = state.hosts = CountedWalks(state.hosts)
    index = DaemonIndex()
    for n in range(50):
        assert daemon_taken(state, f"h{n}", {"docker_daemon": f"d{n}"}, index) is None
        assert daemon_taken(state, "new", {"docker_daemon": f"d{n}"}, index) is not None
    assert table.walks == 1
    # A new table (an informer's snapshot after a host record changed): h7 is gone.
    state.hosts = {k: v for k, v in table.items() if k != "h7"}
    assert daemon_taken(state, "new", {"docker_daemon": "d7"}, index) is None
    assert daemon_taken(state, "new", {"docker_daemon": "d8"}, index) is not None


@given(
    st.dictionaries(
        st.sampled_from([f"h{n}" for n in range(8)]),
        st.tuples(st.sampled_from(["", "d1", "d2", "d3"]), st.booleans()),
    ),
    st.sampled_from([f"h{n}" for n in range(9)]),
    st.sampled_from(["", "d1", "d2", "d4"]),
)
def test_an_index_answers_as_a_walk_of_every_host(
    hosts: dict[str, tuple[str, bool]], host_id: str, daemon: str
) -> None:
    """The first connected host (by id) other than the one registering whose record
    names its daemon is named; none when there is none."""
    state = cluster()
    for name, (named, connected) in hosts.items():
        add_host(state, name, facts={"docker_daemon": named} if named else {}, connected=connected)
    holders = sorted(
        name
        for name, (named, connected) in hosts.items()
        if daemon and named == daemon and connected and name != host_id
    )
    why = daemon_taken(state, host_id, {"docker_daemon": daemon}, DaemonIndex())
    if holders:
        assert why is not None and f"already managed by host {holders[0]!r}" in why
    else:
        assert why is None


def test_identity_is_stable_and_short() -> None:
    assert daemon_identity(INFO) == daemon_identity(dict(INFO))
    assert len(daemon_identity(INFO)) == 16


@given(st.sampled_from(["ID", "Name", "DockerRootDir"]), st.text(min_size=1, max_size=20))
def test_daemons_sharing_a_docker_id_are_told_apart(field: str, suffix: str) -> None:
    """Before Docker 23 every daemon of a machine has the same ID (/etc/docker/key.json):
    a different host name or data root is another daemon."""
    other = {**INFO, field: INFO[field] + suffix}
    assert daemon_identity(other) != daemon_identity(INFO)
