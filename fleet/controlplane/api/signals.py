"""Pause, unpause and kill an app's replicas (``docker pause``/``unpause``/``kill`` on
each), relayed to each replica's host's agent, all at once.

Deployers and admins may (as they may delete an app): it is what the docker CLI offers
its users, and a SIGHUP to reload a configuration is a deployer's everyday tool. fleet
still wants each replica running: a paused one is left paused (and leaves the edges
until it is unpaused), a signal that ends the process ends the container, and its
restart policy then decides, as for any other exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal as signals

import grpc.aio

from fleet.controlplane.api._service import ServiceBase
from fleet.controlplane.auth import Permission, rpc
from fleet.errors import FleetError, InvalidArgument
from fleet.proto import fleet_pb2 as pb
from fleet.store.records import ReplicaRecord

__all__ = ["ACTIONS", "SignalsApi", "check_signal"]

log = logging.getLogger(__name__)

ACTIONS = ("pause", "unpause", "kill")


def check_signal(text: str) -> str:
    """The signal ``text`` names (``HUP``, ``SIGHUP``, ``hup`` or ``1``), as Docker takes
    it (``SIGHUP``, or the number); "" is KILL, as ``docker kill``."""
    if not text:
        return "SIGKILL"
    if text.isdigit():
        if not 1 <= int(text) <= 64:
            raise InvalidArgument(f"signal {text}: numbers go from 1 to 64")
        return text
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in signals.Signals.__members__:
        raise InvalidArgument(f"signal {text[:20]!r}: not a signal name (HUP, TERM, USR1, ...)")
    return name


class SignalsApi(ServiceBase):
    @rpc(Permission.APPS_WRITE)
    async def SignalReplicas(
        self, request: pb.SignalRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignalResponse:
        if request.action not in ACTIONS:
            raise InvalidArgument(
                f"action {request.action[:20]!r}: expected pause, unpause or kill"
            )
        if request.action != "kill" and request.signal:
            raise InvalidArgument("a signal goes with kill only")
        signal = check_signal(request.signal) if request.action == "kill" else ""
        await self._informer.wait_synced()
        replicas = self._replicas(request.app, request.slot)
        ask = pb.SignalRequest(action=request.action, signal=signal)

        async def one(replica: ReplicaRecord) -> pb.SignalResult:
            result = pb.SignalResult(slot=replica.slot, host=replica.host)
            relayed = pb.ContainerRequest(app=replica.app, slot=replica.slot, signal=ask)
            done = False
            try:
                async for piece in self._relay(replica.host, relayed):
                    done = done or piece.data == ask.action.encode()
            except FleetError as error:
                result.error = str(error)
            else:
                if not done:  # an agent that does not know the request answers "done" only
                    result.error = (
                        f"host {replica.host}'s agent cannot {ask.action} (older than this "
                        "control plane: upgrade it)"
                    )
            return result

        results = await asyncio.gather(*(one(r) for r in replicas))
        done = [r.slot for r in results if not r.error]
        log.info("%s %s %s: slots %s done", request.action, request.app, signal, done)
        return pb.SignalResponse(results=sorted(results, key=lambda r: r.slot), signal=signal)
