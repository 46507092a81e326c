"""``ExecStream``: a command in a replica with its input streamed in, and with ``tty`` a
terminal (``fleet exec -it``), relayed to the replica's host's agent over its own
stream (``fleet.controlplane.execrelay``).

Admins only, as ``Exec``. Every session is logged here with who ran what where, and
an ``exec`` event says who opened a session in which replica (not the command: the
event log is readable by viewers, and command lines may hold secrets).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import AsyncIterator, Callable

import grpc.aio

from fleet._time import now_iso
from fleet.controlplane._handlers import check_well_formed
from fleet.controlplane.api._service import ServiceBase
from fleet.controlplane.auth import Permission, answer, caller, check
from fleet.controlplane.execrelay import ExecRelay
from fleet.errors import FailedPrecondition, FleetError, InvalidArgument, Unavailable
from fleet.execio import split
from fleet.proto import fleet_pb2 as pb

__all__ = ["ExecStreamApi", "OpenExec"]

log = logging.getLogger(__name__)

# Opens a session with a host's agent (AgentService.open_exec).
OpenExec = Callable[[str], ExecRelay]

_START_TIMEOUT = 10.0  # for the client's ExecStart
_STARTED_TIMEOUT = 20.0  # for the agent's answer that the command runs
_MAX_TERMINAL = 10_000  # rows or columns
_AUDIT_TIMEOUT = 5.0


def _check_start(start: pb.ExecStart) -> None:
    if not start.command:
        raise InvalidArgument("exec needs a command (after --)")
    size = start.size
    if size.rows > _MAX_TERMINAL or size.cols > _MAX_TERMINAL:
        raise InvalidArgument(f"a terminal of {size.rows}x{size.cols}: at most {_MAX_TERMINAL}")
    if len(start.term) > 64 or not all(c.isalnum() or c in "-_.+" for c in start.term):
        raise InvalidArgument(f"TERM {start.term[:64]!r}: letters, digits and -_.+ only")


class ExecStreamApi(ServiceBase):
    open_exec: OpenExec | None = None  # set by the server: sessions need the agent streams

    async def ExecStream(
        self, request_iterator: AsyncIterator[pb.ExecInput], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecOutput]:
        try:
            identity = caller(
                context, insecure=self.insecure, tokens=getattr(self, "token_identity", None)
            )
            check(identity, Permission.EXEC)  # before anything of the request is read
            try:
                first = await asyncio.wait_for(anext(request_iterator), _START_TIMEOUT)
            except (TimeoutError, StopAsyncIteration):
                raise InvalidArgument("ExecStream starts with ExecStart; none came") from None
            check_well_formed(first)
            if first.WhichOneof("kind") != "start":
                raise InvalidArgument("ExecStream starts with ExecStart")
            start = first.start
            _check_start(start)
            await self._informer.wait_synced()
            replica = self._replicas(start.app, start.slot)[0]
            if self.open_exec is None:
                raise Unavailable("this control plane relays no exec sessions")
            relay = self.open_exec(replica.host)
        except FleetError as error:
            answer(context, error)
            return

        where = f"{replica.app}.{replica.slot} on {replica.host}"
        mode = "tty" if start.tty else "stdin" if start.stdin else "no input"
        log.info(
            "exec by %s (%s) in %s (%s): %s",
            identity.name,
            identity.role or identity.kind,
            where,
            mode,
            shlex.join(start.command)[:500],
        )
        await self._audit(replica.app, replica.slot, replica.host, f"{identity.name} ({mode})")
        opened = pb.ExecStart()
        opened.CopyFrom(start)
        opened.slot = replica.slot
        pump = asyncio.create_task(_pump_input(request_iterator, relay, start))
        code: int | None = None
        try:
            await relay.open(opened)
            started = False
            while True:
                try:
                    async with asyncio.timeout(None if started else _STARTED_TIMEOUT):
                        message = await relay.next_output()
                except TimeoutError:
                    raise Unavailable(
                        f"host {replica.host}'s agent did not start the command within "
                        f"{_STARTED_TIMEOUT:g}s (an agent older than this control plane "
                        "cannot run exec -i/-t: upgrade it)"
                    ) from None
                kind = message.WhichOneof("kind")
                if kind == "started":
                    started = True
                    yield pb.ExecOutput(
                        started=pb.ExecStarted(host=replica.host, slot=replica.slot)
                    )
                elif kind == "stdout":
                    yield pb.ExecOutput(stdout=message.stdout)
                    await relay.passed_on(message)
                elif kind == "stderr":
                    yield pb.ExecOutput(stderr=message.stderr)
                    await relay.passed_on(message)
                elif kind == "exit":
                    code = message.exit.code
                    yield pb.ExecOutput(exit=message.exit)
                    return
                elif kind == "error":
                    raise FailedPrecondition(f"{replica.host}: {message.error}")
        except FleetError as error:
            answer(context, error)
        finally:
            pump.cancel()
            await relay.close()
            ended = "client went away" if code is None else f"exit code {code}"
            log.info("exec in %s by %s ended: %s", where, identity.name, ended)

    async def _audit(self, app: str, slot: int, host: str, who: str) -> None:
        event = pb.Event(
            time=now_iso(),
            source="controlplane",
            host=host,
            app=app,
            slot=slot,
            kind="exec",
            message=f"exec session opened by {who}",
        )
        try:
            async with asyncio.timeout(_AUDIT_TIMEOUT):  # etcd away: the session still opens
                await self._events.append("controlplane", [event])
        except (FleetError, TimeoutError) as error:  # the log line is the record then
            log.warning("could not store the exec event: %s", error or "timed out")


async def _pump_input(
    requests: AsyncIterator[pb.ExecInput], relay: ExecRelay, start: pb.ExecStart
) -> None:
    """The client's input to the agent, each piece once there is credit for it (so
    gRPC's flow control holds a fast client back). Ends quietly when the session does;
    a client that breaks the protocol ends the session with why."""
    try:
        async for message in requests:
            check_well_formed(message)
            kind = message.WhichOneof("kind")
            if kind == "stdin":
                if not start.stdin:
                    raise InvalidArgument("input sent to an exec started without stdin")
                for piece in split(message.stdin):
                    await relay.send(pb.ExecRelayInput(stdin=piece))
            elif kind == "resize":
                if not start.tty:
                    continue  # nothing to resize: harmless
                await relay.send(pb.ExecRelayInput(resize=message.resize))
            elif kind == "close_stdin":
                await relay.send(pb.ExecRelayInput(close_stdin=True))
            elif kind == "start":
                raise InvalidArgument("ExecStart comes once, first")
    except EOFError:
        return  # the session is over
    except FleetError as error:
        relay.fail(f"bad input: {error}")
