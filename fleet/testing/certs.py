"""A throwaway PKI for tests and local clusters: fleet's own CA and certificates
(``fleet.pki``), made on demand in one directory."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleet.pki.files import CertPaths
from fleet.pki.issuing import init_ca, issue
from fleet.pki.subjects import Kind, Role
from fleet.transport import TlsFiles, Transport

__all__ = ["TestPKI", "etcd_tls_args", "tls_args"]


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

    def dated_client(self, name: str, not_before: datetime, not_after: datetime) -> TlsFiles:
        """An admin client certificate valid from ``not_before`` to ``not_after`` (past or
        future: what ``fleet certs issue`` cannot make), its key 0600 beside it."""
        ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        ca_key = serialization.load_pem_private_key((self.dir / "ca.key").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleet"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "client"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "role:admin"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256())
        )
        paths = CertPaths.for_leaf(self.dir, Kind.client, name)
        paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        descriptor = os.open(paths.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
        return TlsFiles(self.ca, paths.cert, paths.key)


def tls_args(files: TlsFiles | None) -> list[str]:
    """The command-line flags that hand ``files`` to a fleet daemon (--insecure if None)."""
    if files is None:
        return ["--insecure"]
    return ["--tls-ca", str(files.ca), "--tls-cert", str(files.cert), "--tls-key", str(files.key)]


def etcd_tls_args(files: TlsFiles) -> list[str]:
    """The flags that hand ``files`` (etcd's CA, a client certificate of it) to
    ``fleet server`` for its way into etcd."""
    return [
        *("--etcd-cacert", str(files.ca), "--etcd-cert", str(files.cert)),
        *("--etcd-key", str(files.key)),
    ]
