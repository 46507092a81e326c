"""The control plane's standard gRPC health service, reflection, and Prometheus metrics,
and who may reach each: /metrics is HTTPS for a client certificate or a fleet token,
health is for any certificate of fleet's CA, reflection is off unless asked for."""

from __future__ import annotations

import ssl
import urllib.error
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fleet.pki.subjects import Role
from fleet.spec import load_documents
from fleet.testing import DockerHost, EtcdServer, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.transport import Transport
from tests.conftest import ensure_image
from tests.helpers import scrape


def _list_services(channel: grpc.Channel) -> set[str]:
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    [reply] = list(
        reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
    )
    return {s.name for s in reply.list_services_response.service}


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
        extra_args=["--metrics-listen", metrics, "--reflection"],
    ).start()
    agent = FleetAgentProcess(
        [server.address], clean_host.name, clean_host.docker_url, tmp_path, pki
    ).start()
    channel = server.transport().channel(server.address)
    viewer = pki.client("vic", Role.viewer)

    def _metrics(address: str) -> str:
        status, text, _ = scrape(address, ca=pki.ca, cert=viewer)
        assert status == 200, text
        return text

    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "fleet.v1.FleetService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

        names = _list_services(channel)  # asked for with --reflection
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
        assert "fleet_moves_held 0.0" in text  # its one host is up
        # The apply's handler was timed, and the collector's pauses are (`fleet server`
        # collects the young every second: there is at least one by now).
        assert 'fleet_api_call_seconds_count{method="Apply"} 1.0' in text
        assert _sample(text, "fleet_gc_pause_seconds_count") >= 1
        # The agent's reports were stored: each batch's etcd time is part of the whole.
        batches = _sample(text, "fleet_report_batch_write_seconds_count")
        assert 1 <= batches <= _sample(text, "fleet_report_write_seconds_count")
        assert _sample(text, "fleet_report_batch_write_seconds_sum") <= _sample(
            text, "fleet_report_write_seconds_sum"
        )
    finally:
        channel.close()
        agent.stop()
        server.stop()


def test_metrics_answer_a_client_certificate_or_a_token_and_reflection_is_off_by_default(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    """/metrics lists the pool's apps and hosts: HTTPS with the server's certificate, for
    a client certificate of fleet's CA or a fleet token, of any role; nobody else."""
    metrics = f"127.0.0.1:{free_port()}"
    server = FleetServerProcess(
        etcd_server.endpoint,
        "/t-metrics-auth/",
        tmp_path,
        pki,
        extra_args=["--metrics-listen", metrics],
    ).start()
    try:
        # Refused: plain HTTP (told to use HTTPS), no credentials, an agent's certificate,
        # a certificate of another CA (in the handshake), an unknown token.
        status, text, _ = scrape(metrics)
        assert (status, text) == (
            400,
            "this port speaks HTTPS (a plain HTTP request came): scrape it with scheme: https\n",
        )
        status, text, headers = scrape(metrics, ca=pki.ca)
        assert status == 401 and "client certificate of fleet's CA" in text
        assert headers["WWW-Authenticate"] == 'Bearer realm="fleet"'
        status, text, _ = scrape(metrics, ca=pki.ca, cert=pki.agent("h9"))
        assert status == 403 and "agent certificate 'h9' may not read metrics" in text
        other = TestPKI(tmp_path / "other-ca")
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            scrape(metrics, ca=pki.ca, cert=other.client("eve", Role.admin))
        assert scrape(metrics, ca=pki.ca, token="fleet_0123_nope")[:2] == (
            401,
            "unknown or revoked token\n",
        )
        log = server.process.log_tail(200)
        assert "refused /metrics to 127.0.0.1: plain HTTP" in log
        assert "refused /metrics to 127.0.0.1: agent certificate 'h9' may not read metrics" in log

        # Served: a client certificate of any role, and a viewer token made for Prometheus.
        status, text, _ = scrape(metrics, ca=pki.ca, cert=pki.client("vic", Role.viewer))
        assert status == 200 and "fleet_leader 1.0" in text, text
        made = server.cli("tokens", "create", "prom", "--role", "viewer")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        status, text, _ = scrape(metrics, ca=pki.ca, token=token)
        assert status == 200 and 'fleet_hosts{state="ready"}' in text, text
        token_id = token.split("_")[1]
        assert server.cli("tokens", "delete", token_id).returncode == 0
        assert scrape(metrics, ca=pki.ca, token=token)[:2] == (401, "unknown or revoked token\n")

        # Reflection is off unless --reflection; health answers any certificate of the
        # CA, an agent's too (the main port's mutual TLS has checked it).
        with server.transport().channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                _list_services(channel)
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        with Transport(pki.agent("h9")).channel(server.address) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()


def test_plain_http_metrics_must_be_asked_for(etcd_server: EtcdServer, tmp_path: Path) -> None:
    """A server without TLS cannot serve /metrics over HTTPS: it refuses to start rather
    than fall back to plain HTTP, unless --metrics-insecure says so."""
    metrics = f"127.0.0.1:{free_port()}"
    refused = FleetServerProcess(
        etcd_server.endpoint,
        "/t-metrics-plain/",
        tmp_path,
        None,
        log_name="refused.log",
        extra_args=["--metrics-listen", metrics],
    )
    process = refused.process.start()
    try:
        wait_until(lambda: not process.running, 30, what="the server without TLS to exit")
    finally:
        returncode = process.stop()  # reaped (or, if it serves, stopped)
    assert returncode == 1
    log = process.log_path.read_text().splitlines()
    errors = [line for line in log if line.startswith("error:")]
    assert errors == [
        "error: --metrics-listen serves HTTPS with the server's certificate, and this server "
        "has none (--insecure); to serve /metrics over plain HTTP to anyone, add "
        "--metrics-insecure"
    ]
    server = FleetServerProcess(
        etcd_server.endpoint,
        "/t-metrics-plain/",
        tmp_path,
        None,
        extra_args=["--metrics-listen", metrics, "--metrics-insecure"],
    ).start()
    try:
        status, text, _ = scrape(metrics)
        assert status == 200 and "fleet_leader" in text
        assert f"INSECURE: {metrics} serves /metrics" in server.process.log_tail(200)
    finally:
        server.stop()


def _sample(text: str, name: str) -> float:
    """The value of the unlabelled sample ``name`` in a Prometheus text page."""
    [line] = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])
