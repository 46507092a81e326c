"""What a real ``fleet server``'s ports do with whoever reaches them: a port that is
taken fails the start with one clear line (gRPC would share it through SO_REUSEPORT),
and refused calls, however large, leave the server's memory where it was."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from fleet.pki.subjects import Role
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.testing import EtcdServer, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.transport import MAX_REQUEST_BYTES
from tests.helpers import scrape


@pytest.fixture
def token_server(
    request: pytest.FixtureRequest, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> Iterator[tuple[FleetServerProcess, str, str]]:
    """A server with a token port, a metrics port and a read port: (server, token,
    metrics address). Each test's is a pool of its own (its prefix), with a secrets key
    of its own."""
    token, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    reads = f"127.0.0.1:{free_port()}"
    server = FleetServerProcess(
        etcd_server.endpoint,
        f"/t-ports-{request.node.name[:40].replace('_', '-')}/",
        tmp_path,
        pki,
        extra_args=[
            *("--token-listen", token, "--metrics-listen", metrics),
            *("--read-listen", reads),
        ],
    ).start()
    try:
        yield server, token, metrics
    finally:
        server.stop()


def _second_server(first: FleetServerProcess, flag: str, address: str) -> tuple[int, str]:
    """Start another server like ``first`` with ``flag address``; its exit status and
    output once it has exited."""
    second = FleetServerProcess(
        first.etcd_endpoint,
        first.prefix,
        first.log_dir,
        first.pki,
        listen=address if flag == "--listen" else None,
        log_name=f"second{flag}.log",
        extra_args=[] if flag == "--listen" else [flag, address],
    )
    process = second.process.start()
    wait_until(lambda: not process.running, 30, what=f"the server with {flag} to exit")
    returncode = process.stop()  # reaped, its log closed
    return returncode or 0, process.log_path.read_text()


def test_a_second_server_on_a_taken_port_fails_and_the_first_keeps_serving(
    token_server: tuple[FleetServerProcess, str, str],
) -> None:
    first, token, metrics = token_server
    for flag, taken in [
        ("--listen", first.address),
        ("--token-listen", token),
        ("--metrics-listen", metrics),
        ("--read-listen", first.extra_args[-1]),
    ]:
        returncode, output = _second_server(first, flag, taken)
        assert returncode == 1, output
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert errors == [f"error: cannot listen on {taken}: another process is using it"]
        assert "Traceback" not in output

    assert first.process.running
    with first.client() as client:
        for _ in range(10):  # every new connection reaches the first
            with first.client(timeout=5) as fresh:
                assert fresh.hosts() == []
        assert client.apps() == []
    assert first.pki is not None
    status, text, _ = scrape(metrics, ca=first.pki.ca, cert=first.pki.client())
    assert status == 200 and "fleet_leader" in text


def _rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _refused(
    target: str, credentials: grpc.ChannelCredentials, calls: int, pid: int
) -> tuple[set[str], int]:
    """Make ``calls`` Apply calls of almost MAX_REQUEST_BYTES, four at a time; the
    details of their refusals and the server's highest RSS seen (MiB)."""
    request = pb.ApplyRequest(specs_json=["x" * (MAX_REQUEST_BYTES - 64 * 1024)])
    refusals: set[str] = set()
    peak = 0
    with grpc.secure_channel(target, credentials) as channel:
        stub = pb_grpc.FleetServiceStub(channel)

        def call(_: int) -> None:
            try:
                stub.Apply(request, timeout=30)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
                refusals.add(error.details())  # type: ignore[attr-defined]
            else:
                raise AssertionError("an Apply that should be refused was accepted")

        with ThreadPoolExecutor(4) as pool:
            for done, _ in enumerate(pool.map(call, range(calls)), 1):
                if done % 20 == 0:
                    peak = max(peak, _rss_mib(pid))
    return refusals, max(peak, _rss_mib(pid))


def test_refused_large_calls_leave_the_servers_memory_bounded(
    token_server: tuple[FleetServerProcess, str, str], pki: TestPKI
) -> None:
    """Measured with 300 calls a port: before, each refused call kept its 4 MiB request
    (a reference cycle the raised GC thresholds left alone) and the server grew by
    about 1.2 GiB a port; now the token port grows by a few MiB and the main port by
    what four 4 MiB calls in flight use at once."""
    server, token, _ = token_server
    pid = server.process.pid
    assert pid is not None
    baseline = _rss_mib(pid)
    ca = pki.ca.read_bytes()

    # The token port, without a token: refused before the request is read.
    anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
    refusals, peak = _refused(token, anonymous, 300, pid)
    print(f"token port: RSS {baseline} -> {peak} MiB")
    assert peak - baseline < 100, f"RSS {baseline} -> {peak} MiB on the token port"
    assert refusals == {
        "this port takes a bearer token (--token or FLEET_TOKEN), not a certificate"
    }

    # The main port, with a viewer's certificate: authenticated, and may not apply.
    viewer = pki.client("vera", Role.viewer)
    certificate = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=viewer.key.read_bytes(),
        certificate_chain=viewer.cert.read_bytes(),
    )
    refusals, peak = _refused(server.address, certificate, 300, pid)
    print(f"main port: RSS {baseline} -> {peak} MiB")
    assert peak - baseline < 300, f"RSS {baseline} -> {peak} MiB on the main port"
    assert refusals == {"viewer 'vera' may not change apps; that needs the role admin or deployer"}

    with server.client() as client:
        assert client.apps() == []
