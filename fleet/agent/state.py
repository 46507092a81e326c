"""What the agent knows of its host, shared by its loops.

The session with the control plane writes the desired set; the reconcile loop writes
what it observed, what it holds and the version it applied; the executor counts
restarts; the host watch writes live usage. The session reads all of it into
heartbeats. Every loop runs on one event loop, so none of this needs a lock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fleet.agent.events import EventQueue
from fleet.agent.held import HeldReplicas
from fleet.agent.restarts import RestartBook
from fleet.agent.runtime import ObservedContainer
from fleet.agent.stats import HostUsage
from fleet.proto import fleet_pb2 as pb

__all__ = ["HostState"]


@dataclass
class HostState:
    events: EventQueue  # waiting to be sent to the control plane
    held: HeldReplicas  # desired containers that cannot run here now, and why
    restarts: RestartBook  # restarts per container (on disk with a state dir)
    # The last desired set the control plane pushed; None until the first arrives
    # (until then the agent adopts what it finds).
    desired: list[pb.ContainerSpec] | None = None
    desired_version: int = 0
    # Its fingerprint (DesiredSet.fingerprint), sent when registering again: a control
    # plane that would send the same set does not.
    desired_fingerprint: str = ""
    # The pool's id, which the control plane sends at registration (remembered in the
    # state dir); None: not known yet, "": a control plane without one (ownership.py).
    pool_id: str | None = None
    registry_mirror: str = ""  # host[:port] Docker Hub images are pulled through first
    applied_version: int = 0  # the desired version the last whole round carried out
    # The last listing of this pool's containers (``fleet.agent.ownership``).
    observed: list[ObservedContainer] = field(default_factory=list)
    listed: asyncio.Event = field(default_factory=asyncio.Event)  # `observed` is a listing
    starting: set[str] = field(default_factory=set)  # containers restarted this round
    usage: HostUsage = field(default_factory=lambda: HostUsage(0.0, 0, 0, 0.0))
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # reconcile again now
    report_now: asyncio.Event = field(default_factory=asyncio.Event)  # heartbeat now

    async def wait_listed(self, within: float) -> bool:
        """Wait at most ``within`` seconds for the first listing of the host's
        containers; whether there is one."""
        try:
            async with asyncio.timeout(within):  # (wait_for may swallow a cancel)
                await self.listed.wait()
        except TimeoutError:
            return False
        return True
