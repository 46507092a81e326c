"""Prometheus HTTP service discovery (``http_sd_configs``) of the apps' endpoints:
``/v1/sd/http`` on the metrics port answers the JSON this builds. Pure.

One target group per available replica port (exactly what ``fleet endpoints`` lists),
so each target carries its own labels: Prometheus' format is a list of
``{"targets": ["host:port"], "labels": {...}}``, labels as strings. The ``__meta_``
labels are dropped after relabelling: a scrape config keeps what it wants of them.
"""

from __future__ import annotations

import re
from typing import Any

from fleet.controlplane.appstatus import endpoints
from fleet.store import ClusterState

__all__ = ["label_name", "sd_targets"]

_META = "__meta_fleet_"
_NOT_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def label_name(name: str) -> str:
    """``name`` as the tail of a Prometheus label name: every character outside
    ``[a-zA-Z0-9_]`` becomes ``_`` (as Prometheus' own discoveries do)."""
    return _NOT_LABEL_CHARS.sub("_", name)


def _target(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}"


def sd_targets(state: ClusterState, now: float, app: str = "") -> list[dict[str, Any]]:
    """The target groups of every app (or of ``app`` alone) at ``now``, by app, slot,
    host and port. A replica whose host has no address is left out: nothing could
    scrape it."""
    groups: list[dict[str, Any]] = []
    for name in sorted(state.apps):
        if app and name != app:
            continue
        app_labels = {
            f"{_META}label_{label_name(key)}": value
            for key, value in sorted(state.apps[name].value.spec.labels.items())
        }
        found = sorted(
            endpoints(state, name, now),
            key=lambda e: (e.slot, e.host, e.container_port, e.protocol),
        )
        for endpoint in found:
            if not endpoint.address or endpoint.protocol != "tcp":
                continue  # Prometheus scrapes over TCP
            labels = {
                **app_labels,
                f"{_META}app": name,
                f"{_META}host": endpoint.host,
                f"{_META}slot": str(endpoint.slot),
                f"{_META}revision": str(endpoint.revision),
                f"{_META}container_port": str(endpoint.container_port),
            }
            groups.append(
                {"targets": [_target(endpoint.address, endpoint.host_port)], "labels": labels}
            )
    return groups
