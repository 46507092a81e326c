"""Tests of ``servicediscovery``: Prometheus http_sd target groups from the endpoints."""

from __future__ import annotations

from fleet.controlplane.servicediscovery import label_name, sd_targets
from fleet.store import Versioned
from fleet.store.records import PortBinding
from tests.unit.controlplane.builders import NOW, put_replica, report
from tests.unit.controlplane.test_edge_feed import edge_state

LABELS = "labels: {team: shop, app.kubernetes.io/name: web}\n"


def test_one_group_per_available_tcp_port_with_meta_labels() -> None:
    state = edge_state("h1", "h2", text=LABELS)
    ipv6 = state.hosts["h2"].value.model_copy(update={"address": "fd00::2"})
    state.hosts["h2"] = Versioned(ipv6, state.hosts["h2"].mod_revision)
    ports = [
        PortBinding(host_port=32768, container_port=8080, protocol="tcp"),
        PortBinding(host_port=32769, container_port=53, protocol="udp"),  # not scraped
    ]
    for slot, host in ((0, "h1"), (1, "h2"), (2, "h1")):
        put_replica(state, slot, host)
    report(state, "h1", 0, 1, ports=ports)
    report(state, "h2", 1, 1, ports=ports)
    report(state, "h1", 2, 1, ports=ports, health="starting", ready_since=None)  # not yet
    groups = sd_targets(state, NOW)
    assert [g["targets"] for g in groups] == [["10.0.0.1:32768"], ["[fd00::2]:32768"]]
    assert groups[1]["labels"] == {
        "__meta_fleet_label_app_kubernetes_io_name": "web",
        "__meta_fleet_label_team": "shop",
        "__meta_fleet_app": "web",
        "__meta_fleet_host": "h2",
        "__meta_fleet_slot": "1",
        "__meta_fleet_revision": "1",
        "__meta_fleet_container_port": "8080",
    }
    assert all(isinstance(v, str) for g in groups for v in g["labels"].values())
    assert sd_targets(state, NOW, "web") == groups
    assert sd_targets(state, NOW, "other") == []


def test_label_names_keep_only_prometheus_characters() -> None:
    assert label_name("app.kubernetes.io/name") == "app_kubernetes_io_name"
    assert label_name("team-a_1") == "team_a_1"
