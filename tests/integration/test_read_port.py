"""The read port (``fleet server --read-listen``) on a real etcd, in process: it answers
every read while the control plane's event loop is held, shows writes made on the main
port, refuses writes saying where to send them, and a client that wrote reads from the
main port from then on (its own writes are there first). A taken read port fails the
start: tests/integration/test_server_ports.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from fleet.client import FleetClient
from fleet.controlplane.readport import READ_METHODS
from fleet.controlplane.server import ControlPlane, ServerConfig
from fleet.errors import NotFound
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.spec import load_documents
from fleet.testing import EtcdServer, free_port
from fleet.testing.certs import TestPKI
from fleet.transport import Transport
from tests.helpers import eventually

APP = "name: web\nimage: registry.invalid/web:v1\nreplicas: 2\n"
HOLD = 3.0  # seconds the test holds the control plane's loop


def _config(etcd_server: EtcdServer, pki: TestPKI, prefix: str) -> ServerConfig:
    return ServerConfig(
        etcd=[etcd_server.endpoint],
        transport=Transport(pki.server()),
        listen=f"127.0.0.1:{free_port()}",
        read_listen=f"127.0.0.1:{free_port()}",
        prefix=prefix,
    )


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``call`` in a thread; the dict gets its answer (or error) and the time it
    ended (monotonic)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["answer"] = call()
        except Exception as error:
            outcome["error"] = error
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_the_read_port_answers_while_the_loop_is_held(
    etcd_server: EtcdServer, pki: TestPKI
) -> None:
    config = _config(etcd_server, pki, "/t-read-port/")
    admin = pki.client_transport()

    async def scenario() -> None:
        async with ControlPlane(config) as plane:
            main = f"127.0.0.1:{plane.port}"
            reads = f"127.0.0.1:{plane.read_port}"
            writer = FleetClient([main], admin, read_servers=[reads])
            reader = FleetClient([main], admin, read_servers=[reads], timeout=HOLD * 4)
            try:
                # A write on the main port shows on the read port.
                await asyncio.to_thread(writer.apply, load_documents(APP, "app.yaml"))
                await eventually(
                    lambda: [a.name for a in reader.apps()] == ["web"], what="web on the read port"
                )
                assert not reader._wrote  # it has only read
                # The writer reads from the main port now: its answer waits for the loop.
                wrote, wrote_outcome = _in_thread(lambda: writer.apps())
                fresh, fresh_outcome = _in_thread(lambda: reader.apps())
                held_until = time.monotonic() + HOLD
                # Held on purpose: the control plane's loop runs nothing meanwhile.
                time.sleep(HOLD)  # noqa: ASYNC251
                await eventually(
                    lambda: not (wrote.is_alive() or fresh.is_alive()),
                    HOLD * 4,
                    what="both reads answered",
                )
                assert [a.name for a in fresh_outcome["answer"]] == ["web"]
                assert fresh_outcome["ended"] < held_until  # answered while held
                assert [a.name for a in wrote_outcome["answer"]] == ["web"]
                assert wrote_outcome["ended"] >= held_until  # the main port's answer
            finally:
                writer.close()
                reader.close()

    asyncio.run(scenario())


def test_every_read_answers_on_the_read_port_and_nothing_else_does(
    etcd_server: EtcdServer, pki: TestPKI
) -> None:
    config = _config(etcd_server, pki, "/t-read-port-methods/")
    admin = pki.client_transport()

    async def scenario() -> None:
        async with ControlPlane(config) as plane:
            main = f"127.0.0.1:{plane.port}"
            reads = f"127.0.0.1:{plane.read_port}"
            with FleetClient([main], admin) as writer:
                await asyncio.to_thread(writer.apply, load_documents(APP, "app.yaml"))

            def every_read() -> dict[str, Any]:
                with grpc.secure_channel(reads, admin.channel_credentials()) as channel:
                    stub = pb_grpc.FleetServiceStub(channel)
                    answers: dict[str, Any] = {}
                    for method in READ_METHODS:
                        request = (
                            pb.RolloutRequest(app="web")
                            if method.startswith("Rollout")
                            else pb.GetRequest()
                        )
                        answers[method] = getattr(stub, method)(request, timeout=10)
                    try:
                        stub.Scale(pb.ScaleRequest(name="web", replicas=3), timeout=10)
                    except grpc.RpcError as error:
                        answers["Scale"] = error
                    return answers

            async def web_on_the_read_port() -> bool:
                with FleetClient([main], admin, read_servers=[reads]) as reader:
                    return [a.name for a in await asyncio.to_thread(reader.apps)] == ["web"]

            await eventually(web_on_the_read_port, what="web on the read port")
            answers = await asyncio.to_thread(every_read)
            assert [a.name for a in answers["GetApps"].apps] == ["web"]
            assert answers["GetApps"].apps[0].desired == 2
            assert answers["RolloutHistory"].revisions[0].revision == 1
            assert answers["GetServerInfo"].server_id == plane.server_id
            refused = answers["Scale"]
            assert refused.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "read port" in refused.details() and "--server" in refused.details()
            # Nothing was scaled: the main port still says 2.
            with FleetClient([main], admin) as client:
                [web] = await asyncio.to_thread(client.apps, "web")
                assert web.desired == 2
                # An unknown app is NotFound on the read port as on the main one.
                reader = FleetClient([main], admin, read_servers=[reads])
                with reader, pytest.raises(NotFound):
                    await asyncio.to_thread(reader.apps, "nope")

    asyncio.run(scenario())


def test_a_read_port_that_does_not_answer_leaves_reads_to_the_main_port(
    etcd_server: EtcdServer, pki: TestPKI
) -> None:
    config = _config(etcd_server, pki, "/t-read-port-away/")
    admin = pki.client_transport()
    nowhere = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        async with ControlPlane(config) as plane:
            main = f"127.0.0.1:{plane.port}"
            with FleetClient([main], admin, read_servers=[nowhere]) as client:
                assert await asyncio.to_thread(client.apps) == []
                assert not client._wrote

    asyncio.run(scenario())
