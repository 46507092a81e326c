"""The agent: one per Docker host, it keeps the host's fleet containers in line with the
desired set the control plane pushes, and reports what runs."""

from __future__ import annotations

from fleet.agent.agent import Agent, AgentConfig
from fleet.agent.dockerruntime import DockerRuntime

__all__ = ["Agent", "AgentConfig", "DockerRuntime"]
