"""A host's desired container set, built from the replica records placed on it.

The agent receives this whole set (level-triggered) whenever it changes, so a push it
missed is repaired by the next one.
"""

from __future__ import annotations

import hashlib

from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppSpec
from fleet.store import ClusterState

__all__ = ["container_spec", "desired_containers", "fingerprint"]


def container_spec(spec: AppSpec, slot: int, revision: int, template_hash: str) -> pb.ContainerSpec:
    return pb.ContainerSpec(
        app=spec.name,
        slot=slot,
        revision=revision,
        spec_hash=template_hash,
        image=spec.image,
        command=spec.command or [],
        env=spec.env,
        ports=[
            pb.PortMapping(
                host_port=p.host_port, container_port=p.container_port, protocol=p.protocol
            )
            for p in spec.ports
        ],
        resources=pb.Resources(cpu=spec.resources.cpu, memory_bytes=spec.resources.memory),
        restart=str(spec.restart),
        labels=spec.labels,
        stop_grace_seconds=spec.stop_grace_period,
    )


def desired_containers(state: ClusterState, host_id: str) -> list[pb.ContainerSpec]:
    """Every container ``host_id`` should run, in a stable order."""
    containers = []
    for replica in state.replicas_on(host_id):
        revision = state.revision_spec(replica.app, replica.revision)
        if revision is None:
            continue  # the revision record lands in the same transaction; never seen apart
        containers.append(
            container_spec(revision.spec, replica.slot, replica.revision, revision.template_hash)
        )
    return containers


def fingerprint(containers: list[pb.ContainerSpec]) -> str:
    """Identifies a desired set, so an unchanged set is not pushed again."""
    digest = hashlib.sha256()
    for container in containers:
        digest.update(container.SerializeToString(deterministic=True))
    return digest.hexdigest()
