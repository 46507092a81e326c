"""Refused credentials, as a user meets them: the real CLI and agent against a real
control plane (on real etcd), each told what was refused, by whom and why; and key
files others can read refused before anything starts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fleet.secrets import ensure_key_file
from fleet.testing import DockerHost, EtcdServer, wait_until
from fleet.testing.certs import TestPKI, tls_args
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.transport import TlsFiles

DAY = timedelta(days=1)
NOT_RUNNING = "is `fleet server`"


@pytest.fixture(scope="module")
def server(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetServerProcess]:
    log_dir = tmp_path_factory.mktemp("tls-refusals")
    running = FleetServerProcess(etcd_server.endpoint, "/t-tls-refusals/", log_dir, pki).start()
    try:
        yield running
    finally:
        running.stop()
        print(running.process.log_tail(60))


def _fleet(server: FleetServerProcess, files: TlsFiles, *args: str) -> tuple[int, str]:
    """Run the CLI with ``files``; its exit status and what it said (one spaced line)."""
    command = [sys.executable, "-m", "fleet", *args, "--server", server.address]
    done = subprocess.run(
        command + tls_args(files), capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def test_a_client_certificate_from_another_ca_is_refused_by_the_server(
    server: FleetServerProcess, pki: TestPKI, tmp_path: Path
) -> None:
    other = TestPKI(tmp_path / "other").client()
    code, said = _fleet(server, TlsFiles(pki.ca, other.cert, other.key), "get", "apps")
    assert code == 1, said
    assert "the server refused our certificate" in said
    assert f"{other.cert} is not signed by the CA in {pki.ca}" in said
    assert f"files used: CA {pki.ca}, certificate {other.cert}" in said
    assert NOT_RUNNING not in said


def test_a_server_certificate_from_a_ca_we_do_not_trust_is_refused_by_us(
    server: FleetServerProcess, pki: TestPKI, tmp_path: Path
) -> None:
    other = TestPKI(tmp_path / "other")
    mine = pki.client()
    code, said = _fleet(server, TlsFiles(other.ca, mine.cert, mine.key), "get", "apps")
    assert code == 1, said
    assert "we refused the server's certificate" in said
    assert f"it is not signed by the CA we trust, the one in {other.ca}" in said
    assert NOT_RUNNING not in said


def test_an_expired_or_early_certificate_is_named_before_connecting(
    server: FleetServerProcess, pki: TestPKI
) -> None:
    now = datetime.now(UTC)
    expired = pki.dated_client("lapsed", now - 10 * DAY, now - DAY)
    code, said = _fleet(server, expired, "get", "apps")
    assert code == 1, said
    assert f"the certificate {expired.cert} (from --tls-ca/--tls-cert/--tls-key) expired on" in said
    assert "fleet certs issue client lapsed --role admin" in said

    early = pki.dated_client("early", now + DAY, now + 10 * DAY)
    code, said = _fleet(server, early, "get", "apps")
    assert code == 1, said
    assert (
        f"the certificate {early.cert} (from --tls-ca/--tls-cert/--tls-key) is not valid before"
        in said
    )


def test_the_server_logs_why_it_refused_a_handshake_but_cannot_say_whose(
    server: FleetServerProcess, pki: TestPKI
) -> None:
    """gRPC core refuses the handshake before any Python code runs: its own log line
    (on the server's stderr) gives the reason only (see SECURITY.md)."""
    now = datetime.now(UTC)
    expired = pki.dated_client("stale", now - 10 * DAY, now - DAY)
    ca, cert, key = expired.read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)  # skips fleet's own check
    with (
        grpc.secure_channel(server.address, credentials) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    wait_until(
        lambda: (
            "CERTIFICATE_VERIFY_FAILED: certificate has expired" in server.process.log_tail(200)
        ),
        10,
        what="gRPC's line about the refused handshake in the server's log",
    )


def test_a_key_others_can_read_is_refused(
    server: FleetServerProcess, pki: TestPKI, tmp_path: Path
) -> None:
    mine = pki.client()
    loose = tmp_path / "client.key"
    loose.write_bytes(mine.key.read_bytes())
    loose.chmod(0o644)
    code, said = _fleet(server, TlsFiles(pki.ca, mine.cert, loose), "get", "apps")
    assert code == 1, said
    assert f"the TLS key {loose} has mode 0644" in said
    assert f"run `chmod 600 {loose}`" in said


def test_an_agent_whose_certificate_names_another_host_stops_and_says_why(
    server: FleetServerProcess, pki: TestPKI, single_host: DockerHost, tmp_path: Path
) -> None:
    h1 = pki.agent("h1")
    agent = FleetAgentProcess(
        [server.address], "h2", single_host.docker_url, tmp_path, pki, tls=h1
    ).start()
    try:
        wait_until(lambda: not agent.process.running, 30, what="the refused agent to stop")
        said = " ".join(agent.process.log_tail(40).split())
        assert agent.process.returncode == 1, said
        assert (
            f"its certificate {h1.cert} names host 'h1', the agent was started as "
            "--host-id 'h2'; fix --host-id, or issue a certificate for 'h2'"
        ) in said
    finally:
        agent.stop()
    assert "cannot register as 'h2'" in server.process.log_tail(200)  # and the server logs it


def test_the_server_refuses_a_secrets_key_others_can_read(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    key = ensure_key_file(tmp_path / "secrets.key")  # where FleetServerProcess points
    key.chmod(0o644)
    server = FleetServerProcess(etcd_server.endpoint, "/t-loose-secrets-key/", tmp_path, pki)
    done = subprocess.run(
        server.process.args, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: the secrets key {key} has mode 0644, so its group and other users can "
        f"access it; a key must be readable by its owner only: run `chmod 600 {key}`"
    ]
    key.chmod(0o600)
    server.start()  # the same key, private: it starts
    server.stop()
