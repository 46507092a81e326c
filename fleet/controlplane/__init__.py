"""The control plane: the API for the CLI, the agent stream and the controllers that
turn desired apps into placed replicas, all over the state in etcd.

Where to go for what:

- the process: ``server`` (wiring, leadership: only the leader runs the controllers),
  ``secretskey`` (the secrets key every replica shares, checked at start);
- the API the CLI speaks: ``api/`` (one module per area: apps, rollouts, hosts,
  observe, admin) over ``auth`` (who may call what) and ``_handlers``;
- the agents' stream: ``agents`` (sessions), ``registration`` (what a host's
  registration stores), ``reports``/``reportqueue`` (heartbeats into etcd),
  ``agentevents``/``eventgate`` (their events), ``desired``/``desiredpush`` (each
  host's desired set), ``edgefeed``/``edgepush`` (the ingress routing table, to edge
  hosts);
- deciding, pure: ``appchanges`` (what an apply, scale, restart or undo writes, and
  the ingress routes it claims),
  ``revisions`` (revision numbers, history, the undo target), ``planner`` (one app's
  round: the steps in order) over ``slots`` (its slots and placement primitives),
  ``drains``, ``rollout`` and ``modes`` (global apps, jobs), ``view`` (the scheduler's
  view of the hosts), ``availability`` (when a container counts as up),
  ``maintenance`` and ``upgrades`` (the semaphore and the OS upgrade walk);
- acting: ``controller`` (runs the planner for every app and commits the plans);
- reading: ``appstatus`` (the counts ``get apps`` and ``rollout status`` show,
  endpoints), ``appcounts`` and ``endpointcache`` (those counts and endpoints kept
  slot by slot, a change redoing only its slots), ``endpointwatch`` (an app's
  endpoints as they change, for
  ``WatchEndpoints``), ``metrics``/``metricsport`` (Prometheus), ``servicediscovery``
  (the endpoints as Prometheus' http_sd targets, on the metrics port), ``readport``
  (``--read-listen``: the reads answered from a thread and event loop of their own,
  over the snapshots the informer publishes).

ARCHITECTURE.md at the repository's root says where each rule lives.
"""

from __future__ import annotations

from fleet.controlplane.server import ControlPlane, ServerConfig, run_server

__all__ = ["ControlPlane", "ServerConfig", "run_server"]
