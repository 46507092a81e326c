"""How fleet's parts reach each other: mutual TLS by default, plaintext only on request.

Every gRPC connection (CLI -> control plane, agent -> control plane) is mutual TLS
with certificates from fleet's CA (``fleet certs``); the server reads who is calling
from the peer certificate. ``--insecure`` must be asked for explicitly and is logged
loudly, because whoever reaches a control plane owns every host in the pool.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from fleet.errors import InvalidArgument

__all__ = [
    "DEFAULT_PKI_DIRS",
    "MAX_MESSAGE_BYTES",
    "TlsFiles",
    "Transport",
    "client_transport",
]

log = logging.getLogger(__name__)

# Where the CLI looks for its credentials when no flag or variable names them: the
# PKI `fleet up` makes in its default data dir, then the user's own.
DEFAULT_PKI_DIRS = (Path(".fleet/pki"), Path.home() / ".fleet" / "pki")

ChannelOptions = Sequence[tuple[str, Any]]

# The largest gRPC message fleet sends or accepts on a channel (gRPC's default is 4 MiB):
# `fleet get containers` lists about 250 bytes a replica, past 4 MiB at ~15,000 replicas.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _channel_options(options: ChannelOptions) -> list[tuple[str, Any]]:
    """``options`` over fleet's message limits (an option given wins over the default)."""
    merged: dict[str, Any] = {
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    }
    merged.update(options)
    return list(merged.items())


@dataclass(frozen=True)
class TlsFiles:
    """A CA bundle and one certificate with its key, as PEM files."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) bytes, or InvalidArgument naming the file that is missing."""
        contents = []
        for what, path in (("CA", self.ca), ("certificate", self.cert), ("key", self.key)):
            try:
                contents.append(path.read_bytes())
            except OSError as error:
                raise InvalidArgument(
                    f"cannot read the TLS {what} {path}: {error.strerror}; "
                    "create one with `fleet certs init` / `fleet certs issue`"
                ) from None
        return contents[0], contents[1], contents[2]

    @classmethod
    def in_dir(cls, directory: Path, kind: str, name: str) -> TlsFiles:
        """The files ``fleet certs issue KIND NAME --dir DIRECTORY`` writes."""
        return cls(
            directory / "ca.crt", directory / f"{kind}-{name}.crt", directory / f"{kind}-{name}.key"
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
        """A TLS port that asks no client certificate: callers present bearer tokens."""
        if self.tls is None:
            raise InvalidArgument("a token port needs TLS: give the server its certificate")
        _, cert, key = self.tls.read()
        credentials = grpc.ssl_server_credentials([(key, cert)], require_client_auth=False)
        return int(server.add_secure_port(address, credentials))

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        credentials = self.server_credentials()
        if credentials is None:
            log.warning(
                "INSECURE: %s serves plaintext gRPC without authentication; anyone who can "
                "reach it controls every host in the pool. Use TLS (fleet certs) outside tests.",
                address,
            )
            return int(server.add_insecure_port(address))
        return int(server.add_secure_port(address, credentials))


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
    """The transport from flags, else ``FLEET_TLS_CA/CERT/KEY``, else the default PKI dirs.

    Flags and variables must name all three files; with none, the first of
    ``$FLEET_PKI_DIR`` and ``DEFAULT_PKI_DIRS`` holding ``<kind>-<name>.crt`` is used.
    """
    if insecure:
        return Transport(None)
    token = token or os.environ.get("FLEET_TOKEN") or None
    if token is not None:  # for the server's token port: TLS, and the token instead of a cert
        return Transport(None, token=token, token_ca=ca or _env("FLEET_TLS_CA"))
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
        return Transport(TlsFiles(given[0], given[1], given[2]))  # type: ignore[arg-type]
    dirs = [d for d in [_env("FLEET_PKI_DIR"), *DEFAULT_PKI_DIRS] if d is not None]
    for directory in dirs:
        files = TlsFiles.in_dir(directory, kind, name)
        if files.cert.exists():
            return Transport(files)
    raise InvalidArgument(
        "no TLS credentials found: pass --tls-ca/--tls-cert/--tls-key (or set FLEET_TLS_*), "
        f"or put {kind}-{name}.crt in $FLEET_PKI_DIR or {DEFAULT_PKI_DIRS[0]}; "
        "--insecure talks plaintext to a server started with --insecure"
    )
