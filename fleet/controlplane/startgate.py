"""The main port's door while the control plane starts.

A starting server must not answer before its informer has listed the pool (an answer
from an empty state would be wrong) and before it has taken its seat's lease over (an
agent's registration is bound to it). It used to open its port only then: at 5,000
hosts the listing alone takes 4 to 5 s, and every agent whose stream the restart cut
kept failing its tries meanwhile, its backoff doubling to 3-6 s; the last of them came
back up to 10 s after the server listened (``benchmarks/README.md``, "Where a restart's
20 s go").

So the port listens as soon as it is bound, and this interceptor holds each agent's
stream (``waiting``) until ``open``: the agent's Register waits here instead of in its
backoff. Every other call is refused with UNAVAILABLE until then, as a closed port made
clients retry before; the health service answers (NOT_SERVING until the server says
otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio

from fleet.controlplane._handlers import refuse

__all__ = ["StartGate"]

_HEALTH_METHODS = "/grpc.health.v1.Health/"  # the prefix of the health service's methods
_STARTING = "the control plane is starting (reading the pool's state); retry"


def _starting() -> grpc.RpcMethodHandler:
    """A handler that refuses a call without reading its request (as a streaming handler,
    whatever the method is, gRPC leaves reading the request to it)."""

    async def refuse_unread(requests: object, context: grpc.aio.ServicerContext) -> None:
        refuse(context, grpc.StatusCode.UNAVAILABLE, _STARTING)

    return grpc.stream_stream_rpc_method_handler(refuse_unread)


class StartGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Holds the calls to the ``waiting`` methods and refuses the others (health aside)
    until ``open``."""

    def __init__(self, waiting: frozenset[str]) -> None:
        self._waiting = waiting  # full method names held until ``open``
        self._open = asyncio.Event()
        self._refusal = _starting()

    def open(self) -> None:
        """The server is ready: let the held calls in, and every call from now on."""
        self._open.set()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not self._open.is_set():
            method = handler_call_details.method
            if method in self._waiting:
                await self._open.wait()
            elif not method.startswith(_HEALTH_METHODS):
                return self._refusal
        return await continuation(handler_call_details)
