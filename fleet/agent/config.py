"""How one agent is set up: ``fleet agent``'s options, and the files of its state dir."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fleet.agent.restarts import Backoff
from fleet.policy import Policy
from fleet.transport import Transport

__all__ = ["AgentConfig"]


@dataclass(frozen=True)
class AgentConfig:
    servers: Sequence[str]
    host_id: str
    transport: Transport  # the agent's own certificate names host_id
    # What containers may ask of this host, whatever the control plane says.
    policy: Policy = field(default_factory=Policy)
    labels: dict[str, str] = field(default_factory=dict)
    resync_seconds: float = 10.0
    parallel_tasks: int = 8  # docker create+start scales to about 8 threads here
    stats_seconds: float = 3.0  # how often live usage is sampled
    # What the host offers fleet, when less than the daemon reports (room kept for the
    # OS and other tenants); None: what `docker info` says.
    cpus: float | None = None
    memory: int | None = None
    # Remove images fleet containers have not used for this long (None: keep them all).
    image_gc_after: float | None = None
    # Where restart counts are kept so they survive an agent restart (None: in memory).
    state_dir: Path | None = None
    reconnect_max: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    # A pull or a Docker call that failed is tried again after this backoff.
    failure_backoff: Backoff = field(default_factory=lambda: Backoff(initial=2.0, cap=60.0))
    # Where this host's published ports answer, for `fleet endpoints` ("" : unknown).
    address: str = ""
    # Non-empty: this host is an edge, its proxy listening here (ADDR:PORT); the control
    # plane then pushes it the ingress routes (EdgeConfig).
    ingress: str = ""
    # The OS's own description (ID, VERSION_ID, ...): an upgrade changes it.
    os_release: Path = Path("/etc/os-release")
    # Its machine id, reported as Zincati's id of it (``zincati_id``) for FleetLock.
    machine_id: Path = Path("/etc/machine-id")
    # Whether the control plane may have this host run a command (an OS upgrade walk).
    allow_host_commands: bool = False
    # How often the certificate files are looked at: once changed into a usable set,
    # the agent reconnects with them (renewal without a restart).
    cert_check_seconds: float = 2.0

    @property
    def restarts_file(self) -> Path | None:
        """Restart counts (None: kept in memory only)."""
        return self.state_dir / "restarts.json" if self.state_dir else None

    @property
    def images_file(self) -> Path | None:
        """When fleet's containers last used each image (None: in memory only)."""
        return self.state_dir / "images.json" if self.state_dir else None

    @property
    def pool_file(self) -> Path | None:
        """The pool's id and the pool-less containers taken as its own
        (``fleet.agent.ownership``; None: in memory only)."""
        return self.state_dir / "pool.json" if self.state_dir else None

    @property
    def previous_logs_dir(self) -> Path | None:
        """The logs of replicas' removed containers, for ``logs --previous``
        (``fleet.agent.previouslogs``; None: none kept)."""
        return self.state_dir / "previous-logs" if self.state_dir else None

    @property
    def commands_file(self) -> Path:
        """The host commands already run, by id (beside their output logs)."""
        return (self.state_dir or Path(".")) / "commands.json"
