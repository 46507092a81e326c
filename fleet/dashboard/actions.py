"""What each dashboard button does: one call of the API's own handler, the one the CLI's
command reaches (``fleet scale``, ``fleet rollout undo|pause|resume|restart``,
``fleet cordon|uncordon|drain``), and the sentence the page shows when it is done.

``Call`` makes the call as the signed-in identity (``server.Dashboard._call``): the
handler's ``rpc`` check decides who may; a refusal comes back as ``Refused``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from fleet.controlplane.api import FleetService
from fleet.controlplane.auth import LocalCall
from fleet.errors import InvalidArgument
from fleet.pki.subjects import Identity
from fleet.proto import fleet_pb2 as pb
from fleet.store import check_host_id, check_name

__all__ = [
    "APP_ACTIONS",
    "HOST_ACTIONS",
    "Call",
    "Refused",
    "app_action",
    "call_as",
    "host_action",
]

APP_ACTIONS = ("scale", "undo", "pause", "resume", "restart")
HOST_ACTIONS = ("cordon", "uncordon", "drain")

# (an API handler, its request message) -> its answer, called as the session's identity.
Call = Callable[[Any, Any], Awaitable[Any]]


class Refused(Exception):
    """An API handler's refusal (or an unknown action), as an HTTP status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_HTTP_STATUS = {
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.UNAVAILABLE: 503,
}


async def call_as(identity: Identity, peer: str, method: Any, message: Any) -> Any:
    """``method``'s answer to ``message``, called as ``identity`` (``LocalCall``): its
    ``rpc`` check and its reads and writes are the gRPC call's; Refused if it refused."""
    call = LocalCall(identity, peer)
    answer = await method(message, call)
    if call.code is not None:
        raise Refused(_HTTP_STATUS.get(call.code, 500), call.details)
    return answer


def _replicas(body: dict[str, Any]) -> int:
    replicas = body.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise InvalidArgument("replicas must be a whole number, 0 or more")
    return replicas


async def app_action(
    api: FleetService, call: Call, app: str, action: str, body: dict[str, Any]
) -> str:
    name = check_name(app)
    rollout = pb.RolloutRequest(app=name)
    if action == "scale":
        replicas = _replicas(body)
        scaled = await call(api.Scale, pb.ScaleRequest(name=name, replicas=replicas))
        return f"scaled {name} from {scaled.previous} to {replicas}"
    if action == "undo":
        info = await call(api.RolloutUndo, rollout)
        return f"rolling {name} back to revision {info.revision}"
    if action in ("pause", "resume"):
        rollout.paused = action == "pause"
        await call(api.RolloutPause, rollout)
        return f"{name}'s rollout {'paused' if rollout.paused else 'resumed'}"
    if action == "restart":
        info = await call(api.RolloutRestart, rollout)
        return f"restarting {name} (revision {info.revision})"
    raise Refused(404, f"no app action {action[:32]!r}: {', '.join(APP_ACTIONS)}")


async def host_action(api: FleetService, call: Call, host: str, action: str) -> str:
    host_id = check_host_id(host)
    if action in ("cordon", "uncordon"):
        state = "cordoned" if action == "cordon" else "ready"
        info = await call(api.SetHostState, pb.SetHostStateRequest(host_id=host_id, state=state))
        return f"host {host_id} is {info.state}"
    if action == "drain":
        info = await call(api.DrainHost, pb.DrainRequest(host_id=host_id))
        return f"host {host_id} is {info.state}"
    raise Refused(404, f"no host action {action[:32]!r}: {', '.join(HOST_ACTIONS)}")
