"""A real etcd on free loopback ports, for tests that need the store: one member
(`EtcdServer`) or a cluster of several (`EtcdCluster`, for quorum tests), in plaintext or
with TLS on the client and peer ports (`EtcdTls`, certificates from `EtcdTestPKI`).

Each instance has its own ports, name, cluster token and data dir, so it collides with
nothing else on the machine; `restart()` keeps ports and data to test etcd restarts.
A member can also run in another network namespace (``wrap``: the command that enters
it) on that namespace's address, as the HA end-to-end test runs one per host.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from fleet.pki.files import CertPaths
from fleet.pki.issuing import init_ca, issue
from fleet.pki.subjects import Kind
from fleet.testing.procs import (
    Daemon,
    ManagedProcess,
    Service,
    free_ports,
    require_binary,
)
from fleet.transport import TlsFiles


@dataclass(frozen=True)
class EtcdTls:
    """A member's TLS: its own certificate, for its client and its peer port (an
    etcd-member certificate serves and connects), and a client's, to ask it for /health."""

    member: TlsFiles
    client: TlsFiles


class EtcdTestPKI:
    """etcd's own CA in ``directory`` (``fleet certs init --etcd``), with a certificate
    per member for the addresses given (``fleet certs issue etcd-member``) and the
    control plane's client certificate: made with fleet's tooling, as the deploy docs
    make them."""

    __test__ = False

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        if not CertPaths.for_ca(directory).cert.exists():
            init_ca(directory, etcd=True)
        self.ca = CertPaths.for_ca(directory).cert

    def _files(self, kind: Kind, name: str, sans: Sequence[str] = ()) -> TlsFiles:
        paths = CertPaths.for_leaf(self.dir, kind, name)
        if not paths.cert.exists():
            issue(self.dir, kind, name, sans=sans)
        return TlsFiles(self.ca, paths.cert, paths.key)

    def client(self, name: str = "controlplane") -> TlsFiles:
        return self._files(Kind.etcd_client, name)

    def member(self, name: str, sans: Sequence[str]) -> EtcdTls:
        return EtcdTls(self._files(Kind.etcd_member, name, sans), self.client())


