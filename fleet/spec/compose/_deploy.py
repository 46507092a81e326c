"""A compose service's count, restarts and rollouts: ``restart``, ``scale``, the old
``cpus``/``mem_limit`` and ``deploy`` (replicas, mode, resources, restart_policy,
update_config, placement) onto fleet's ``replicas``, ``mode``, ``resources``,
``restart``, ``update``, ``constraints`` and ``max_per_host``."""

from __future__ import annotations

import re

from fleet.spec._quote import show
from fleet.spec._units import parse_duration
from fleet.spec.compose._base import GENERIC, Mapper

__all__ = ["DeployMapper"]


class DeployMapper(Mapper):
    """Maps how many replicas run, how they restart and how they roll out."""

    def restart(self) -> None:
        restart = self.data.get("restart")
        if restart is None:
            return  # fleet's default, always (as swarm's deploy default, any)
        if restart == "unless-stopped":
            self.report.note(
                self.at("restart"),
                "unless-stopped becomes always: fleet's agents restart a replica until its "
                "app is stopped or deleted",
            )
            restart = "always"
        self.put("restart", restart, "restart")

    def deploy(self) -> None:
        if "scale" in self.data:
            self.put("replicas", self.data["scale"], "scale")
        resources: dict[str, object] = {}
        if "cpus" in self.data:
            resources["cpu"] = self.data["cpus"]
        for name in ("mem_limit", "mem_reservation"):
            text = self.size("", self.data[name], name) if name in self.data else None
            if text and resources.setdefault("memory", text) != text:
                self.unsupported(
                    self.at(name),
                    f"fleet reserves what it limits, one amount: mem_limit {resources['memory']} "
                    "is used for both",
                )
        if resources:
            self.put("resources", resources, "cpus" if "cpus" in self.data else "mem_limit")
        deploy = self.data.get("deploy")
        if deploy is None:
            return
        if not isinstance(deploy, dict):
            self.report.error(self.at("deploy"), "expected a mapping")
            return
        known = {"mode", "replicas", "resources", "restart_policy", "update_config", "placement"}
        for name in deploy:
            if name not in known:
                why = {
                    "labels": "swarm's service labels: fleet labels containers, move them "
                    "to the service's labels",
                    "rollback_config": "fleet rolls back with the update settings, and only "
                    "when a rollout fails (update.auto_rollback)",
                    "endpoint_mode": "fleet has no virtual IP: apps reach each other by app "
                    "name on a network, or through the ingress",
                }.get(str(name), GENERIC)
                self.unsupported(self.at("deploy", name), why)
        mode = deploy.get("mode", "replicated")
        if mode in ("replicated", "global"):
            if mode == "global":
                self.put("mode", "global", "deploy", "mode")
        else:
            self.unsupported(self.at("deploy", "mode"), f"fleet has no mode {mode}")
        if "replicas" in deploy:
            self.put("replicas", deploy["replicas"], "deploy", "replicas")
        if "resources" in deploy:
            self.resources(deploy["resources"])
        if "restart_policy" in deploy:
            self.restart_policy(deploy["restart_policy"])
        if "update_config" in deploy:
            self.update_config(deploy["update_config"])
        if "placement" in deploy:
            self.placement(deploy["placement"])

    def resources(self, given: object) -> None:
        if not isinstance(given, dict):
            self.report.error(self.at("deploy", "resources"), "expected a mapping")
            return
        self.unknown_keys(given, {"limits", "reservations"}, "deploy", "resources")
        found: dict[str, dict[str, object]] = {}
        for kind in ("limits", "reservations"):
            part = given.get(kind) or {}
            if not isinstance(part, dict):
                self.report.error(self.at("deploy", "resources", kind), "expected a mapping")
                continue
            for name in part:
                if name not in ("cpus", "memory"):
                    self.unsupported(
                        self.at("deploy", "resources", kind, name),
                        "fleet's resources are cpu and memory only",
                    )
            values: dict[str, object] = {}
            if "cpus" in part:
                values["cpu"] = part["cpus"]
            if "memory" in part:
                memory = self.size("", part["memory"], "deploy", "resources", kind, "memory")
                if memory is not None:
                    values["memory"] = memory
            found[kind] = values
        limits, reservations = found.get("limits", {}), found.get("reservations", {})
        # fleet reserves what it limits (one amount for placement and for Docker).
        resources = {**reservations, **limits}
        for name, value in reservations.items():
            if name in limits and limits[name] != value:
                compose = "cpus" if name == "cpu" else "memory"
                self.unsupported(
                    self.at("deploy", "resources", "reservations", compose),
                    f"fleet reserves what it limits, one amount: the limit {limits[name]} "
                    f"is used for both, not this reservation of {value}",
                )
        if resources:
            self.put("resources", resources, "deploy", "resources")

    def restart_policy(self, given: object) -> None:
        where = ("deploy", "restart_policy")
        if not isinstance(given, dict):
            self.report.error(self.at(*where), "expected a mapping")
            return
        for name in given:
            if name in ("delay", "window"):
                self.unsupported(
                    self.at(*where, name),
                    "fleet's agents back off between restarts as kubelet does (exponential, "
                    "capped, reset after a long healthy run)",
                )
            elif name not in ("condition", "max_attempts"):
                self.unsupported(self.at(*where, name))
        condition = given.get("condition", "any")
        attempts = given.get("max_attempts")
        if condition == "none":
            restart = "no"
        elif condition == "on-failure":
            restart = "on-failure" if attempts is None else f"on-failure:{attempts}"
        elif condition == "any":
            restart = "always"
            if attempts is not None:
                self.unsupported(
                    self.at(*where, "max_attempts"),
                    "fleet limits restarts only on failure: use condition: on-failure",
                )
        else:
            self.report.error(
                self.at(*where, "condition"),
                f"expected none, on-failure or any, got {show(condition)}",
            )
            return
        self.put("restart", restart, *where)

    def update_config(self, given: object) -> None:
        where = ("deploy", "update_config")
        if not isinstance(given, dict):
            self.report.error(self.at(*where), "expected a mapping")
            return
        known = {"parallelism", "order", "delay", "monitor", "failure_action"}
        self.unknown_keys(given, known, *where)
        order = given.get("order", "stop-first")  # compose's default, not fleet's
        parallelism = given.get("parallelism", 1)
        count: object = "100%" if parallelism == 0 else parallelism  # 0: all at once
        update: dict[str, object] = {"order": order}
        if order == "stop-first":
            update |= {"max_unavailable": count, "max_surge": 0}
        else:
            update |= {"max_surge": count, "max_unavailable": 0}
        # Swarm waits delay between batches and watches each for monitor; fleet waits for
        # a replica to be healthy for min_ready before it counts and the next one goes.
        waits = [given[k] for k in ("delay", "monitor") if k in given]
        if len(waits) == 1:
            update["min_ready"] = waits[0]
        elif waits:
            try:
                update["min_ready"] = sum(parse_duration(w) for w in waits)
            except (TypeError, ValueError) as exc:
                self.report.error(self.at(*where, "delay"), str(exc))
        action = given.get("failure_action", "pause")
        if action in ("pause", "rollback"):
            update["auto_rollback"] = action == "rollback"
        else:
            self.unsupported(
                self.at(*where, "failure_action"),
                "fleet stops a failed rollout (pause) or rolls it back (rollback); it does "
                "not continue",
            )
        self.put("update", update, *where)

    def placement(self, given: object) -> None:
        where = ("deploy", "placement")
        if not isinstance(given, dict):
            self.report.error(self.at(*where), "expected a mapping")
            return
        self.unknown_keys(given, {"constraints", "max_replicas_per_node"}, *where)
        if "max_replicas_per_node" in given:
            self.put(
                "max_per_host", given["max_replicas_per_node"], *where, "max_replicas_per_node"
            )
        constraints: list[str] = []
        listed = given.get("constraints") or []
        if not isinstance(listed, list):
            self.report.error(self.at(*where, "constraints"), "expected a list of constraints")
            listed = []
        for i, text in enumerate(listed):
            match = re.fullmatch(r"\s*node\.labels\.([^\s=!]+)\s*(==|!=)\s*(\S+)\s*", str(text))
            if match is None:
                self.unsupported(
                    self.at(*where, "constraints", i),
                    "fleet matches host labels only (node.labels.KEY == VALUE becomes KEY=VALUE)",
                )
                continue
            operator = "=" if match[2] == "==" else "!="
            constraints.append(f"{match[1]}{operator}{match[3]}")
        if constraints:
            self.put("constraints", constraints, *where, "constraints")
