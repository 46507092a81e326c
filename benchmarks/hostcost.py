"""What one connected host costs the control plane at rest, beside what gRPC's own
connection and stream cost (#24 item 3).

Three servers, one after the other, in steps of ``--step`` hosts up to ``--hosts``:

* **connection**: the bare server below, reached by plain gRPC channels (one connection
  each, no call): what grpcio's server holds for a connection alone;
* **grpc**: a bare grpc.aio server with fleet's agent service and the main port's
  options, whose ``Connect`` answers the Register and then only reads (one task a
  stream, as fleet's), reached by hollow hosts (``fleet.testing.hollow``: the real agent
  over an in-memory runtime): the floor, what the connection and its stream cost in
  grpcio;
* **fleet**: ``fleet server`` (insecure, no apps), reached by the same hollow hosts,
  each registered, its liveness kept, its reports written and its desired set pushed
  (empty).

At each step, once every host is connected and a settle time has passed, the server's
resident memory (VmRSS) is read. A host's cost is the slope between the steps after the
first (the first step also pays for what a server allocates once: buffers, caches,
glibc's arenas). Figures go to benchmarks/results/hostcost.json.

    .venv/bin/python benchmarks/hostcost.py [--hosts 3000] [--step 1000] [--settle 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from _harness import describe, git_state, machine, quietly

from fleet.client import FleetClient
from fleet.controlplane.mallocpolicy import limit_malloc_arenas
from fleet.controlplane.portoptions import MAIN_PORT_SERVER_OPTIONS
from fleet.errors import FleetError
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.testing import EtcdServer, wait_until
from fleet.testing.procs import ManagedProcess, free_port
from fleet.transport import Transport

HOSTS_PER_PROCESS = 250
HEARTBEAT_SECONDS = 5.0


class _BareAgentService(pb_grpc.AgentServiceServicer):
    """Registers every agent and reads what it sends: a stream with no fleet behind it."""

    def __init__(self) -> None:
        self.streams = 0

    # Read and written as fleet's (``context.read``/``context.write``): gRPC's request
    # iterator holds the last message it gave, and its loop over answers the last sent.
    async def Connect(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        host_id = first.register.host_id
        del first
        await context.write(
            pb.ServerMessage(
                registered=pb.Registered(host_id=host_id, heartbeat_seconds=HEARTBEAT_SECONDS)
            )
        )
        self.streams += 1
        ended = asyncio.get_running_loop().create_future()

        async def read() -> None:
            while await context.read() is not grpc.aio.EOF:
                pass

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _task: ended.done() or ended.set_result(None))
        try:
            await ended
        finally:
            self.streams -= 1
            reader.cancel()


async def _serve_bare(port: int, status: Path) -> None:
    server = grpc.aio.server(options=MAIN_PORT_SERVER_OPTIONS)
    service = _BareAgentService()
    pb_grpc.add_AgentServiceServicer_to_server(service, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    while True:
        await asyncio.to_thread(status.write_text, str(service.streams))
        await asyncio.sleep(0.5)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def _hold_connections(address: str, count: int) -> None:
    """``count`` connections to ``address``, each its own (no shared subchannel), and no
    call on any: says ``ready`` once all are up, then holds them."""
    own = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=own) for _ in range(count)]
    await asyncio.gather(*(channel.channel_ready() for channel in channels))
    print("ready", flush=True)
    await asyncio.Event().wait()


def _connections(address: str, count: int, log: Path, nice: int) -> ManagedProcess:
    command = ["nice", "-n", str(nice), sys.executable, __file__, "--connections"]
    return ManagedProcess([*command, address, str(count)], log, name="connections").start()


def _hollow(address: str, first: int, count: int, log: Path, nice: int) -> ManagedProcess:
    command = ["nice", "-n", str(nice), sys.executable, "-m", "fleet.testing.hollow"]
    command += ["--server", address, "--insecure", "--hosts", str(count), "--first", str(first)]
    command += ["--name", "hollow", "--spread", f"{max(2.0, count / 50):g}"]
    return ManagedProcess(command, log, name=f"hollow {first}").start()


def measure(kind: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Start ``kind``'s server, connect hosts step by step, read its RSS at each."""
    etcd: EtcdServer | None = None
    hollows: list[ManagedProcess] = []
    holders: list[tuple[ManagedProcess, int]] = []  # (kind "connection") and their count
    port = free_port()
    address = f"127.0.0.1:{port}"
    status = work / f"{kind}-streams"
    if kind in ("connection", "grpc"):
        command = [sys.executable, __file__, "--bare-server", str(port), str(status)]
    else:
        etcd = EtcdServer(data_dir=work / "etcd").start()
        command = [sys.executable, "-m", "fleet", "server", "--etcd", etcd.endpoint]
        command += ["--listen", address, "--prefix", "/hostcost/", "--insecure"]
        command += ["--secrets-key-file", str(work / "secrets.key"), "--log-level", "warning"]
        command += ["--heartbeat-interval", f"{HEARTBEAT_SECONDS:g}"]
    server = ManagedProcess(command, work / f"{kind}-server.log", name=f"{kind} server").start()
    client = FleetClient([address], Transport(None), timeout=60) if kind == "fleet" else None

    def connected() -> int:
        """Hosts connected now; -1 while the server does not answer yet."""
        try:
            if kind == "connection":  # (the bare server counts streams, and there are none)
                ready = sum(n for holder, n in holders if "ready" in holder.log_tail(5))
                return ready if status.exists() else -1
            if client is None:
                return int(status.read_text() or 0) if status.exists() else -1
            return sum(1 for host in client.hosts() if host.connected)
        except (FleetError, ValueError):
            return -1

    steps: list[dict[str, Any]] = []
    try:
        assert server.pid is not None
        wait_until(lambda: connected() >= 0, 30, what=f"{kind} server to answer")
        time.sleep(args.settle / 3)
        steps.append({"hosts": 0, "rss_kib": _rss_kib(server.pid)})
        first = 0
        for target in range(args.step, args.hosts + 1, args.step):
            while first < target:
                count = min(HOSTS_PER_PROCESS, target - first)
                log = work / f"{kind}-hollow-{first}.log"
                if kind == "connection":
                    holder = _connections(address, count, log, args.hollow_nice)
                    holders.append((holder, count))
                    hollows.append(holder)  # (stopped with the hollow hosts)
                else:
                    hollows.append(_hollow(address, first, count, log, args.hollow_nice))
                first += count
            began = time.monotonic()
            wait_until(
                lambda wanted=target: connected() >= wanted, 300, what=f"{target} hosts to connect"
            )
            took = time.monotonic() - began
            time.sleep(args.settle)
            rss = _rss_kib(server.pid)
            steps.append({"hosts": target, "rss_kib": rss, "connect_seconds": round(took, 1)})
            print(f"  {kind}: {target:,} hosts, RSS {rss / 1024:.1f} MiB", flush=True)
    finally:
        for hollow in hollows:
            quietly("hollow", hollow.stop)
        quietly("server", server.stop)
        if client is not None:
            client.close()
        if etcd is not None:
            quietly("etcd", etcd.stop)
    later = steps[1:]
    slope = (
        (later[-1]["rss_kib"] - later[0]["rss_kib"]) / (later[-1]["hosts"] - later[0]["hosts"])
        if len(later) > 1
        else math.nan
    )
    return {"steps": steps, "kib_per_host": round(slope, 1)}


