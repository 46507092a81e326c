"""The FleetLock port (``fleet server --fleetlock-listen``): a small asyncio HTTP/1.1
server in the control plane's process, one request a connection, answering from
``fleetlock``'s pure decisions and writing what they return as one compare-and-swap.

HTTPS with the server's certificate when the server has TLS; an agent certificate of
fleet's CA (optional in the handshake) or a group's token (``--fleetlock-tokens``)
authenticates a request. Without either, only ``--fleetlock-insecure`` lets anyone in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fleet.controlplane import fleetlock
from fleet.controlplane.fleetlock import Answer, Credentials, LockRequest, Refused
from fleet.errors import Conflict, FleetError, InvalidArgument
from fleet.pki.subjects import Kind, identity_from_pem
from fleet.store import ClusterState, Store

__all__ = ["FleetLockConfig", "FleetLockPort"]

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
READ_SECONDS = 10.0  # to send the request once connected (and handshaken)
MAX_CONNECTIONS = 64

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    503: "Service Unavailable",
}


@dataclass
class FleetLockConfig:
    """Where and how FleetLock is served."""

    listen: str
    group_label: str = ""  # the host label that names its group ("" : all "default")
    tokens: dict[str, str] = field(default_factory=dict)  # group -> SHA-256 of its token
    insecure: bool = False  # anyone may ask, unauthenticated (asked for explicitly)


class FleetLockPort:
    """FleetLock on ``config.listen`` over ``tls`` (None: plain HTTP), reading the
    informer's ``state`` and writing through ``store``; ``caught_up(revision)`` returns
    once the informer has seen a write."""

    def __init__(
        self,
        config: FleetLockConfig,
        tls: ssl.SSLContext | None,
        state: Callable[[], Awaitable[ClusterState]],
        store: Store,
        caught_up: Callable[[int], Awaitable[None]],
    ) -> None:
        self.config, self._tls = config, tls
        self._state, self._store, self._caught_up = state, store, caught_up
        self._server: asyncio.Server | None = None
        self._open = 0
        self.port = 0

    async def serve(self) -> int:
        host, _, port = self.config.listen.rpartition(":")
        if self._tls is None and not self.config.tokens and not self.config.insecure:
            log.warning(
                "FleetLock on %s: plain HTTP (this server has no TLS) and no token file "
                "(--fleetlock-tokens), so anyone who reaches it may ask",
                self.config.listen,
            )
        if self.config.insecure:
            log.warning(
                "INSECURE: FleetLock on %s answers anyone (--fleetlock-insecure): any caller "
                "can drain hosts",
                self.config.listen,
            )
        self._server = await asyncio.start_server(
            self._connection,
            host.strip("[]") or None,
            int(port),
            ssl=self._tls,
            ssl_handshake_timeout=READ_SECONDS if self._tls else None,
            reuse_address=True,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("FleetLock serving on %s (port %d)", self.config.listen, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        where = peer[0] if peer else "?"
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                return
            status, body = await asyncio.wait_for(self._exchange(reader, writer), READ_SECONDS * 3)
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as error:
            log.debug("FleetLock connection from %s ended: %r", where, error)
        except Exception:  # a bug must cost one answer, never the port
            log.exception("FleetLock: a request from %s failed", where)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
                await writer.wait_closed()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, bytes]:
        """Read one request and answer it: (status, JSON body)."""
        try:
            request, credentials = await self._read(reader, writer)
            answer = await self.answer(request, credentials)
        except Refused as refused:
            log.info("FleetLock refused (%s): %s", refused.kind, refused.value)
            return refused.status, _error(refused.kind, refused.value)
        if answer.status != 200:
            return answer.status, _error(answer.kind, answer.value)
        return 200, json.dumps({"value": answer.value}).encode()

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[LockRequest, Credentials]:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_SECONDS)
        except asyncio.LimitOverrunError:
            raise Refused(400, "bad_request", "the request's head is too long") from None
        if len(raw) > MAX_HEAD:
            raise Refused(400, "bad_request", "the request's head is too long")
        try:
            lines = raw.decode("latin-1").split("\r\n")
            method, path, version = lines[0].split(" ")
        except ValueError:
            raise Refused(400, "bad_request", "not an HTTP/1.1 request line") from None
        if not version.startswith("HTTP/1."):
            raise Refused(400, "bad_request", "HTTP/1.x only")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name.strip() or name != name.strip():
                raise Refused(400, "bad_request", "a malformed header line")
            headers[name.lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise Refused(411, "bad_request", "send the body with a Content-Length")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise Refused(400, "bad_request", "a malformed Content-Length") from None
        if not 0 <= length <= fleetlock.MAX_BODY:
            raise Refused(413, "bad_request", f"a body is at most {fleetlock.MAX_BODY} bytes")
        body = await asyncio.wait_for(reader.readexactly(length), READ_SECONDS)
        request = fleetlock.parse_request(method, path, headers, body)
        return request, Credentials(
            cert_host=_cert_host(writer), authorization=headers.get("authorization")
        )

    async def answer(self, request: LockRequest, credentials: Credentials) -> Answer:
        """Authenticate, find the host, decide, and write what the decision says (a lost
        compare-and-swap answers "not yet": Zincati asks again)."""
        only = fleetlock.authorize(
            credentials,
            request.group,
            self.config.tokens,
            open_to_all=self.config.insecure or (self._tls is None and not self.config.tokens),
        )
        state = await self._state()
        host_id = fleetlock.find_host(state, request.id)
        if only is not None and only != host_id:
            raise Refused(
                403, "forbidden", f"the agent certificate of {only} may not ask for {host_id}"
            )
        group = fleetlock.host_group(state, host_id, self.config.group_label)
        if group != request.group:
            raise Refused(
                403,
                "wrong_group",
                f"host {host_id} is in group {group!r}, not {request.group!r}: set Zincati's "
                f"[identity] group = {group!r}",
            )
        if request.operation == "pre-reboot":
            answer = fleetlock.pre_reboot(state, host_id, group, time.time())
        else:
            answer = fleetlock.steady_state(state, host_id)
        if answer.host is None or answer.maintenance is None:
            return answer
        stored, semaphore = state.hosts[host_id], state.maintenance
        try:
            revision = await self._store.write_host_maintenance(
                answer.host,
                answer.maintenance,
                host_mod_revision=stored.mod_revision,
                maintenance_mod_revision=semaphore.mod_revision if semaphore else 0,
            )
        except Conflict:
            return Answer(409, "conflict", "the semaphore changed meanwhile: ask again")
        except FleetError as error:
            return Answer(503, "unavailable", f"could not write the lock: {error}")
        log.warning("FleetLock %s for host %s: %s", request.operation, host_id, answer.value)
        with contextlib.suppress(FleetError):  # stored: the next request reads it
            await self._caught_up(revision)
        return answer


def _cert_host(writer: asyncio.StreamWriter) -> str | None:
    """The host an agent certificate the handshake verified names (None: no certificate,
    or one of another kind, which counts as none)."""
    secured = writer.get_extra_info("ssl_object")
    if secured is None:
        return None
    der = secured.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        identity = identity_from_pem(ssl.DER_cert_to_PEM_cert(der).encode())
    except InvalidArgument:
        return None
    if identity.kind != Kind.agent:
        raise Refused(403, "forbidden", "only an agent certificate (or a group token) may ask")
    return identity.name


def _error(kind: str, value: str) -> bytes:
    return json.dumps({"kind": kind, "value": value}).encode()
