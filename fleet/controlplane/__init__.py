"""The control plane: the API for the CLI, the agent stream and the controllers that
turn desired apps into placed replicas, all over the state in etcd."""

from __future__ import annotations

from fleet.controlplane.server import ControlPlane, ServerConfig, run_server

__all__ = ["ControlPlane", "ServerConfig", "run_server"]
