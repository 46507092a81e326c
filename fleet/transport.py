"""How fleet's parts reach each other: mutual TLS by default, plaintext only on request.

Every gRPC connection (CLI -> control plane, agent -> control plane) is mutual TLS
with certificates from fleet's CA (``fleet certs``); the server reads who is calling
from the peer certificate. ``--insecure`` must be asked for explicitly and is logged
loudly, because whoever reaches a control plane owns every host in the pool.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from fleet._keyfiles import read_private
from fleet.errors import FailedPrecondition, InvalidArgument
from fleet.refusals import check_certificate, check_key

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_REQUEST_BYTES",
    "TlsFiles",
    "Transport",
    "client_transport",
    "default_pki_dirs",
    "listen_problem",
]

log = logging.getLogger(__name__)


def default_pki_dirs() -> list[Path]:
    """Where credentials are looked for when no flag, variable or context names them:
    ``pki/`` beside the CLI's config file (``fleet certs``' default), then
    ``~/.fleet/pki``. Never the current directory: a command must not connect with
    whatever certificate the directory it runs in happens to hold (``fleet up``
    saves a context naming its own)."""
    from fleet.contexts import config_path

    return [config_path().parent / "pki", Path.home() / ".fleet" / "pki"]


ChannelOptions = Sequence[tuple[str, Any]]

# How large one gRPC message may be; two limits, because requests and answers differ.
# A request (an apply, an agent's registration or report) is bounded by what the control
# plane accepts from anyone, gRPC's default of 4 MiB (the server's receive limit, its
# MAX_REQUEST_BYTES): apply files are 1 MiB at most, and a report of 500 containers is
# about 100 KB. Channels send no more than that, so an oversized request fails before it
# crosses the network. An answer lists the whole pool: `fleet get containers` is about
# 250 bytes a replica, past 4 MiB at ~15,000 replicas and about 25 MB at the 100,000 of
# the scale runs (benchmarks/README.md), and etcd's answer to the informer's first list
# is as large; 64 MiB leaves room for 250,000 replicas. What a client or agent accepts
# comes from the control plane (or etcd) it trusts, not from anyone who can connect.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _channel_options(options: ChannelOptions) -> list[tuple[str, Any]]:
    """``options`` over fleet's message limits (an option given wins over the default)."""
    merged: dict[str, Any] = {
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_REQUEST_BYTES,
    }
    merged.update(options)
    return list(merged.items())


@dataclass(frozen=True)
class TlsFiles:
    """A CA bundle and one certificate with its key, as PEM files; ``origin`` says where
    their paths came from (flags, variables, a PKI directory), for error messages."""

    ca: Path
    cert: Path
    key: Path
    origin: str = ""

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) bytes, or InvalidArgument naming the file that is missing, the
        key if anyone but its owner may read it (``fleet._keyfiles``), or both if the key
        is not the certificate's (``fleet.refusals.check_key``)."""
        contents = []
        for what, path in (("CA", self.ca), ("certificate", self.cert), ("key", self.key)):
            try:
                private = what == "key"
                contents.append(read_private(path, "the TLS key") if private else path.read_bytes())
            except OSError as error:
                raise InvalidArgument(
                    f"cannot read the TLS {what} {path}: {error.strerror}; "
                    "create one with `fleet certs init` / `fleet certs issue`"
                ) from None
        ca, cert, key = contents
        check_key(self, cert, key)
        return ca, cert, key

    @classmethod
    def in_dir(cls, directory: Path, kind: str, name: str, origin: str = "") -> TlsFiles:
        """The files ``fleet certs issue KIND NAME --dir DIRECTORY`` writes."""
        return cls(
            directory / "ca.crt",
            directory / f"{kind}-{name}.crt",
            directory / f"{kind}-{name}.key",
            origin,
        )


@dataclass(frozen=True)
class Transport:
    """Either mutual TLS with ``tls``, or plaintext (``tls is None``, explicitly asked);
    or, with ``token``, TLS checked against ``token_ca`` and a bearer token."""

    tls: TlsFiles | None
    token: str | None = None
    token_ca: Path | None = None

    @property
    def insecure(self) -> bool:
        return self.tls is None and self.token is None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        if self.tls is None:
            return None
        ca, cert, key = self.tls.read()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if self.token is not None:
            ca = self.token_ca.read_bytes() if self.token_ca else None
            return grpc.composite_channel_credentials(
                grpc.ssl_channel_credentials(root_certificates=ca),
                grpc.access_token_call_credentials(self.token),
            )
        if self.tls is None:
            return None
        ca, cert, key = self.tls.read()
        # A certificate no server can accept now is named here, not in a failed handshake.
        check_certificate(self.tls, cert, datetime.now(UTC))
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )

    def aio_channel(self, target: str, options: ChannelOptions = ()) -> grpc.aio.Channel:
        credentials = self.channel_credentials()
        merged = _channel_options(options)
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=merged)
        return grpc.aio.secure_channel(target, credentials, options=merged)

    def channel(self, target: str, options: ChannelOptions = ()) -> grpc.Channel:
        credentials = self.channel_credentials()
        merged = _channel_options(options)
        if credentials is None:
            return grpc.insecure_channel(target, options=merged)
        return grpc.secure_channel(target, credentials, options=merged)

    def add_token_port(self, server: grpc.aio.Server, address: str) -> int:
        """A TLS port that asks no client certificate: callers present bearer tokens,
        or join tokens. Its chain ends with the CA, which a joining agent pins by its
        fingerprint (it has no CA to check the server with yet)."""
        if self.tls is None:
            raise InvalidArgument("a token port needs TLS: give the server its certificate")
        ca, cert, key = self.tls.read()
        chain = cert if ca.strip() in cert else cert.rstrip(b"\n") + b"\n" + ca
        credentials = grpc.ssl_server_credentials([(key, chain)], require_client_auth=False)
        return _bind(address, lambda: server.add_secure_port(address, credentials))

    def add_port(self, server: grpc.Server | grpc.aio.Server, address: str) -> int:
        credentials = self.server_credentials()
        if credentials is None:
            log.warning(
                "INSECURE: %s serves plaintext gRPC without authentication; anyone who can "
                "reach it controls every host in the pool. Use TLS (fleet certs) outside tests.",
                address,
            )
            return _bind(address, lambda: server.add_insecure_port(address))
        return _bind(address, lambda: server.add_secure_port(address, credentials))


