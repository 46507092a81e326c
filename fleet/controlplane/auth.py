"""Who is calling, and may they: identities from peer certificates, roles to permissions.

The control plane runs mutual TLS, so every call carries a certificate from fleet's CA;
its subject says the kind (server, agent, client), the name and, for people and CI,
the role (see ``fleet.pki``). Nothing a caller sends in a message decides who it is.

    role        may
    admin       everything (the only role that sets secrets and the container policy,
                manages tokens and execs into containers)
    deployer    read apps and hosts; apply, scale, delete, pause and kill apps; logs and
                top (process lists: command lines may hold secrets); list secret names;
                /metrics
    viewer      read apps and hosts; /metrics
    (agent)     only its own stream, as the host its certificate names

On the token port a caller has no certificate: a bearer token ``fleet_<id>_<secret>``
stands for a name and a role. Only the secret's hash is stored (``TokenRecord``);
``new_token`` makes one and ``token_identity`` checks one.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any, TypeVar, cast

import grpc
import grpc.aio

from fleet.controlplane._handlers import check_well_formed, refuse
from fleet.errors import (
    FleetError,
    InvalidArgument,
    PermissionDenied,
    details,
    grpc_code_for,
    problems_trailer,
)
from fleet.pki.subjects import Identity, Kind, Role, identity_from_auth_context
from fleet.store import Versioned
from fleet.store.records import TokenRecord

__all__ = [
    "ANONYMOUS_ADMIN",
    "LocalCall",
    "Permission",
    "TokenGate",
    "TokenLookup",
    "bearer",
    "caller",
    "check",
    "new_token",
    "rpc",
    "token_identity",
]

log = logging.getLogger(__name__)


class Permission(StrEnum):
    APPS_READ = "read apps"
    APPS_WRITE = "change apps"
    HOSTS_READ = "read hosts"
    HOSTS_WRITE = "change hosts"
    SECRETS_READ = "list secrets"
    SECRETS_WRITE = "change secrets"
    POLICY_WRITE = "change the container policy"
    TOKENS = "manage API tokens"
    LOGS = "read container logs"
    PROCESSES = "list container processes"
    EXEC = "run commands in containers"
    METRICS = "read metrics"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "deployer": frozenset(
        {
            Permission.APPS_READ,
            Permission.APPS_WRITE,
            Permission.HOSTS_READ,
            Permission.SECRETS_READ,
            Permission.LOGS,
            Permission.PROCESSES,
            Permission.METRICS,
        }
    ),
    "viewer": frozenset({Permission.APPS_READ, Permission.HOSTS_READ, Permission.METRICS}),
}

# Who every caller is on a server started with --insecure (and logged as such).
ANONYMOUS_ADMIN = Identity(kind=Kind.client, name="anonymous", role=Role.admin)


# Looks a presented bearer token up: the identity it stands for, or None.
TokenLookup = Callable[[str], Identity | None]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def token_identity(tokens: Mapping[str, Versioned[TokenRecord]], token: str) -> Identity | None:
    """Who a bearer token ``fleet_<id>_<secret>`` stands for, if it is one of ``tokens``
    (by id) and its secret matches the stored hash; None otherwise."""
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != "fleet" or not token_id or not secret:
        return None
    stored = tokens.get(token_id)
    if stored is None:
        return None
    if not hmac.compare_digest(_digest(secret), stored.value.secret_sha256):
        return None
    return Identity(
        kind=Kind.client, name=f"token:{stored.value.name}", role=Role(stored.value.role)
    )


def new_token(name: str, role: str, now: str) -> tuple[TokenRecord, str]:
    """A new token for ``name`` with ``role`` (``now`` stamps it): the record to store,
    which holds only its secret's hash, and the token to show once."""
    if role not in ROLE_PERMISSIONS:
        raise InvalidArgument(f"role {role[:32]!r}: use admin, deployer or viewer")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32).replace("_", "-")
    record = TokenRecord(
        id=token_id, name=name, role=role, secret_sha256=_digest(secret), created_at=now
    )
    return record, f"fleet_{token_id}_{secret}"


class LocalCall:
    """A call made inside the control plane for an identity already established (the
    dashboard's signed-in session): it stands in for gRPC's servicer context, so the
    API's handlers serve it unchanged, their ``rpc`` check included, and the refusal
    they would send is kept here (``code``, ``details``) for the caller to read."""

    def __init__(self, identity: Identity, peer: str) -> None:
        self.identity = identity
        self._peer = peer
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata: object) -> None:
        pass  # the problems a spec had: the dashboard changes no specs


def caller(
    context: grpc.aio.ServicerContext, *, insecure: bool, tokens: TokenLookup | None = None
) -> Identity:
    """The identity in the peer's certificate (verified by TLS against fleet's CA), or,
    on the token port where there is none, the one the bearer token stands for; for a
    ``LocalCall``, the identity it was made for."""
    if isinstance(context, LocalCall):
        return context.identity
    if insecure:
        return ANONYMOUS_ADMIN
    auth = context.auth_context()
    if not auth.get("x509_pem_cert") and tokens is not None:
        token = _bearer(context.invocation_metadata())
        if token is not None:
            identity = tokens(token)
            if identity is None:
                raise PermissionDenied(_UNKNOWN_TOKEN)
            return identity
    return identity_from_auth_context(auth)


