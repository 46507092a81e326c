"""Two agents never manage one Docker daemon at once: an agent started by mistake on a
daemon that a connected host's agent already manages is refused at registration (with
why, in its log) and touches nothing; once the first agent is gone it may take over."""

from __future__ import annotations

from pathlib import Path

from fleet.spec import load_documents
from fleet.testing.fleetprocs import FleetAgentProcess
from tests.integration.conftest import Fleet, wait_containers, wait_until


def test_a_second_agent_on_the_same_daemon_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    fleet.client.apply(load_documents(f"name: solo\nimage: {fleet.image}\nreplicas: 1\n"))
    [container] = wait_containers(fleet, "solo", 1)
    twin = FleetAgentProcess(
        [fleet.server.address], "twin", fleet.host.docker_url, tmp_path, fleet.pki
    ).start()
    try:
        refusal = (
            f"the Docker daemon of agent 'twin' is already managed by host '{fleet.host.name}'"
        )

        def refused_twice() -> bool:
            return twin.process.log_tail(200).count(refusal) >= 2

        wait_until(refused_twice, 30, what="the second agent refused (twice)")
        assert "stop the other agent, or run this one as --host-id" in twin.process.log_tail(200)
        assert "twin" not in {h.host_id for h in fleet.client.hosts()}
        # Nothing of the first agent's was touched: the same container, still running.
        [still] = wait_containers(fleet, "solo", 1)
        assert still.id == container.id
        # The first agent gone (its host no longer connected), the second may take over.
        fleet.agent.stop()

        def twin_connected() -> bool:
            return any(h.connected for h in fleet.client.hosts() if h.host_id == "twin")

        wait_until(twin_connected, 40, what="the second agent to connect once the first left")
    finally:
        twin.stop()
