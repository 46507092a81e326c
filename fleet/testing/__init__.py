"""Test tools for fleet: a real etcd, real dockerds in network namespaces, a real registry.

Used by the tests, by `deploy/local-cluster` and by the benchmarks; never by fleet's
production code paths, which must not import this package.

Where to go for what: `procs` (waiting with a deadline, `ManagedProcess`, and the
`Service` and `Daemon` bases of what a test starts and stops), `etcd`, `registry`,
`dockerhosts` (Docker hosts in network namespaces), `images` (busybox test images),
`certs` (a throwaway PKI), `fleetimage` (fleet's own image, built once and copied into
each daemon), `agentcontainer` (the agent from that image, started with the README's
run line), `ignition` (a CoreOS host's first boot played: Ignition's files under a
root dir, a unit's lines run as systemd would), `fleetprocs` (`fleet server` and
`fleet agent` as processes),
`hollow` (many simulated hosts in one process), `cluster` (a local multi-host fleet) and
`soak` (the chaos soak, `make soak`: overlapping faults, invariants read from Docker and etcd).
"""

from __future__ import annotations

from fleet.testing.dockerhosts import DockerHost, HostPool, cleanup_stale
from fleet.testing.etcd import EtcdCluster, EtcdServer
from fleet.testing.images import (
    DEFAULT_CMD,
    HTTP_PORT,
    HTTPD_CMD,
    busybox_rootfs_tar,
    ensure_image,
    graceful_cmd,
    import_image,
)
from fleet.testing.procs import ManagedProcess, ProcessError, free_port, wait_until
from fleet.testing.registry import Registry, push_image

__all__ = [
    "DEFAULT_CMD",
    "HTTPD_CMD",
    "HTTP_PORT",
    "DockerHost",
    "EtcdCluster",
    "EtcdServer",
    "HostPool",
    "ManagedProcess",
    "ProcessError",
    "Registry",
    "busybox_rootfs_tar",
    "cleanup_stale",
    "ensure_image",
    "free_port",
    "graceful_cmd",
    "import_image",
    "push_image",
    "wait_until",
]
