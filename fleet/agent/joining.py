"""An agent that joins the pool with a token (``fleet agent --join``), and keeps its
certificate fresh (``CertificateRenewer``).

Joining: the agent has no certificate and no CA yet. It opens a TLS connection to the
join address (the control plane's ``--token-listen``) without checking the server,
only to read the chain it presents, and keeps the CA certificate whose SHA-256 is the
``--ca-fingerprint`` the admin gave: no fingerprint, no join (never trust on first
use). With that CA as the only root it then calls ``JoinHost`` over a checked TLS
channel, sending the token and a CSR for a key made here, which never leaves the
host. The CA, the key (0600) and the certificate are written to the agent's pki dir;
an agent started again with the same ``--join`` finds them there and does not join
again (its token may well have expired by then).

Renewing: before two thirds of its certificate's life have passed the agent sends a
CSR for a new key to ``AgentService.RenewCertificate`` and writes the new pair; the
certificate watch of its session (``certwatch``) then reconnects with it. Its
containers never notice.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import socket
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.transport import TlsFiles, Transport

__all__ = [
    "CertificateRenewer",
    "join_pool",
    "normalize_fingerprint",
    "pinned_ca",
    "renew_at",
]

log = logging.getLogger(__name__)

_TIMEOUT = 10.0  # seconds for each network step of a join
_ENCODING_DER = 2  # _ssl.ENCODING_DER: how _ssl.Certificate.public_bytes gives DER


def normalize_fingerprint(text: str) -> str:
    """``sha256:<64 hex>`` from what people paste: with or without ``sha256:``/``SHA256=``,
    upper or lower case, with or without colons (openssl's form). InvalidArgument else."""
    value = text.strip()
    for prefix in ("sha256:", "sha256=", "sha256 fingerprint="):
        if value.lower().startswith(prefix):
            value = value[len(prefix) :]
    value = value.replace(":", "").lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidArgument(
            f"--ca-fingerprint {text!r}: expected sha256:<64 hex digits> (fleet hosts token "
            "create prints it; or `openssl x509 -in ca.crt -noout -fingerprint -sha256`)"
        )
    return "sha256:" + value


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArgument(f"--join-server {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def pinned_ca(address: str, fingerprint: str, timeout: float = _TIMEOUT) -> bytes:
    """The PEM of the CA certificate in the TLS chain ``address`` presents whose SHA-256
    (of its DER) is ``fingerprint``. The connection is not checked (the agent has no CA
    yet); the fingerprint is the check. PermissionDenied when no certificate of the
    chain matches, Unavailable when nothing answers."""
    host, port = _split(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])  # the port is gRPC's
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host or None) as tls,
        ):
            # Python 3.13 has SSLSocket.get_unverified_chain(); 3.11 and 3.12 have it on
            # the socket's _sslobj (which 3.13's calls).
            sslobj: Any = getattr(tls, "_sslobj", None)
            chain = sslobj.get_unverified_chain() if sslobj is not None else None
            ders = [c.public_bytes(_ENCODING_DER) for c in chain or []]
    except (OSError, ssl.SSLError) as error:
        raise Unavailable(f"cannot reach the join address {address}: {error}") from error
    for der in ders:
        if "sha256:" + hashlib.sha256(der).hexdigest() == fingerprint:
            cert = x509.load_der_x509_certificate(der)
            return cert.public_bytes(serialization.Encoding.PEM)
    raise PermissionDenied(
        f"the server at {address} presents no CA with fingerprint {fingerprint} (its chain "
        f"has {len(ders)} certificate(s)): not the pool's control plane, or a wrong "
        "--ca-fingerprint; nothing was sent to it"
    )