def listen_problem(address: str) -> str | None:
    """Why nothing can listen on ``address`` (HOST:PORT) now, found by binding a socket
    there for a moment ("another process is using it"); None if something can, or if
    the address is not HOST:PORT (a unix socket is left to the server's own bind)."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or "/" in host:
        return None
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError:
        return None
    for family, kind, proto, _, sockaddr in found:
        try:
            with socket.socket(family, kind, proto) as probe:
                # As servers bind: a port whose old connections linger is no conflict.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return "another process is using it"
            if error.errno != errno.EAFNOSUPPORT:  # no IPv6 here: not this address's fault
                return error.strerror or str(error)
    return None


def _bind(address: str, add_port: Callable[[], int]) -> int:
    """``add_port()``'s port, or FailedPrecondition saying why ``address`` cannot be
    listened on. Checked first, because gRPC's own error says only that binding failed
    (and logs a line of its own)."""
    problem = listen_problem(address)
    if problem is None:
        try:
            port = int(add_port())
        except RuntimeError:
            port = 0
        if port:
            return port
        problem = (
            listen_problem(address) or "gRPC could not bind it (GRPC_VERBOSITY=debug says why)"
        )
    raise FailedPrecondition(f"cannot listen on {address}: {problem}")


def _env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def client_transport(
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    insecure: bool = False,
    kind: str = "client",
    name: str = "admin",
    token: str | None = None,
) -> Transport:
    """The transport from flags, else ``FLEET_TLS_CA/CERT/KEY``, else the default PKI dirs;
    for a client, ``token`` or ``FLEET_TOKEN`` first.

    Flags and variables must name all three files; with none, the first of
    ``$FLEET_PKI_DIR`` and ``default_pki_dirs()`` holding ``<kind>-<name>.crt`` is used.
    """
    if insecure:
        return Transport(None)
    if kind == "client":  # a daemon's own credentials are certificates, never the CLI's token
        token = token or os.environ.get("FLEET_TOKEN") or None
    if token is not None:  # for the server's token port: TLS, and the token instead of a cert
        return Transport(None, token=token, token_ca=ca or _env("FLEET_TLS_CA"))
    flags = (ca, cert, key)
    given = (
        ca or _env("FLEET_TLS_CA"),
        cert or _env("FLEET_TLS_CERT"),
        key or _env("FLEET_TLS_KEY"),
    )
    if any(given):
        if not all(given):
            raise InvalidArgument(
                "TLS needs all three of --tls-ca, --tls-cert and --tls-key "
                "(or FLEET_TLS_CA, FLEET_TLS_CERT and FLEET_TLS_KEY)"
            )
        origin = "--tls-ca/--tls-cert/--tls-key"
        if not any(flags):
            origin = "FLEET_TLS_CA/FLEET_TLS_CERT/FLEET_TLS_KEY"
        elif not all(flags):
            origin = "--tls-* and FLEET_TLS_*"
        return Transport(TlsFiles(given[0], given[1], given[2], origin))  # type: ignore[arg-type]
    pki_dir = _env("FLEET_PKI_DIR")
    defaults = default_pki_dirs()
    dirs = [d for d in [pki_dir, *defaults] if d is not None]
    for directory in dirs:
        origin = "FLEET_PKI_DIR" if directory == pki_dir else "the default PKI directory"
        files = TlsFiles.in_dir(directory, kind, name, origin)
        if files.cert.exists():
            return Transport(files)
    raise InvalidArgument(
        "no TLS credentials found: pass --tls-ca/--tls-cert/--tls-key (or set FLEET_TLS_*), "
        f"or put {kind}-{name}.crt in $FLEET_PKI_DIR or {defaults[0]}, or use a context "
        "(fleet context add); "
        "--insecure talks plaintext to a server started with --insecure"
    )
