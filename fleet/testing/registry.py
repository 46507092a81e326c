"""A real image registry (Debian's `docker-registry`, distribution 2.8) for push/pull tests.

It listens on the address the caller chooses: loopback for one daemon in the root namespace,
or a `HostPool`'s gateway so that every namespace host can pull from it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import shutil
import ssl
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet.testing.procs import (
    Daemon,
    ManagedProcess,
    ProcessError,
    free_port,
    require_binary,
    run,
)


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
        users: dict[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        self.host = host
        # With require_auth every request needs basic credentials (an htpasswd file the
        # registry makes with a random password, or of ``users``: name -> password):
        # a pull without them is refused.
        self.users = dict(users or {})
        self.require_auth = require_auth or bool(self.users)
        # With tls the registry speaks HTTPS only, with a self-signed certificate for
        # its address (``cert_path``); a daemon that lists it as an insecure registry
        # takes it unverified, as Docker does for those.
        self.tls = tls
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
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def cert_path(self) -> Path:
        return self.base_dir / "registry.crt"

    def _write_tls(self) -> None:
        """A self-signed certificate for the registry's address, and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.host)])
        now = datetime.datetime.now(datetime.UTC)
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(self.host))
        except ValueError:
            alt = x509.DNSName(self.host)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        # (Its own CA too: Docker's certs.d holds it as the CA to trust.)
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.base_dir / "registry.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def _write_htpasswd(self) -> None:
        """The ``users`` with bcrypt hashes (the only kind distribution reads), made by
        the C library's crypt(3): no bcrypt package or htpasswd binary needed."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # crypt: gone in 3.13
            import crypt

            lines = [
                f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"
                for user, password in self.users.items()
            ]
        (self.base_dir / "htpasswd").write_text("".join(lines))

    def _open(self, path: str, user: str | None = None) -> Any:
        request = urllib.request.Request(f"{self.url}{path}")
        if user is not None:
            token = base64.b64encode(f"{user}:{self.users[user]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.cert_path))
        return urllib.request.urlopen(request, timeout=5, context=context)

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
        if self.tls:
            self._write_tls()
            config["http"]["tls"] = {
                "certificate": str(self.cert_path),
                "key": str(self.base_dir / "registry.key"),
            }
        if self.users:
            self._write_htpasswd()
        if self.require_auth:
            config["auth"] = {
                "htpasswd": {"realm": "fleet-test", "path": str(self.base_dir / "htpasswd")}
            }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def answers(self) -> bool:
        """Tell whether `GET /v2/` answers 200, the API version check every client starts with."""
        try:
            with self._open("/v2/") as resp:
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
        with self._open("/v2/_catalog", next(iter(self.users), None)) as resp:
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
    auth: dict[str, str] | None = None,
) -> str:
    """Tag `local_ref` as `registry_address/repository:tag`, push it, and return that reference.

    The push goes through the daemon behind `docker_client` (a `docker.DockerClient`), which
    must trust the registry (`--insecure-registry`); errors in the push stream are raised.
    """
    remote_repo = f"{registry_address}/{repository}"
    if not docker_client.api.tag(local_ref, remote_repo, tag):
        raise ProcessError(f"could not tag {local_ref} as {remote_repo}:{tag}")
    errors: list[str] = []
    pushed = docker_client.api.push(
        remote_repo, tag=tag, stream=True, decode=True, auth_config=auth
    )
    for msg in pushed:
        if isinstance(msg, dict) and (msg.get("error") or msg.get("errorDetail")):
            detail = msg.get("errorDetail") or {}
            errors.append(str(msg.get("error") or detail.get("message") or msg))
    if errors:
        raise ProcessError(f"pushing {remote_repo}:{tag} failed: {'; '.join(errors)}")
    return f"{remote_repo}:{tag}"


DOCKER_CERTS_DIR = Path("/etc/docker/certs.d")


@contextlib.contextmanager
def trusted_tls_registry(pool: Any, users: dict[str, str]) -> Iterator[Registry]:
    """A registry on HTTPS with htpasswd ``users`` that the daemons of ``pool`` (a
    ``HostPool``) verify as Docker verifies any registry: not an insecure one (those
    are taken unverified, and Docker then retries them over plain HTTP, so a refusal
    reads as a reset connection). It listens on an address of the pool's bridge
    outside the pool's subnet (which the daemons take as insecure), in 198.18.0.0/15,
    the range kept for tests, and its certificate is in Docker's
    ``/etc/docker/certs.d/ADDR:PORT/ca.crt``, where every dockerd of the machine
    looks; both are removed afterwards."""
    octets = pool.subnet.split("/")[0].split(".")
    address = f"198.18.{octets[2]}.{int(octets[1]) % 254 + 1}"
    ip = require_binary("ip", "/usr/sbin/ip", "/sbin/ip")
    run([ip, "addr", "add", f"{address}/32", "dev", pool.bridge])
    registry = Registry(address, users=users, tls=True)
    trusted = DOCKER_CERTS_DIR / registry.address
    try:
        registry.start()
        trusted.mkdir(parents=True, exist_ok=True)
        shutil.copy(registry.cert_path, trusted / "ca.crt")
        yield registry
    finally:
        shutil.rmtree(trusted, ignore_errors=True)
        registry.stop()
        run([ip, "addr", "del", f"{address}/32", "dev", pool.bridge], check=False)