def table(result: dict[str, Any]) -> str:
    kinds = {"connection": "connection", "grpc": "+ stream", "fleet": "fleet server"}
    lines = [f"{'':28}" + "".join(f"{label:>16}" for label in kinds.values())]
    for n, step in enumerate(result["fleet"]["steps"]):
        rss = [result[kind]["steps"][n]["rss_kib"] / 1024 for kind in kinds]
        label = f"RSS, {step['hosts']:,} hosts"
        lines.append(f"{label:28}" + "".join(f"{value:>12.1f} MiB" for value in rss))
    per = [result[kind]["kib_per_host"] for kind in kinds]
    lines.append(f"{'per connected host':28}" + "".join(f"{value:>12.1f} KiB" for value in per))
    connection, bare, fleet = per
    stream, own = "of which the stream", "of which fleet's own"
    lines.append(f"{stream:28}{'':16}{bare - connection:>12.1f} KiB")
    lines.append(f"{own:28}{'':32}{fleet - bare:>12.1f} KiB")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--connections":
        asyncio.run(_hold_connections(sys.argv[2], int(sys.argv[3])))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--bare-server":
        limit_malloc_arenas()  # as `fleet server` does: the same heap beside it
        asyncio.run(_serve_bare(int(sys.argv[2]), Path(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--hosts", type=int, default=3000)
    parser.add_argument("--step", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds after connecting")
    parser.add_argument("--hollow-nice", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--output", default="hostcost")
    args = parser.parse_args()
    if args.hosts < 2 * args.step:
        parser.error("--hosts must be at least two steps (the cost is the slope after the first)")
    result: dict[str, Any] = {"machine": machine(), "git": git_state()}
    result["args"] = {**vars(args), "out": str(args.out)}
    print(describe(result["machine"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="fleet-hostcost-") as tmp:
        for kind in ("connection", "grpc", "fleet"):
            result[kind] = measure(kind, args, Path(tmp))
    print(table(result))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.output}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
