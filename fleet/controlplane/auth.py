"""Who is calling, and may they: identities from peer certificates, roles to permissions.

The control plane runs mutual TLS, so every call carries a certificate from fleet's CA;
its subject says the kind (server, agent, client), the name and, for people and CI,
the role (see ``fleet.pki``). Nothing a caller sends in a message decides who it is.

    role        may
    admin       everything (the only role that sets secrets and the container policy,
                manages tokens and execs into containers)
    deployer    read apps and hosts; apply, scale and delete apps; logs; list secret names
    viewer      read apps and hosts
    (agent)     only its own stream, as the host its certificate names
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

import grpc
import grpc.aio

from fleet.controlplane._handlers import check_well_formed
from fleet.errors import FleetError, PermissionDenied, details, grpc_code_for
from fleet.pki import Identity, Kind, Role, identity_from_auth_context

__all__ = ["ANONYMOUS_ADMIN", "Permission", "caller", "check", "rpc"]

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
    EXEC = "run commands in containers"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "deployer": frozenset(
        {
            Permission.APPS_READ,
            Permission.APPS_WRITE,
            Permission.HOSTS_READ,
            Permission.SECRETS_READ,
            Permission.LOGS,
        }
    ),
    "viewer": frozenset({Permission.APPS_READ, Permission.HOSTS_READ}),
}

# Who every caller is on a server started with --insecure (and logged as such).
ANONYMOUS_ADMIN = Identity(kind=Kind.client, name="anonymous", role=Role.admin)


# Looks a presented bearer token up: the identity it stands for, or None.
TokenLookup = Callable[[str], Identity | None]


def caller(
    context: grpc.aio.ServicerContext, *, insecure: bool, tokens: TokenLookup | None = None
) -> Identity:
    """The identity in the peer's certificate (verified by TLS against fleet's CA), or,
    on the token port where there is none, the one the bearer token stands for."""
    if insecure:
        return ANONYMOUS_ADMIN
    auth = context.auth_context()
    if not auth.get("x509_pem_cert") and tokens is not None:
        metadata = dict(context.invocation_metadata() or ())
        bearer = str(metadata.get("authorization", ""))
        if bearer.startswith("Bearer "):
            identity = tokens(bearer.removeprefix("Bearer ").strip())
            if identity is None:
                raise PermissionDenied("unknown or revoked token")
            return identity
    return identity_from_auth_context(auth)


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


def rpc(permission: Permission) -> Callable[[Handler[R]], Handler[R]]:
    """Decorate a servicer method: authorise the caller, then map fleet errors to statuses."""

    def decorate(method: Handler[R]) -> Handler[R]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
            try:
                identity = caller(
                    context, insecure=self.insecure, tokens=getattr(self, "token_identity", None)
                )
                check(identity, permission)
                check_well_formed(request)
                return await method(self, request, context)
            except PermissionDenied as error:
                log.warning("refused %s: %s", context.peer(), error)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, details(error))
                raise
            except FleetError as error:
                # Marks the answer as fleet's own: a client tells "this server is up but
                # etcd is not" from "this server cannot be reached".
                await context.abort(
                    grpc_code_for(error), details(error), trailing_metadata=(("fleet-error", "1"),)
                )
                raise  # abort raises; this line only satisfies the type checker

        return wrapper

    return decorate