class EtcdServer(Daemon):
    """One `etcd` process on 127.0.0.1 with a temporary data dir, started by `start()`."""

    program = "etcd"

    def __init__(
        self,
        *,
        name: str | None = None,
        data_dir: Path | None = None,
        start_timeout: float = 30.0,
        host: str = "127.0.0.1",
        tls: EtcdTls | None = None,
        ports: tuple[int, int] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        self.name = name or f"fleet-test-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.host = host
        self.tls = tls
        # In another network namespace (``wrap``) the ports are that namespace's own.
        self.client_port, self.peer_port = ports or tuple(free_ports(2, host))
        self.wrap = list(wrap)
        # The temporary directory we own (and delete in close()), holding data and log.
        self._tmp_dir: Path | None = None
        if data_dir is None:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="fleet-etcd-"))
            data_dir = self._tmp_dir / "data"
        self.data_dir = data_dir
        super().__init__(data_dir.parent / f"{self.name}.log", start_timeout)
        # Set by EtcdCluster: every member's name=peer URL, and the cluster's token.
        self.initial_cluster: str | None = None
        self.cluster_token: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        """The client endpoint as `host:port`, the form gRPC clients such as aetcd take."""
        return f"{self.host}:{self.client_port}"

    @property
    def url(self) -> str:
        """The client URL, `http(s)://HOST:PORT`, for the HTTP/JSON gateway."""
        return f"{self.scheme}://{self.endpoint}"

    def _tls_args(self) -> list[str]:
        """Client and peer TLS, each asking the other side for a certificate of etcd's CA."""
        if self.tls is None:
            return []
        ca, cert, key = (
            str(p) for p in (self.tls.member.ca, self.tls.member.cert, self.tls.member.key)
        )
        return [
            *("--trusted-ca-file", ca, "--cert-file", cert, "--key-file", key),
            "--client-cert-auth",
            *("--peer-trusted-ca-file", ca, "--peer-cert-file", cert, "--peer-key-file", key),
            "--peer-client-cert-auth",
        ]

    def _args(self) -> list[str]:
        peer = self.peer_url
        return [
            *self.wrap,
            require_binary("etcd", "/usr/bin/etcd"),
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            self.initial_cluster or f"{self.name}={peer}",
            "--initial-cluster-token",
            self.cluster_token or self.name,
            "--initial-cluster-state",
            "new",
            # One member on loopback: a short election timeout only shortens the wait for
            # leadership after a restart (about 1 s with the defaults).
            "--heartbeat-interval",
            "25",
            "--election-timeout",
            "250",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            *self._tls_args(),
        ]

    def ssl_context(self) -> ssl.SSLContext | None:
        """What an HTTPS client of this member needs (None: it speaks plain HTTP)."""
        if self.tls is None:
            return None
        client = self.tls.client
        context = ssl.create_default_context(cafile=str(client.ca))
        context.load_cert_chain(str(client.cert), str(client.key))
        return context

    def healthy(self) -> bool:
        """Tell whether etcd answers `GET /health` with `{"health": "true"}`."""
        try:
            with urllib.request.urlopen(
                f"{self.url}/health", timeout=2, context=self.ssl_context()
            ) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError):
            return False
        return isinstance(body, dict) and body.get("health") == "true"

    def start(self, *, wait: bool = True) -> Self:
        """Start etcd and wait until it reports healthy (a cluster member: until the
        cluster has a leader); raise with its log tail if it does not."""
        if self.running:
            return self
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # Inherited ETCD_* variables would silently override our flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        process = ManagedProcess(self._args(), self.log_path, name=self.program, env=env)
        self._launch(process, self.healthy if wait else None, f"etcd at {self.url}")
        return self

    def wait_healthy(self) -> None:
        assert self._proc is not None
        self._proc.wait_ready(self.healthy, self.start_timeout, what=f"etcd at {self.url}")

    def restart(self) -> None:
        """Stop and start again on the same ports and data dir, as a crashed member would."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop etcd and delete its temporary directory (when the harness created it);
        ``stop()`` keeps the data dir for ``restart()``."""
        self.stop()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"EtcdServer(endpoint={self.endpoint!r}, data_dir={str(self.data_dir)!r})"


class EtcdCluster(Service):
    """``size`` etcd members on loopback forming one cluster (3: one may fail).

    With ``pki``, TLS on every client and peer port, each member on an address of its
    own (127.0.0.2, .3, ...) with a certificate of its own for that address, as on
    machines of their own; ``client_tls`` is the control plane's way in. Its SANs also
    hold 127.0.0.1: every member dials its peers from there on one loopback, and etcd
    checks a peer's certificate against the address it connects from.
    """

    def __init__(self, size: int = 3, *, pki: EtcdTestPKI | None = None) -> None:
        token = f"fleet-test-cluster-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.pki = pki
        self.members = []
        for i in range(size):
            name = f"{token}-m{i}"
            if pki is None:
                self.members.append(EtcdServer(name=name))
                continue
            host = f"127.0.0.{i + 2}"
            tls = pki.member(f"m{i}", (host, "127.0.0.1"))
            self.members.append(EtcdServer(name=name, host=host, tls=tls))
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial
            member.cluster_token = token

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def client_tls(self) -> TlsFiles | None:
        """The control plane's certificate for etcd (None: plaintext)."""
        return self.pki.client() if self.pki else None

    def start(self) -> Self:
        """Start every member, then wait until each is healthy (the cluster has a leader)."""
        try:
            for member in self.members:
                member.start(wait=False)
            for member in self.members:
                member.wait_healthy()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for member in self.members:
            member.close()
