"""One compose service mapped onto one fleet app document: each key either becomes a
fleet field, is reported as one fleet cannot honour (with why and what to do), or (a
close mapping whose meaning differs a little) is mapped and noted."""

from __future__ import annotations

import re
from typing import Any

from fleet.spec._quote import show
from fleet.spec.compose._base import GENERIC, REASONS, Project, ServiceApp
from fleet.spec.compose._deploy import DeployMapper
from fleet.spec.compose._interpolate import parse_env_file
from fleet.spec.compose._report import Path, Report
from fleet.spec.compose._values import as_list, as_mapping

__all__ = ["map_service"]

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
_NO_EXPOSE = (
    "expose only documents ports: on a shared network every port of a replica is "
    "reachable already; use ports to publish on the host"
)


class _Mapper(DeployMapper):
    """Maps the service's container keys; the rest is ``DeployMapper``'s."""

    def run(self) -> ServiceApp:
        for name in self.data:
            if name not in _HANDLED and not str(name).startswith("x-"):
                self.unsupported(self.at(name), REASONS.get(str(name), GENERIC))
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
            if not all(isinstance(v, int | str) for v in (target, published or 0, protocol)):
                self.report.error(where, "expected target, published and protocol as text")
                return []
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
            self.report.note(
                self.at("healthcheck"),
                "no health check: fleet counts a running replica as healthy and ignores the "
                "image's HEALTHCHECK (which Docker may still run)",
            )
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


def map_service(key: str, data: dict[str, Any], project: Project, report: Report) -> ServiceApp:
    """The fleet app document of compose service ``key``; findings go to ``report``."""
    return _Mapper(key, data, project, report).run()
