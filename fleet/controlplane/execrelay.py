"""The control plane's end of one exec session on an agent's stream (``ExecStream``):
what the API handler sends the agent and reads back, within the windows of
``fleet.execio``.

Input waits for credit before it goes into the agent's outbox, so a client that types
(or pastes) faster than the command reads is slowed down by gRPC's own flow control on
its call, not buffered here. Output is queued as the agent sends it, never more than a
window of it (an agent that sends more is broken: the session ends), and credit goes
back to the agent as the handler passes output on to the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fleet.controlplane.outbox import SessionOutbox
from fleet.execio import WINDOW, Credit, input_cost
from fleet.proto import fleet_pb2 as pb

__all__ = ["ExecRelay"]


class ExecRelay:
    def __init__(
        self,
        session_id: str,
        host_id: str,
        outbox: SessionOutbox,
        forget: Callable[[], object],
    ) -> None:
        self.id = session_id
        self.host_id = host_id
        self._outbox = outbox
        self._forget = forget
        self.credit = Credit()  # input cost the agent has not written into the exec yet
        self._output: asyncio.Queue[pb.ExecRelayOutput] = asyncio.Queue()
        self._buffered = 0  # output bytes queued here, not yet passed on
        self._consumed = 0  # output bytes passed on, in all
        self._acked = 0  # the last total told to the agent
        self._over = False  # an end (exit, error) is queued, or the session was closed
        self._agent_done = False  # the agent ended its side (or is gone)

    # ---------------------------------------------------------------- from the agent

    def deliver(self, message: pb.ExecRelayOutput) -> None:
        """A message from the agent (called by the stream's reader: never blocks)."""
        if self._over:
            return
        kind = message.WhichOneof("kind")
        if kind == "consumed":
            self.credit.consumed(message.consumed)
            return
        size = len(message.stdout) + len(message.stderr)
        if self._buffered + size > WINDOW:
            self.fail(f"host {self.host_id}'s agent sent more output than its window")
            return
        self._buffered += size
        self._output.put_nowait(message)
        if kind in ("exit", "error"):
            self._agent_done = True
            self._end()

    def fail(self, why: str, *, agent_gone: bool = False) -> None:
        """End the session with ``why`` (``agent_gone``: the host disconnected)."""
        self._agent_done = self._agent_done or agent_gone
        if not self._over:
            self._output.put_nowait(pb.ExecRelayOutput(id=self.id, error=why))
            self._end()

    def _end(self) -> None:
        self._over = True
        self.credit.close()  # input waiting for room has nowhere to go

    # ---------------------------------------------------------------- for the API handler

    async def open(self, start: pb.ExecStart) -> None:
        await self._outbox.put(
            pb.ServerMessage(exec_input=pb.ExecRelayInput(id=self.id, open=start))
        )

    async def send(self, message: pb.ExecRelayInput) -> None:
        """Input for the exec (stdin, resize, close_stdin), once there is room for it;
        ``EOFError`` once the session is over."""
        message.id = self.id
        await self.credit.take(input_cost(message))
        await self._outbox.put(pb.ServerMessage(exec_input=message))

    async def next_output(self) -> pb.ExecRelayOutput:
        """The agent's next message (after an exit or an error there is none)."""
        return await self._output.get()

    async def passed_on(self, message: pb.ExecRelayOutput) -> None:
        """``message``'s output reached the client: credit for the agent, told when the
        queue is drained or every quarter window while it is not."""
        size = len(message.stdout) + len(message.stderr)
        self._buffered -= size
        self._consumed += size
        if (
            size
            and not self._over
            and (self._output.empty() or self._consumed - self._acked >= WINDOW // 4)
        ):
            self._acked = self._consumed
            ack = pb.ExecRelayInput(id=self.id, consumed=self._consumed)
            await self._outbox.put(pb.ServerMessage(exec_input=ack))

    async def close(self) -> None:
        """The handler is done: an agent still running the session is told to hang up."""
        self._forget()
        self._end()
        if not self._agent_done:
            self._agent_done = True
            cancel = pb.ExecRelayInput(id=self.id, cancel=True)
            await self._outbox.put(pb.ServerMessage(exec_input=cancel))
