"""Mutual TLS and access control on a real control plane: who may call, as whom, and
what a refusal says. Every refusal is checked to have changed nothing in etcd."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
import pytest

from fleet.client import FleetClient
from fleet.errors import PermissionDenied, Unavailable
from fleet.pki.subjects import Role
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.spec import AppSpec, load_documents
from fleet.testing import EtcdServer, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.transport import TlsFiles, Transport
from tests.helpers import etcd_prefix
from tests.integration.conftest import Fleet, wait_containers

DAY = datetime.timedelta(days=1)


def _spec(image: str, replicas: int = 1) -> AppSpec:
    return load_documents(f"name: sec\nimage: {image}\nreplicas: {replicas}\n", "sec.yaml")[0]


def _client(fleet: Fleet, files: TlsFiles | None) -> FleetClient:
    return FleetClient([fleet.server.address], Transport(files), timeout=5)


def test_clients_without_a_valid_certificate_are_refused(fleet: Fleet, tmp_path: Path) -> None:
    before = etcd_prefix(fleet.etcd, fleet.prefix)
    other = TestPKI(tmp_path / "other-ca")
    attempts = {
        "plaintext": None,
        "another CA": other.client(),
    }
    for what, files in attempts.items():
        with _client(fleet, files) as client, pytest.raises(Unavailable):
            client.apply([_spec(fleet.image)])
        assert etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/") == {}, what
    # fleet's client will not send an expired certificate (test_tls_refusals.py); the server
    # refuses it too, as a channel that skips the client's check shows.
    now = datetime.datetime.now(datetime.UTC)
    expired = fleet.pki.dated_client("expired", now - DAY * 10, now - DAY)
    ca, cert, key = expired.read()
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    with grpc.secure_channel(fleet.server.address, credentials) as channel:
        request = pb.ApplyRequest(specs_json=[_spec(fleet.image).model_dump_json()])
        with pytest.raises(grpc.RpcError) as raised:
            pb_grpc.FleetServiceStub(channel).Apply(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/") == {}
    assert etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/") == {
        k: v for k, v in before.items() if "/apps/" in k
    }


def test_roles_decide_what_a_client_may_do(fleet: Fleet) -> None:
    viewer = fleet.pki.client("vera", Role.viewer)
    deployer = fleet.pki.client("dan", Role.deployer)

    with _client(fleet, viewer) as client:
        assert client.apps() == []  # a viewer reads
        with pytest.raises(PermissionDenied, match="viewer 'vera' may not change apps"):
            client.apply([_spec(fleet.image)])
    assert etcd_prefix(fleet.etcd, f"{fleet.prefix}apps/") == {}

    with _client(fleet, deployer) as client:
        client.apply([_spec(fleet.image)])  # a deployer deploys
        wait_containers(fleet, "sec", 1)
        client.scale("sec", 2)
        wait_containers(fleet, "sec", 2)

    with (
        _client(fleet, viewer) as client,
        pytest.raises(PermissionDenied, match="needs the role admin or deployer"),
    ):
        client.delete_app("sec")
    assert wait_containers(fleet, "sec", 2)


def test_an_agent_certificate_cannot_use_the_api(fleet: Fleet) -> None:
    agent_cert = fleet.pki.agent(fleet.host.name)
    with _client(fleet, agent_cert) as client, pytest.raises(PermissionDenied, match="'h1'"):
        client.apps()


def _register(fleet: Fleet, files: TlsFiles, host_id: str) -> grpc.RpcError:
    """Open the agent stream with ``files`` and register as ``host_id``; the error."""
    channel = Transport(files).channel(fleet.server.address)
    try:
        stub = pb_grpc.AgentServiceStub(channel)
        register = pb.AgentMessage(
            register=pb.Register(
                host_id=host_id, capacity=pb.Resources(cpu=1, memory_bytes=1 << 30)
            )
        )
        with pytest.raises(grpc.RpcError) as raised:
            for _ in stub.Connect(iter([register]), timeout=10):
                pass
        return raised.value
    finally:
        channel.close()


def test_an_agent_can_register_only_as_the_host_its_certificate_names(fleet: Fleet) -> None:
    error = _register(fleet, fleet.pki.agent("h1"), "h2")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "agent certificate for 'h1' cannot register as 'h2'" in error.details()  # type: ignore[attr-defined]

    error = _register(fleet, fleet.pki.client(), "h9")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert not etcd_prefix(fleet.etcd, f"{fleet.prefix}hosts/h2")
    assert not etcd_prefix(fleet.etcd, f"{fleet.prefix}hosts/h9")
    assert "cannot register as 'h2'" in fleet.server.process.log_tail(200)  # refusals are logged


def test_issued_server_certificate_is_not_a_client_certificate(fleet: Fleet) -> None:
    """A stolen server key cannot call the API: its certificate is for serverAuth only."""
    with _client(fleet, fleet.pki.server()) as client, pytest.raises(Unavailable):
        client.apps()


def test_bearer_tokens_carry_a_role_are_stored_hashed_and_can_be_revoked(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    token_port = f"127.0.0.1:{free_port()}"
    server = FleetServerProcess(
        etcd_server.endpoint, "/t-tokens/", tmp_path, pki, extra_args=["--token-listen", token_port]
    ).start()
    try:
        with server.client() as admin:
            made = admin.create_token("ci", "deployer")
            viewer_token = admin.create_token("dash", "viewer").token
            with (
                server.client("dan", Role.deployer) as deployer,
                pytest.raises(PermissionDenied, match="manage API tokens"),
            ):
                deployer.create_token("x", "admin")

        def by_token(token: str) -> FleetClient:
            return FleetClient([token_port], Transport(None, token=token, token_ca=pki.ca))

        spec = load_documents("name: tok\nimage: x:v1\nreplicas: 0\n", "tok.yaml")
        with by_token(made.token) as ci:
            [change] = ci.apply(spec)  # a deployer token deploys
            assert change.action == "created"
        with by_token(viewer_token) as dash:
            assert [a.name for a in dash.apps()] == ["tok"]
            with pytest.raises(PermissionDenied, match="viewer 'token:dash' may not change apps"):
                dash.scale("tok", 2)
            # Streaming calls take tokens too, within the role (issue #17, 12) ...
            assert isinstance(list(dash.events(limit=5)), list)
            with pytest.raises(PermissionDenied, match="viewer 'token:dash' may not"):
                list(dash.logs("tok"))
        # ... and their refusals are logged with the peer, as every other refusal.
        wait_until(
            lambda: (
                "refused ipv4:127.0.0.1" in server.process.log_tail(200)
                and "may not read container logs" in server.process.log_tail(200)
            ),
            10,
            what="the refused logs call in the server's log",
        )
        forged = by_token(made.token.rsplit("_", 1)[0] + "_wrong")
        with forged, pytest.raises(PermissionDenied, match="unknown or revoked token"):
            forged.apps()

        # Only the hash is kept; the secret appears nowhere in etcd.
        secret = made.token.rsplit("_", 1)[1]
        assert not [
            k for k, v in etcd_prefix(etcd_server, "/t-tokens/").items() if secret.encode() in v
        ]

        # A revoked token stops working at once.
        with server.client() as admin:
            admin.delete_token(made.id)
        with by_token(made.token) as ci, pytest.raises(PermissionDenied, match="revoked"):
            ci.apps()
    finally:
        server.stop()


def test_a_viewer_may_not_list_processes_as_with_logs(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    """`fleet top` shows command lines, which may hold secrets (issue #17, 16): deployers
    and admins only, as `fleet logs`; the refusal names the role it needs."""
    server = FleetServerProcess(etcd_server.endpoint, "/t-top/", tmp_path, pki).start()
    try:
        top = server.cli("top", "nosuch", name="vera", role="viewer")
        assert top.returncode == 1, top.stdout + top.stderr
        assert top.stderr.strip() == (
            "error: viewer 'vera' may not list container processes; "
            "that needs the role admin or deployer"
        )
        with server.client("vera", Role.viewer) as viewer:
            with pytest.raises(PermissionDenied, match="may not list container processes"):
                viewer.top(app="nosuch")
            with pytest.raises(PermissionDenied, match="may not list container processes"):
                viewer.top(host="h1")
        # A deployer gets past the role check to the app, which does not exist.
        top = server.cli("top", "nosuch", name="dan", role="deployer")
        assert top.returncode == 1 and "app 'nosuch'" in top.stderr, top.stderr
        wait_until(
            lambda: "may not list container processes" in server.process.log_tail(200),
            10,
            what="the refused top call in the server's log",
        )
    finally:
        server.stop()
