"""A real image registry (Debian's `docker-registry`, distribution 2.8) for push/pull tests.

It listens on the address the caller chooses: loopback for one daemon in the root namespace,
or a `HostPool`'s gateway so that every namespace host can pull from it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from fleet.testing.procs import Daemon, ManagedProcess, ProcessError, free_port, require_binary


class Registry(Daemon):
    """One `docker-registry serve` process with filesystem storage in a temporary directory."""

    program = "docker-registry"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        start_timeout: float = 30.0,
        require_auth: bool = False,
    ) -> None:
        self.host = host
        # With require_auth every request needs basic credentials (an htpasswd file the
        # registry makes with a random password): a pull without them is refused.
        self.require_auth = require_auth
        self.port = port if port is not None else free_port(host)
        self.base_dir = Path(tempfile.mkdtemp(prefix="fleet-registry-"))
        self.config_path = self.base_dir / "config.yml"
        super().__init__(self.base_dir / "registry.log", start_timeout)

    @property
    def address(self) -> str:
        """`ADDR:PORT`, the prefix of image references in this registry."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The registry's base URL."""
        return f"http://{self.address}"

    def _write_config(self) -> None:
        # JSON is YAML: no YAML writer needed for a config this small.
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.base_dir / "storage")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.address},
        }
        if self.require_auth:
            config["auth"] = {
                "htpasswd": {"realm": "fleet-test", "path": str(self.base_dir / "htpasswd")}
            }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def answers(self) -> bool:
        """Tell whether `GET /v2/` answers 200, the API version check every client starts with."""
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=2) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError as error:  # asks for credentials: it is up
            return self.require_auth and error.code == 401
        except OSError:
            return False

    def start(self) -> Self:
        """Start the registry and wait until `/v2/` answers; raise with its log tail if not."""
        if self.running:
            return self
        self._write_config()
        binary = require_binary("docker-registry", "/usr/bin/docker-registry")
        process = ManagedProcess(
            [binary, "serve", str(self.config_path)], self.log_path, name=self.program
        )
        self._launch(process, self.answers, f"registry at {self.url}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the registry and delete its storage. Idempotent."""
        super().stop(timeout)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def catalog(self) -> list[str]:
        """The repositories the registry holds (`GET /v2/_catalog`)."""
        with urllib.request.urlopen(f"{self.url}/v2/_catalog", timeout=5) as resp:
            body = json.loads(resp.read())
        return list(body.get("repositories") or [])

    def __repr__(self) -> str:
        return f"Registry(address={self.address!r})"


def push_image(
    docker_client: Any,
    local_ref: str,
    registry_address: str,
    repository: str,
    tag: str,
) -> str:
    """Tag `local_ref` as `registry_address/repository:tag`, push it, and return that reference.

    The push goes through the daemon behind `docker_client` (a `docker.DockerClient`), which
    must trust the registry (`--insecure-registry`); errors in the push stream are raised.
    """
    remote_repo = f"{registry_address}/{repository}"
    if not docker_client.api.tag(local_ref, remote_repo, tag):
        raise ProcessError(f"could not tag {local_ref} as {remote_repo}:{tag}")
    errors: list[str] = []
    for msg in docker_client.api.push(remote_repo, tag=tag, stream=True, decode=True):
        if isinstance(msg, dict) and (msg.get("error") or msg.get("errorDetail")):
            detail = msg.get("errorDetail") or {}
            errors.append(str(msg.get("error") or detail.get("message") or msg))
    if errors:
        raise ProcessError(f"pushing {remote_repo}:{tag} failed: {'; '.join(errors)}")
    return f"{remote_repo}:{tag}"
