"""The control plane's standard gRPC health service, reflection, and Prometheus metrics."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fleet.spec import load_documents
from fleet.testing import DockerHost, EtcdServer, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from tests.conftest import ensure_image


def _metrics(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def test_health_reflection_and_metrics(
    etcd_server: EtcdServer, clean_host: DockerHost, pki: TestPKI, tmp_path: Path
) -> None:
    image = ensure_image(clean_host)
    metrics = f"127.0.0.1:{free_port()}"
    server = FleetServerProcess(
        etcd_server.endpoint,
        "/t-observability/",
        tmp_path,
        pki,
        extra_args=["--metrics-listen", metrics],
    ).start()
    agent = FleetAgentProcess(
        [server.address], clean_host.name, clean_host.docker_url, tmp_path, pki
    ).start()
    channel = server.transport().channel(server.address)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "fleet.v1.FleetService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        [reply] = list(
            reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        names = {s.name for s in reply.list_services_response.service}
        assert {"fleet.v1.FleetService", "fleet.v1.AgentService"} <= names

        with server.client() as client:
            client.apply(load_documents(f"name: web\nimage: {image}\nreplicas: 2\n", "w.yaml"))

            def counted() -> bool:
                text = _metrics(metrics)
                return (
                    'fleet_replicas{app="web",kind="running"} 2.0' in text
                    and 'fleet_replicas{app="web",kind="available"} 2.0' in text
                    and 'fleet_hosts{state="ready"} 1.0' in text
                    and "fleet_agent_streams 1.0" in text
                )

            wait_until(counted, 60, what="the metrics to count 2 running replicas on 1 host")
        text = _metrics(metrics)
        assert 'fleet_replicas{app="web",kind="desired"} 2.0' in text
        assert "fleet_scheduling_seconds_count" in text and "fleet_reconcile_seconds_count" in text
        assert "fleet_leader 1.0" in text  # the only replica leads
    finally:
        channel.close()
        agent.stop()
        server.stop()
