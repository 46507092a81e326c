"""The agent: one per Docker host, it keeps the host's fleet containers in line with the
desired set the control plane pushes, and reports what runs.

Where to look:

- ``agent``: ``Agent``, which runs the parts below together; ``config``: its options;
- ``session``: the stream to the control plane (register, desired sets, heartbeats,
  events out, requests in); ``report``: what a heartbeat says; ``requests``: logs,
  exec and top relayed over the stream; ``hostcommands``: upgrade commands, run once,
  as processes (``hostprocess``) or in sibling containers that enter the host
  (``hostcontainer``); ``certwatch``: a renewed certificate taken up without a restart;
- ``incontainer``: the agent in a container (which one, and whether it sees the host);
- ``reconciler``: the reconcile loop; ``reconcile``: the pure plan (desired vs
  observed -> phases of tasks); ``executor``: running a plan's tasks; ``restarts``:
  restart policies and their backoff; ``held``: desired containers that cannot run
  here, and why; ``failures``: what keeps failing, retried with backoff; ``images``:
  removing unused images; ``ownership``: which fleet containers are this pool's
  (``fleet.pool``; another pool's are reported and left alone);
- ``hostwatch``: the runtime's events and live usage; ``events``: fleet's events and
  their queue; ``health``: http and tcp health checks; ``stats``: usage from cgroups;
- ``runtime``: the seam to a container runtime (the ``Runtime`` protocol, fleet's
  labels); ``dockerruntime`` and ``dockererrors``: dockerd behind it (the hollow
  runtime of the scale tests is ``fleet.testing.hollow``);
- ``state``: what the loops share; ``logonce``: failures said once.
"""

from __future__ import annotations

from fleet.agent.agent import Agent
from fleet.agent.config import AgentConfig
from fleet.agent.dockerruntime import DockerRuntime

__all__ = ["Agent", "AgentConfig", "DockerRuntime"]
