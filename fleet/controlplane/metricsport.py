"""The /metrics port, as Prometheus scrapes it (and ``/v1/sd/http``, its HTTP service
discovery of the apps' endpoints, ``servicediscovery``): HTTPS with the server's certificate, and
a caller that shows a client certificate of fleet's CA or a bearer token of fleet's own
(``fleet tokens create prom --role viewer``), whose role may read metrics.

What the port shows (the apps, their replica counts, the hosts by state) is the pool's
inventory, so it answers no one else: a request without credentials gets 401, a
certificate or token whose role may not gets 403, and a plain HTTP request a 400 that
says to use HTTPS. ``--metrics-insecure`` serves plain HTTP to anyone instead, when
asked for explicitly (and logged loudly), as ``--insecure`` does for gRPC.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import MetricsHandler
from prometheus_client.registry import Collector

from fleet.controlplane.auth import Permission, TokenLookup, bearer, check
from fleet.errors import InvalidArgument, PermissionDenied
from fleet.pki.subjects import identity_from_pem
from fleet.transport import TlsFiles

__all__ = [
    "SD_PATH",
    "Discovery",
    "MetricsPort",
    "ScrapeVerdict",
    "judge_scrape",
    "metrics_tls_context",
]

log = logging.getLogger(__name__)

# What a 401 says, and how to get what it asks for.
NO_CREDENTIALS = (
    "this port asks for a client certificate of fleet's CA (Prometheus tls_config "
    "cert_file/key_file) or a bearer token (fleet tokens create NAME --role viewer)"
)
UNKNOWN_TOKEN = "unknown or revoked token"
PLAIN_HTTP = "this port speaks HTTPS (a plain HTTP request came): scrape it with scheme: https"

# Connections served at once; more are closed at once. Each holds a thread until its
# handshake and request are done (or HANDSHAKE_SECONDS pass): a peer that opens many
# and sends nothing costs at most this many threads.
MAX_CONNECTIONS = 64
HANDSHAKE_SECONDS = 10.0


@dataclass(frozen=True)
class ScrapeVerdict:
    """What the port answers a scrape: 200 (with the metrics), 401 or 403 (with why)."""

    status: int
    reason: str = ""
    who: str = ""


def judge_scrape(
    peer_certificate: bytes | None, authorization: str | None, tokens: TokenLookup
) -> ScrapeVerdict:
    """Who a scrape is from and whether they may read metrics: the client certificate
    the TLS handshake verified (DER), else the bearer token of its Authorization header."""
    try:
        if peer_certificate:
            identity = identity_from_pem(ssl.DER_cert_to_PEM_cert(peer_certificate).encode())
        else:
            token = bearer(authorization)
            if token is None:
                return ScrapeVerdict(401, NO_CREDENTIALS)
            found = tokens(token)
            if found is None:
                return ScrapeVerdict(401, UNKNOWN_TOKEN)
            identity = found
        check(identity, Permission.METRICS)
    except PermissionDenied as refused:
        return ScrapeVerdict(403, str(refused))
    except InvalidArgument as unreadable:  # of fleet's CA, but it names no identity
        return ScrapeVerdict(403, f"peer certificate: {unreadable}")
    return ScrapeVerdict(200, who=f"{identity.role or identity.kind} {identity.name!r}")


def metrics_tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """The port's TLS: the server's certificate, client certificates checked against
    fleet's CA alone (never the system's CAs) and optional, since a token may stand in."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert, tls.key)
    context.load_verify_locations(cafile=tls.ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


# Prometheus' http_sd_configs: GET, JSON target groups (``servicediscovery``).
SD_PATH = "/v1/sd/http"

Discovery = Callable[[str], list[dict[str, Any]]]  # app ("" for all) -> target groups


class _Handler(MetricsHandler):
    """prometheus_client's handler, behind ``judge_scrape`` when the port is HTTPS; and
    the service discovery at SD_PATH, behind the same."""

    server: _Server
    timeout = HANDSHAKE_SECONDS  # to read the request, once the handshake is done
    server_version, sys_version = "fleet", ""  # not Python's version, to anyone who asks

    def do_GET(self) -> None:
        if self.server.tls is not None:
            assert isinstance(self.connection, ssl.SSLSocket)
            verdict = judge_scrape(
                self.connection.getpeercert(binary_form=True),
                self.headers.get("Authorization"),
                self.server.tokens,
            )
            if verdict.status != 200:
                path = urlsplit(self.path).path
                log.warning("refused %s to %s: %s", path, self.client_address[0], verdict.reason)
                self._refuse(verdict)
                return
        url = urlsplit(self.path)
        if url.path == SD_PATH and self.server.discovery is not None:
            self._discover(parse_qs(url.query).get("app", [""])[0])
            return
        super().do_GET()

    def _discover(self, app: str) -> None:
        """The target groups as Prometheus' http_sd asks: a JSON list, UTF-8; a
        failure is a 500 (Prometheus keeps the targets it had)."""
        assert self.server.discovery is not None
        try:
            body = json.dumps(self.server.discovery(app)).encode()
            status, kind = 200, "application/json"
        except Exception:  # a bug must not kill the port's thread unanswered
            log.exception("service discovery: the targets could not be computed")
            body, status, kind = b"service discovery failed\n", 500, "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, verdict: ScrapeVerdict) -> None:
        body = f"{verdict.reason}\n".encode()
        self.send_response(verdict.status)
        if verdict.status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="fleet"')
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    """One thread a connection, at most MAX_CONNECTIONS at once; the TLS handshake runs
    in the connection's thread, so a slow peer does not hold up the others."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        handler: type[_Handler],
        tls: ssl.SSLContext | None,
        tokens: TokenLookup,
        discovery: Discovery | None,
    ) -> None:
        self.address_family = family
        self.tls, self.tokens, self.discovery = tls, tokens, discovery
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_SECONDS)
        try:
            # A TLS connection starts with a handshake record (0x16); anything else is
            # most likely plain HTTP, answered as such (as Go's servers do). A peer that
            # only connects (a port probe) is let go without a word.
            first = request.recv(1, socket.MSG_PEEK)
            if not first:
                return
            if first != b"\x16":
                log.warning("refused /metrics to %s: plain HTTP", client_address[0])
                request.recv(64 * 1024)  # the request, read: closing on it unread resets
                request.sendall(_plain_http_refusal())
                return
            secured = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            log.warning("refused /metrics to %s: %s", client_address[0], _why(error))
            return
        try:
            super().finish_request(secured, client_address)
            # The answer ends where the connection does: say so (close_notify), so a
            # client does not take the end for a cut.
            secured.settimeout(1.0)
            secured.unwrap()
        except (OSError, ValueError):
            pass  # the peer left first
        finally:
            secured.close()


def _plain_http_refusal() -> bytes:
    body = f"{PLAIN_HTTP}\n".encode()
    head = (
        "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _why(error: Exception) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: its certificate: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({error.reason or error})"
    return f"connection failed ({error})"


class MetricsPort:
    """/metrics of ``registry`` on its own port, in threads of its own: HTTPS with
    ``tls`` and scrapers judged by ``judge_scrape``, or, with ``tls`` None, plain HTTP
    that answers anyone."""

    def __init__(
        self,
        registry: Collector,
        tls: ssl.SSLContext | None,
        tokens: TokenLookup,
        discovery: Discovery | None = None,
    ) -> None:
        self._handler: type[_Handler] = type("MetricsHandler", (_Handler,), {"registry": registry})
        self._discovery = discovery
        self._tls, self._tokens = tls, tokens
        self._server: _Server | None = None
        self.port = 0

    def serve(self, address: str) -> int:
        """Listen on ``address`` (HOST:PORT; an empty host is every address) and serve
        until ``stop``; the port."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        if self._tls is None:
            log.warning(
                "INSECURE: %s serves /metrics over plain HTTP to anyone who reaches it "
                "(--metrics-insecure): the apps, their replicas and the hosts of the pool",
                address,
            )
        bind = (str(sockaddr[0]), int(sockaddr[1]))
        self._server = _Server(
            bind, family, self._handler, self._tls, self._tokens, self._discovery
        )
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
        self.port = int(self._server.server_address[1])
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