def _new_key_and_csr(host_id: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_id)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` whole with ``data`` (a crash leaves the old file or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _fingerprint_of(ca_pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _joined_already(files: TlsFiles, fingerprint: str) -> bool:
    """Whether ``files`` hold a certificate of the pinned CA that is still valid."""
    try:
        ca_pem, cert_pem = files.ca.read_bytes(), files.cert.read_bytes()
        files.key.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (OSError, ValueError):
        return False
    return _fingerprint_of(ca_pem) == fingerprint and cert.not_valid_after_utc > datetime.now(UTC)


def _refusal(error: grpc.RpcError, what: str) -> Exception:
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(f"the control plane refused the {what}: {details}")
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
        return FailedPrecondition(f"the control plane refused the {what}: {details}")
    return Unavailable(f"the {what} failed: {details or code.name}")


def join_pool(
    *, join_server: str, token: str, fingerprint: str, host_id: str, files: TlsFiles
) -> bool:
    """Get this host's agent certificate with ``token`` into ``files`` (see the module);
    False when they hold a valid one of the pinned CA already (nothing done). Raises
    PermissionDenied or FailedPrecondition when refused (a retry cannot help),
    Unavailable when the control plane cannot be reached (one may)."""
    if _joined_already(files, fingerprint):
        return False
    for path in {files.ca.parent, files.cert.parent, files.key.parent}:
        # Before the token is spent: a certificate that cannot be kept is a lost use.
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.access(path, os.W_OK):
            raise OSError(errno.EACCES, "not writable", str(path))
    ca_pem = pinned_ca(join_server, fingerprint)
    key_pem, csr_pem = _new_key_and_csr(host_id)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(join_server, credentials) as channel:
        stub = pb_grpc.JoinServiceStub(channel)
        request = pb.JoinRequest(token=token.strip(), host_id=host_id, csr_pem=csr_pem)
        try:
            answer: pb.CertificateResponse = stub.JoinHost(request, timeout=_TIMEOUT)
        except grpc.RpcError as error:
            raise _refusal(error, "join") from None
    if answer.ca_pem.strip() != ca_pem.strip():
        raise PermissionDenied("the control plane answered with another CA than the pinned one")
    # The key first: a crash between the two leaves no certificate without its key.
    _write(files.key, key_pem, 0o600)
    _write(files.ca, ca_pem, 0o644)
    _write(files.cert, answer.certificate_pem, 0o644)
    log.info("joined the pool as %s; certificate in %s", host_id, files.cert)
    return True


def renew_at(cert: x509.Certificate) -> float:
    """When (epoch seconds) a certificate is due for renewal: two thirds into its life."""
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    return start + (end - start) * 2 / 3


class CertificateRenewer:
    """Renews the agent's certificate (``files``) through the control plane, two
    thirds into its life, for as long as ``run`` runs."""

    def __init__(
        self,
        files: TlsFiles,
        transport: Transport,
        servers: list[str],
        host_id: str,
        *,
        retry_seconds: float = 60.0,
    ) -> None:
        self.files = files
        self.transport = transport
        self.servers = servers
        self.host_id = host_id
        self.retry_seconds = retry_seconds
        self.renewals = 0

    def _due(self) -> float:
        cert = x509.load_pem_x509_certificate(self.files.cert.read_bytes())
        return renew_at(cert)

    async def run(self) -> None:
        if not os.access(self.files.cert.parent, os.W_OK):
            log.warning(
                "the agent cannot write %s, so it will not renew its certificate: renew it "
                "by hand (fleet certs issue agent %s --force) before it expires",
                self.files.cert.parent,
                self.host_id,
            )
            return
        failures = 0
        while True:
            try:
                due = await asyncio.to_thread(self._due)
            except (OSError, ValueError) as error:
                log.warning("cannot read the agent certificate %s: %s", self.files.cert, error)
                due = time.time() + self.retry_seconds
            await asyncio.sleep(max(0.0, due - time.time()))
            try:
                await self.renew()
                failures = 0
            except (PermissionDenied, FailedPrecondition, Unavailable, OSError) as error:
                failures += 1
                wait = min(self.retry_seconds * failures, 3600.0)
                log.warning("certificate renewal failed: %s; trying again in %.0fs", error, wait)
                await asyncio.sleep(wait)

    async def renew(self) -> None:
        key_pem, csr_pem = await asyncio.to_thread(_new_key_and_csr, self.host_id)
        request = pb.CertificateRequest(csr_pem=csr_pem)
        last: Exception = Unavailable("no control plane to renew with")
        for server in self.servers:
            async with self.transport.aio_channel(server) as channel:
                stub = pb_grpc.AgentServiceStub(channel)
                try:
                    answer = await stub.RenewCertificate(request, timeout=_TIMEOUT)
                except grpc.aio.AioRpcError as error:
                    last = _refusal(error, "renewal")
                    continue
            await asyncio.to_thread(self._store, key_pem, answer)
            self.renewals += 1
            cert = x509.load_pem_x509_certificate(answer.certificate_pem)
            log.info(
                "renewed the agent certificate: serial %x, until %s",
                cert.serial_number,
                cert.not_valid_after_utc.isoformat(timespec="seconds"),
            )
            return
        raise last

    def _store(self, key_pem: bytes, answer: pb.CertificateResponse) -> None:
        # The certificate watch reconnects once the pair matches again.
        _write(self.files.key, key_pem, 0o600)
        _write(self.files.cert, answer.certificate_pem, 0o644)
