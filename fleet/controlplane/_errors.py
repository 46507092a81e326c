"""Turns fleet errors raised inside a servicer into gRPC statuses, by one table."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from fleet.errors import FleetError, grpc_code_for

__all__ = ["grpc_errors"]

log = logging.getLogger(__name__)

R = TypeVar("R")


def grpc_errors(
    method: Callable[..., Awaitable[R]],
) -> Callable[..., Awaitable[R]]:
    """Abort with the status that ``GRPC_CODE_BY_ERROR`` maps the raised error to."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except FleetError as error:
            await context.abort(grpc_code_for(error), str(error))
            raise  # abort raises; this line only satisfies the type checker

    return wrapper
