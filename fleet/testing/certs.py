"""A throwaway PKI for tests and local clusters: fleet's own CA and certificates
(``fleet.pki``), made on demand in one directory."""

from __future__ import annotations

from pathlib import Path

from fleet.pki import CertPaths, Kind, Role, init_ca, issue
from fleet.transport import TlsFiles, Transport

__all__ = ["TestPKI", "tls_args"]


class TestPKI:
    """A CA in ``directory`` plus a control-plane certificate for loopback; agent and
    client certificates are issued the first time they are asked for."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        if not CertPaths.for_ca(directory).cert.exists():
            init_ca(directory)
        self.ca = CertPaths.for_ca(directory).cert

    def _files(
        self, kind: Kind, name: str, role: Role | None = None, sans: tuple[str, ...] = ()
    ) -> TlsFiles:
        paths = CertPaths.for_leaf(self.dir, kind, name)
        if not paths.cert.exists():
            issue(self.dir, kind, name, sans=sans, role=role)
        return TlsFiles(self.ca, paths.cert, paths.key)

    def server(self) -> TlsFiles:
        return self._files(Kind.server, "controlplane", sans=("127.0.0.1", "localhost", "::1"))

    def agent(self, host_id: str) -> TlsFiles:
        return self._files(Kind.agent, host_id)

    def client(self, name: str = "admin", role: Role | str = Role.admin) -> TlsFiles:
        return self._files(Kind.client, name, role=Role(role))

    def client_transport(self, name: str = "admin", role: Role | str = Role.admin) -> Transport:
        return Transport(self.client(name, role))


def tls_args(files: TlsFiles | None) -> list[str]:
    """The command-line flags that hand ``files`` to a fleet daemon (--insecure if None)."""
    if files is None:
        return ["--insecure"]
    return ["--tls-ca", str(files.ca), "--tls-cert", str(files.cert), "--tls-key", str(files.key)]
