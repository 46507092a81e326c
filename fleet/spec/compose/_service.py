"""One compose service mapped onto one fleet app document: each key either becomes a
fleet field, is reported as one fleet cannot honour (with why and what to do), or (a
close mapping whose meaning differs a little) is mapped and noted."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.spec._quote import show
from fleet.spec._units import parse_duration
from fleet.spec.compose._interpolate import parse_env_file
from fleet.spec.compose._report import Path, Report
from fleet.spec.compose._values import as_list, as_mapping, size_text

__all__ = ["Project", "ServiceApp", "map_service"]

# Keys whose value fleet takes as compose writes it (the docker-run fields of the app file
# were given compose's spellings and shapes: fleet/spec/_docker.py).
_SAME = (
    "user",
    "working_dir",
    "hostname",
    "read_only",
    "tmpfs",
    "stop_signal",
    "init",
    "ulimits",
    "dns",
    "dns_search",
    "extra_hosts",
    "sysctls",
    "cap_add",
    "cap_drop",
    "devices",
    "privileged",
    "stop_grace_period",
    "command",
    "entrypoint",
)
_HANDLED = {
    *_SAME,
    *("image", "build", "environment", "env_file", "ports", "volumes", "networks"),
    *("network_mode", "pid", "depends_on", "secrets", "labels", "logging", "healthcheck"),
    *("deploy", "restart", "scale", "shm_size", "mem_limit", "mem_reservation", "cpus"),
    "expose",
}
_GENERIC = "fleet has no equivalent of this compose key"
# Why fleet does not take a key, for the keys sample projects use most.
_REASONS = {
    "container_name": "fleet names each replica's container itself; other apps on a shared "
    "network reach it by the app's name (the service's name)",
    "links": "legacy links: apps on a shared network reach each other by app name already",
    "external_links": "fleet reaches other apps by app name on a shared network only",
    "profiles": "fleet applies every service of the file: remove the services of the "
    "profiles you do not want",
    "stdin_open": "replicas run detached, without stdin (use fleet exec -it for a shell)",
    "tty": "replicas run detached, without a terminal (use fleet exec -it for a shell)",
    "platform": "fleet has no per-app platform: constrain the app to hosts of that "
    "architecture (constraints: [arch=x86_64])",
    "pull_policy": "the agents pull an image when their host lacks it",
    "configs": "fleet has no config files for containers: build them into the image or "
    "pass them in env",
    "volumes_from": "fleet mounts no other container's volumes: name the volumes instead",
    "security_opt": "fleet sets no security options (seccomp, AppArmor, no-new-privileges)",
    "ipc": "fleet shares no IPC namespace",
    "extends": "fleet does not merge services: write the service out in full",
    "pids_limit": "fleet sets no PID limit",
    "cpu_shares": "fleet's cpu is cores reserved and limited; use deploy.resources",
    "mem_swappiness": "fleet sets no swap settings",
    "memswap_limit": "fleet sets no swap settings",
    "gpus": "fleet does not hand GPUs to containers (devices: with the policy may do)",
}
_NO_EXPOSE = (
    "expose only documents ports: on a shared network every port of a replica is "
    "reachable already; use ports to publish on the host"
)


@dataclass(frozen=True)
class Project:
    """What every service of one compose file shares."""

    name: str  # the compose project, as a DNS label
    volumes: Mapping[str, str]  # compose volume key -> the Docker volume's name
    networks: Mapping[str, str]  # compose network key -> fleet network name
    secrets: Mapping[str, str]  # compose secret key -> fleet secret name
    services: Mapping[str, str]  # compose service key -> app name
    environ: Mapping[str, str]
    read_file: Callable[[str], str]  # a file beside the compose file (env_file)


@dataclass
class ServiceApp:
    """The app a service maps onto, and what the apply and the report need of it."""

    key: str
    app: dict[str, Any]
    origins: dict[str, Path] = field(default_factory=dict)  # fleet field -> compose path
    depends_on: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # compose secret keys it uses


class _Mapper:
    def __init__(self, key: str, data: dict[str, Any], project: Project, report: Report):
        self.key, self.data, self.project, self.report = key, data, project, report
        self.base: Path = ("services", key)
        self.out = ServiceApp(key, {"name": project.services[key]})
        self.env: dict[str, Any] = {}

    def at(self, *parts: str | int) -> Path:
        return (*self.base, *parts)

    def put(self, fleet_field: str, value: object, *parts: str | int) -> None:
        self.out.app[fleet_field] = value
        self.out.origins[fleet_field] = self.at(*parts)

    def unsupported(self, path: Path, reason: str = _GENERIC) -> None:
        self.report.unsupported(path, reason)

    def unknown_keys(self, mapping: dict[str, Any], known: set[str], *parts: str | int) -> None:
        """Report every key of a nested mapping fleet does not take."""
        for name in mapping:
            if name not in known and not str(name).startswith("x-"):
                self.unsupported(self.at(*parts, name), _REASONS.get(str(name), _GENERIC))

    def run(self) -> ServiceApp:
        for name in self.data:
            if name not in _HANDLED and not str(name).startswith("x-"):
                self.unsupported(self.at(name), _REASONS.get(str(name), _GENERIC))
        self.image()
        for name in _SAME:
            if name in self.data:
                self.put(name, self.data[name], name)
        if "shm_size" in self.data:
            self.size("shm_size", self.data["shm_size"], "shm_size")
        if "expose" in self.data:
            self.report.note(self.at("expose"), _NO_EXPOSE)
        self.environment()
        self.secrets()
        if self.env:
            self.put("env", self.env, "environment")
        self.labels()
        self.ports()
        self.volumes()
        self.networks()
        self.depends_on()
        self.healthcheck()
        self.logging()
        self.restart()
        self.deploy()
        return self.out

    # --- the container ---

    def image(self) -> None:
        image = self.data.get("image")
        if "build" in self.data:
            how = (
                f"build the image and push it to a registry the hosts pull from "
                f"(docker compose build {self.key} && docker compose push {self.key}), then "
                "remove build:"
            )
            if image is None:
                self.report.error(self.at("build"), f"fleet does not build images: {how}")
            else:
                self.unsupported(
                    self.at("build"),
                    f"fleet does not build images, the hosts pull {image}: {how}",
                )
        if image is None:
            if "build" not in self.data:
                self.report.error(self.base, "the service has no image: fleet needs one")
            return
        self.put("image", image, "image")

    def size(self, fleet_field: str, value: object, *parts: str | int) -> str | None:
        text = size_text(value)
        if text is None:
            self.report.error(
                self.at(*parts), f"expected a size like 512m or 1g, got {show(value)}"
            )
            return None
        if fleet_field:
            self.put(fleet_field, text, *parts)
        return text

    def environment(self) -> None:
        files = self.data.get("env_file")
        entries = as_list(files)
        if entries is None:
            self.report.error(self.at("env_file"), "expected a path or a list of paths")
            entries = []
        for i, entry in enumerate(entries):
            where = self.at("env_file") if isinstance(files, str) else self.at("env_file", i)
            required = True
            if isinstance(entry, dict):
                required = entry.get("required", True) is not False
                entry = entry.get("path")
            if not isinstance(entry, str):
                self.report.error(where, f"expected an env file path, got {show(entry)}")
                continue
            try:
                text = self.project.read_file(entry)
            except OSError as exc:
                if required:
                    self.report.error(where, f"cannot read env file {entry}: {exc.strerror or exc}")
                continue
            values, bad = parse_env_file(text)
            for number, _line in bad:
                self.report.error(where, f"{entry} line {number}: expected KEY=VALUE")
            for name, setting in values.items():
                self.put_env(name, setting)
        given = as_mapping(self.data.get("environment"))
        if given is None:
            self.report.error(self.at("environment"), "expected a mapping or a list of KEY=VALUE")
            return
        for name, value in given.items():
            self.put_env(name, value)

    def put_env(self, name: str, value: object) -> None:
        if value is None:
            # Compose takes a variable without a value from its own environment, and
            # leaves it out when that does not have it either.
            value = self.project.environ.get(name)
            if value is None:
                self.env.pop(name, None)
                return
        self.env[name] = value

    def secrets(self) -> None:
        used = self.data.get("secrets")
        if used is None:
            return
        if not isinstance(used, list):
            self.report.error(self.at("secrets"), "expected a list of secret names")
            return
        for i, item in enumerate(used):
            where = self.at("secrets", i)
            target: object = None
            if isinstance(item, dict):
                for name in item:
                    if name in ("uid", "gid", "mode"):
                        self.unsupported(
                            self.at("secrets", i, name),
                            "fleet gives secrets as env values, not files: no owner or mode",
                        )
                    elif name not in ("source", "target"):
                        self.unsupported(self.at("secrets", i, name))
                target, item = item.get("target"), item.get("source")
            if not isinstance(item, str) or item not in self.project.secrets:
                self.report.error(
                    where, f"secret {show(item)} is not declared under the top-level secrets:"
                )
                continue
            self.out.secrets.append(item)
            ref = {"secret": self.project.secrets[item]}
            mounted = target if isinstance(target, str) else item
            path = mounted if mounted.startswith("/") else f"/run/secrets/{mounted}"
            # Images that read a secret from a file name it in a *_FILE variable (postgres,
            # mysql, wordpress, ...) and take the value itself in the variable without it.
            pointing = [k for k, v in self.env.items() if v == path and k.endswith("_FILE")]
            for variable in pointing:
                del self.env[variable]
                plain = variable.removesuffix("_FILE")
                self.env[plain] = ref
                self.report.note(
                    where,
                    f"{variable}={path} becomes {plain} with the secret's value: fleet gives "
                    "secrets as env values, not files",
                )
            if not pointing:
                plain = re.sub(r"[^A-Za-z0-9_]", "_", mounted.rsplit("/", 1)[-1]).upper()
                self.unsupported(
                    where,
                    f"fleet cannot mount a secret as the file {path}, it gives secrets as env "
                    f"values (--ignore-unsupported gives it in ${plain} instead); for an "
                    f"image that reads X_FILE, set X_FILE: {path} in environment and the "
                    "app gets the value in X",
                )
                self.env[plain] = ref

    def labels(self) -> None:
        labels = as_mapping(self.data.get("labels"))
        if labels is None:
            self.report.error(self.at("labels"), "expected a mapping or a list of KEY=VALUE")
            return
        # compose's own labels say where each container came from (tools read them).
        given = {k: "" if v is None else v for k, v in labels.items()}
        given["com.docker.compose.project"] = self.project.name
        given["com.docker.compose.service"] = self.key
        self.put("labels", given, "labels")

    def ports(self) -> None:
        ports = self.data.get("ports")
        if ports is None:
            return
        if not isinstance(ports, list):
            self.report.error(self.at("ports"), "expected a list of ports")
            return
        out: list[str] = []
        for i, item in enumerate(ports):
            out.extend(self.port(item, self.at("ports", i)))
        self.put("ports", out, "ports")

    def port(self, item: object, where: Path) -> list[str]:
        if isinstance(item, dict):
            for name in item:
                if name not in ("target", "published", "protocol", "mode", "host_ip", "name"):
                    self.unsupported((*where, name))
            if item.get("mode", "ingress") not in ("ingress", "host"):
                self.report.error((*where, "mode"), "expected mode ingress or host")
            host_ip = item.get("host_ip")
            target, published = item.get("target"), item.get("published")
            protocol = item.get("protocol", "tcp")
            text = f"{'' if published is None else f'{published}:'}{target}/{protocol}"
            if host_ip:
                text = f"{host_ip}:{text}"
        elif isinstance(item, int | str) and not isinstance(item, bool):
            text = str(item)
        else:
            self.report.error(where, f"expected a port like 8080:80, got {show(item)}")
            return []
        spec, _, protocol = text.partition("/")
        address = ""
        if spec.startswith("["):
            address, _, spec = spec.partition("]:")
            address += "]"
        elif spec.count(":") == 2:
            address, _, spec = spec.partition(":")
        if address and address not in ("0.0.0.0", "[::]"):  # both mean every address
            self.unsupported(
                where,
                f"fleet publishes on every address of the host, not only {address} "
                "(--ignore-unsupported leaves this port unpublished): publish it on all "
                "addresses, or reach it through the ingress",
            )
            return []
        parts = spec.split(":")
        suffix = f"/{protocol}" if protocol and protocol != "tcp" else ""
        ranges = [p.split("-") for p in parts]
        if all(len(r) == 1 for r in ranges):
            return [spec + suffix]
        try:
            spans = [range(int(r[0]), int(r[-1]) + 1) for r in ranges]
        except ValueError:
            self.report.error(where, f"expected a port or a range like 8000-8010, got {text!r}")
            return []
        if len(spans) == 2 and len(spans[0]) != len(spans[1]):
            self.unsupported(where, "host and container ranges of different lengths")
            return []
        if len(spans) == 1:
            return [f"{p}{suffix}" for p in spans[0]]
        return [f"{h}:{c}{suffix}" for h, c in zip(spans[0], spans[1], strict=True)]

    def volumes(self) -> None:
        volumes = self.data.get("volumes")
        if volumes is None:
            return
        if not isinstance(volumes, list):
            self.report.error(self.at("volumes"), "expected a list of volumes")
            return
        out: list[str] = []
        tmpfs: list[str] = []
        for i, item in enumerate(volumes):
            where = self.at("volumes", i)
            if isinstance(item, dict):
                mount = self.long_volume(item, where, tmpfs)
            elif isinstance(item, str):
                mount = self.short_volume(item, where)
            else:
                self.report.error(where, f"expected SOURCE:TARGET[:ro], got {show(item)}")
                mount = None
            if mount:
                out.append(mount)
        if out:
            self.put("volumes", out, "volumes")
        if tmpfs:
            given = as_list(self.out.app.get("tmpfs")) or []
            self.put("tmpfs", [*given, *tmpfs], "volumes")

    def short_volume(self, text: str, where: Path) -> str | None:
        parts = text.split(":")
        if len(parts) == 1:
            self.unsupported(
                where,
                f"an anonymous volume: give it a name (NAME:{text}, declared under the "
                "top-level volumes:) so fleet can mount it again",
            )
            return None
        source, target = parts[0], parts[1]
        modes = parts[2].split(",") if len(parts) > 2 else []
        extra = [m for m in modes if m not in ("ro", "rw")]
        if extra:
            self.unsupported(
                where, f"fleet takes only ro or rw as a volume's mode, not {','.join(extra)}"
            )
        return self.mount(source, target, "ro" in modes, where)

    def long_volume(self, item: dict[str, Any], where: Path, tmpfs: list[str]) -> str | None:
        kind = item.get("type", "volume")
        self.unknown_keys(item, {"type", "source", "target", "read_only", "tmpfs"}, *where[2:])
        target = item.get("target")
        if kind == "tmpfs":
            size = (
                item.get("tmpfs", {}).get("size") if isinstance(item.get("tmpfs"), dict) else None
            )
            options = f":size={size}" if size is not None else ""
            tmpfs.append(f"{target}{options}")
            return None
        if kind not in ("volume", "bind"):
            self.unsupported((*where, "type"), f"fleet mounts volumes and binds, not {kind}")
            return None
        source = item.get("source")
        if not isinstance(source, str) or not isinstance(target, str):
            self.unsupported(where, "a volume without a source: give it a name")
            return None
        return self.mount(source, target, item.get("read_only") is True, where)

    def mount(self, source: str, target: str, read_only: bool, where: Path) -> str | None:
        suffix = ":ro" if read_only else ""
        if source.startswith("/"):
            return f"{source}:{target}{suffix}"  # a bind mount: fleet's policy decides
        if source.startswith((".", "~")):
            self.unsupported(
                where,
                f"a bind mount of {source}, beside the compose file: the hosts do not have "
                "it. Use a named volume, an absolute path that exists on every host (bind "
                "mounts need the policy: fleet policy set), or build the files into the image",
            )
            return None
        if source not in self.project.volumes:
            self.report.error(
                where, f"volume {source!r} is not declared under the top-level volumes:"
            )
            return None
        return f"{self.project.volumes[source]}:{target}{suffix}"

    def networks(self) -> None:
        mode = self.data.get("network_mode")
        if mode is not None:
            if mode == "host":
                self.put("host_network", True, "network_mode")
            else:
                self.unsupported(
                    self.at("network_mode"),
                    f"fleet runs replicas on their own networks or the host's, not {mode}",
                )
        if self.data.get("pid") == "host":
            self.put("host_pid", True, "pid")
        elif "pid" in self.data:
            self.unsupported(self.at("pid"), "fleet shares only the host's PID namespace")
        networks = self.data.get("networks")
        if networks is None:
            if mode is None:
                # Compose puts such a service on the project's default network.
                self.put("networks", [self.project.networks["default"]], "networks")
            return
        names = list(networks) if isinstance(networks, dict) else as_list(networks)
        if names is None:
            self.report.error(self.at("networks"), "expected a list or mapping of networks")
            return
        out: list[str] = []
        for i, name in enumerate(names):
            where = self.at("networks", str(name) if isinstance(networks, dict) else i)
            if isinstance(networks, dict) and isinstance(networks[name], dict):
                for setting in networks[name]:
                    self.unsupported(
                        self.at("networks", str(name), str(setting)),
                        "fleet takes no settings for a network: the app's name is its alias",
                    )
            if not isinstance(name, str) or name not in self.project.networks:
                self.report.error(
                    where, f"network {show(name)} is not declared under the top-level networks:"
                )
                continue
            out.append(self.project.networks[name])
        self.put("networks", out, "networks")

    def depends_on(self) -> None:
        depends = self.data.get("depends_on")
        if depends is None:
            return
        names = list(depends) if isinstance(depends, dict) else as_list(depends)
        if names is None:
            self.report.error(self.at("depends_on"), "expected a list or mapping of services")
            return
        for i, name in enumerate(names):
            where = self.at("depends_on", str(name) if isinstance(depends, dict) else i)
            if not isinstance(name, str) or name not in self.project.services:
                self.report.error(where, f"depends on {show(name)}, which is no service here")
                continue
            self.out.depends_on.append(name)
            settings = depends[name] if isinstance(depends, dict) else None
            if not isinstance(settings, dict):
                continue
            condition = settings.get("condition", "service_started")
            if condition != "service_started":
                self.unsupported(
                    (*where, "condition"),
                    f"fleet applies {name} first but does not wait for it ({condition}): "
                    "every app starts at once, so the app must retry until its dependency "
                    "answers",
                )
            for setting in settings:
                if setting not in ("condition", "required"):
                    self.unsupported((*where, setting))

    def healthcheck(self) -> None:
        check = self.data.get("healthcheck")
        if check is None:
            return
        if not isinstance(check, dict):
            self.report.error(self.at("healthcheck"), "expected a mapping")
            return
        self.unknown_keys(
            check,
            {"test", "interval", "timeout", "retries", "start_period", "disable"},
            "healthcheck",
        )
        test = check.get("test")
        if check.get("disable") is True or test in (["NONE"], "NONE"):
            return
        if isinstance(test, str):
            command: list[object] = ["/bin/sh", "-c", test]
        elif isinstance(test, list) and test and test[0] == "CMD":
            command = test[1:]
        elif isinstance(test, list) and len(test) == 2 and test[0] == "CMD-SHELL":
            command = ["/bin/sh", "-c", test[1]]
        else:
            self.report.error(
                self.at("healthcheck", "test"),
                'expected a command as ["CMD", ...], ["CMD-SHELL", "..."] or a string',
            )
            return
        # Compose's defaults, not fleet's (2s, 1s): the check keeps its pace.
        health: dict[str, object] = {
            "exec": command,
            "interval": check.get("interval", "30s"),
            "timeout": check.get("timeout", "30s"),
        }
        for name in ("retries", "start_period"):
            if name in check:
                health[name] = check[name]
        self.put("health", health, "healthcheck")

    def logging(self) -> None:
        logging = self.data.get("logging")
        if logging is None:
            return
        if isinstance(logging, dict):
            self.unknown_keys(logging, {"driver", "options"}, "logging")
            logging = {k: v for k, v in logging.items() if k in ("driver", "options")}
        self.put("logging", logging, "logging")

    # --- how many, how they restart and roll out ---

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
                }.get(str(name), _GENERIC)
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
        for i, text in enumerate(given.get("constraints") or []):
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


def map_service(key: str, data: dict[str, Any], project: Project, report: Report) -> ServiceApp:
    """The fleet app document of compose service ``key``; findings go to ``report``."""
    return _Mapper(key, data, project, report).run()
