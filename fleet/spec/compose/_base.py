"""What mapping a compose service shares: the project every service sees, the app a
service becomes, and the mapper's helpers (a key's path, a fleet field set from it, a key
reported as one fleet cannot honour)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.spec._quote import show
from fleet.spec.compose._report import Path, Report
from fleet.spec.compose._values import size_text

__all__ = ["GENERIC", "REASONS", "Mapper", "Project", "ServiceApp"]

GENERIC = "fleet has no equivalent of this compose key"
# Why fleet does not take a key, for the keys sample projects use most.
REASONS = {
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


class Mapper:
    """The state and helpers of one service's mapping."""

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

    def unsupported(self, path: Path, reason: str = GENERIC) -> None:
        self.report.unsupported(path, reason)

    def unknown_keys(self, mapping: dict[str, Any], known: set[str], *parts: str | int) -> None:
        """Report every key of a nested mapping fleet does not take."""
        for name in mapping:
            if name not in known and not str(name).startswith("x-"):
                self.unsupported(self.at(*parts, name), REASONS.get(str(name), GENERIC))

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
