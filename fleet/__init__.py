"""fleet: run containers on a pool of identical Docker hosts.

A gRPC control plane keeps the desired state in etcd and places replicas on hosts; an
agent on every host reconciles that state with its Docker daemon. ``fleet.client`` is
the library the CLI is built on.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