_NO_TOKEN = "this port takes a bearer token (--token or FLEET_TOKEN), not a certificate"
_UNKNOWN_TOKEN = "unknown or revoked token"


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an ``authorization: Bearer TOKEN`` header, if the call has one."""
    return bearer(str(dict(metadata or ()).get("authorization", "")))


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` value ``Bearer TOKEN`` (gRPC metadata or HTTP)."""
    value = authorization or ""
    return value.removeprefix("Bearer ").strip() if value.startswith("Bearer ") else None


def _refusal(message: str) -> grpc.RpcMethodHandler:
    """A handler that refuses a call without reading its request: given as a streaming
    handler (whatever the method is), gRPC leaves reading the request to it."""

    async def refuse_unread(requests: object, context: grpc.aio.ServicerContext) -> None:
        log.warning("refused %s: %s", context.peer(), message)
        refuse(context, grpc.StatusCode.PERMISSION_DENIED, message)

    return grpc.stream_stream_rpc_method_handler(refuse_unread)


class TokenGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """The token port's door: a call without a known bearer token is refused from its
    headers, before gRPC reads its request (up to 4 MiB), so a peer without a token
    costs the server no more than its headers. The servicer still checks the token
    again, with what its role may do (``rpc``)."""

    _no_token = _refusal(_NO_TOKEN)
    _unknown_token = _refusal(_UNKNOWN_TOKEN)

    def __init__(self, tokens: TokenLookup, open_methods: frozenset[str] | set[str] = frozenset()):
        self._tokens = tokens
        # Methods whose request is the credential (a join token): no bearer token asked.
        self._open = frozenset(open_methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method in self._open:
            return await continuation(handler_call_details)
        token = _bearer(handler_call_details.invocation_metadata)
        if token is None:
            return self._no_token
        if self._tokens(token) is None:
            return self._unknown_token
        return await continuation(handler_call_details)


def check(identity: Identity, permission: Permission) -> None:
    """PermissionDenied saying what was missing, unless ``identity`` may ``permission``."""
    if identity.kind != "client":
        raise PermissionDenied(
            f"{identity.kind} certificate {identity.name!r} may not {permission}: "
            "the API takes client certificates (fleet certs issue client NAME --role ROLE)"
        )
    allowed = ROLE_PERMISSIONS.get(identity.role or "", frozenset())
    if permission not in allowed:
        roles = sorted(r for r, perms in ROLE_PERMISSIONS.items() if permission in perms)
        raise PermissionDenied(
            f"{identity.role or 'no role'} {identity.name!r} may not {permission}; "
            f"that needs the role {' or '.join(roles)}"
        )


R = TypeVar("R")
Handler = Callable[..., Awaitable[R]]


def authorize(
    servicer: Any, context: grpc.aio.ServicerContext, permission: Permission, request: Any
) -> Identity:
    """The caller of a call to ``servicer``, by certificate or (on the token port) by
    token, if it may ``permission`` and its request decoded; else PermissionDenied or
    InvalidArgument, for ``answer`` to send."""
    identity = caller(
        context, insecure=servicer.insecure, tokens=getattr(servicer, "token_identity", None)
    )
    check(identity, permission)
    check_well_formed(request)
    return identity


def answer(context: grpc.aio.ServicerContext, error: FleetError) -> None:
    """End the call with ``error``'s status (with ``refuse``, not ``context.abort``); a
    refusal is logged with the peer's address, whatever the method."""
    if isinstance(error, PermissionDenied):
        log.warning("refused %s: %s", context.peer(), error)
        refuse(context, grpc.StatusCode.PERMISSION_DENIED, details(error), problems_trailer(error))
        return
    # Marks the answer as fleet's own: a client tells "this server is up but etcd is
    # not" from "this server cannot be reached". A spec's problems go one by one
    # (``problems_trailer``).
    trailers = (("fleet-error", "1"), *problems_trailer(error))
    refuse(context, grpc_code_for(error), details(error), trailers)


def rpc(permission: Permission) -> Callable[[Handler[R]], Handler[R]]:
    """Decorate a unary servicer method: ``authorize`` the caller, then map fleet errors
    to statuses (``answer``). Streaming methods call the two themselves."""

    def decorate(method: Handler[R]) -> Handler[R]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
            started = time.perf_counter()
            try:
                authorize(self, context, permission, request)
                return await method(self, request, context)
            except FleetError as error:
                answer(context, error)
            finally:
                # The handler's own time (its waits on etcd included), without the turns
                # of the event loop the call waited for before and after it.
                if (observe := getattr(self, "observe_call", None)) is not None:
                    observe(method.__name__, time.perf_counter() - started)
            return cast(R, None)  # not sent: the status is no longer OK

        return wrapper

    return decorate
