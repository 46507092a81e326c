"""Administration: secrets (sealed with the server's key), the container policy and
API tokens. What a scope means is ``fleet.secrets``'; a policy, ``fleet.policy``'; a
token, ``auth``'."""

from __future__ import annotations

import grpc.aio

from fleet._time import now_iso
from fleet.controlplane.api._service import ServiceBase
from fleet.controlplane.auth import Permission, new_token, rpc
from fleet.errors import FailedPrecondition, InvalidArgument, NotFound
from fleet.policy import Policy
from fleet.proto import fleet_pb2 as pb
from fleet.registries import is_registry_secret
from fleet.secrets import scope_from
from fleet.store import ClusterState, check_name
from fleet.store.records import SecretRecord, SecretScope

__all__ = ["AdminApi"]


def _users(state: ClusterState, secret: str) -> list[str]:
    return sorted(n for n, a in state.apps.items() if secret in a.value.spec.secret_names())


def _secret_info(record: SecretRecord, used_by: list[str]) -> pb.SecretInfo:
    scope = record.scope
    return pb.SecretInfo(
        name=record.name,
        version=record.version,
        created_at=record.created_at,
        updated_at=record.updated_at,
        used_by=used_by,
        # One stored before scopes is used by every app, and says so.
        scope=pb.SecretScope(apps=scope.apps, all_apps=scope.all_apps)
        if scope is not None
        else pb.SecretScope(all_apps=True),
        unscoped=scope is None,
    )


def _secret_not_found(name: str) -> NotFound:
    return NotFound(f"secret {name!r} not found (see `fleet secrets list`)")


def _not_a_login(name: str) -> str:
    """``name``, refused if it is reserved for a registry's credentials, which only
    ``fleet registry login`` / ``logout`` change (fleet.registries)."""
    if is_registry_secret(name):
        raise InvalidArgument(
            f"secret name {name!r} is reserved for a registry's credentials: use "
            "`fleet registry login` / `logout` for those, or another name"
        )
    return name


class AdminApi(ServiceBase):
    # ------------------------------------------------------------------ secrets

    @rpc(Permission.SECRETS_WRITE)
    async def SetSecret(
        self, request: pb.SetSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretInfo:
        name = _not_a_login(check_name(request.name, "secret name"))
        if self._secrets is None:
            raise FailedPrecondition(
                "this control plane has no secrets key; start it with --secrets-key-file"
            )
        state = await self._state()
        stored = state.secrets.get(name)
        # A new secret names who may use it; a new value keeps the scope unless given.
        scope: SecretScope | None
        if request.HasField("scope"):
            scope = scope_from(request.scope.apps, request.scope.all_apps)
        elif stored is None:
            raise InvalidArgument(
                f"secret {name!r} is new: say which apps may use it, with "
                f"`fleet secrets set {name} --apps APP[,APP...]` (or --all-apps)"
            )
        else:
            scope = stored.value.scope
        record = self._sealed(name, request.value, stored, scope)
        revision = await self._store.write_secret(
            record, expected_mod_revision=stored.mod_revision if stored else 0
        )
        await self._caught_up(revision)
        return _secret_info(record, _users(self._informer.state(), name))

    @rpc(Permission.SECRETS_WRITE)
    async def SetSecretScope(
        self, request: pb.SetSecretScopeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretInfo:
        """Replace which apps may use a secret, keeping its value. Apps outside the new
        scope keep what runs; their new containers are held (``fleet.secrets``)."""
        name = _not_a_login(check_name(request.name, "secret name"))
        scope = scope_from(request.scope.apps, request.scope.all_apps)
        state = await self._state()
        stored = state.secrets.get(name)
        if stored is None:
            raise _secret_not_found(name)
        record = stored.value.model_copy(update={"scope": scope, "updated_at": now_iso()})
        await self._caught_up(
            await self._store.write_secret(record, expected_mod_revision=stored.mod_revision)
        )
        return _secret_info(record, _users(self._informer.state(), name))

    @rpc(Permission.SECRETS_READ)
    async def ListSecrets(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.SecretList:
        state = await self._state()
        return pb.SecretList(
            secrets=[
                _secret_info(record.value, _users(state, name))
                for name, record in sorted(state.secrets.items())
                if (not request.name or name == request.name) and not record.value.registry
            ]
        )

    @rpc(Permission.SECRETS_WRITE)
    async def DeleteSecret(
        self, request: pb.DeleteSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSecretResponse:
        name = _not_a_login(check_name(request.name, "secret name"))
        state = await self._state()
        stored = state.secrets.get(name)
        if stored is None:
            raise _secret_not_found(name)
        users = _users(state, name)
        if users:
            raise FailedPrecondition(
                f"secret {name!r} is used by app {', '.join(users)}; change those apps first"
            )
        await self._caught_up(
            await self._store.delete_secret(name, expected_mod_revision=stored.mod_revision)
        )
        return pb.DeleteSecretResponse()

    # ------------------------------------------------------------------ policy

    @rpc(Permission.APPS_READ)
    async def GetPolicy(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.Policy:
        return (await self._state()).current_policy.to_proto()

    @rpc(Permission.POLICY_WRITE)
    async def SetPolicy(self, request: pb.Policy, context: grpc.aio.ServicerContext) -> pb.Policy:
        policy = Policy.from_proto(request)
        for prefix in policy.allow_bind_mounts:
            if not prefix.startswith("/") or ".." in prefix.split("/") or "\0" in prefix:
                raise InvalidArgument(f"bind mount prefix {prefix!r} must be an absolute path")
        for prefix in policy.allow_devices:
            if not prefix.startswith("/dev/") or ".." in prefix.split("/") or "\0" in prefix:
                raise InvalidArgument(
                    f"device prefix {prefix!r} must be an absolute path under /dev, like /dev/fuse"
                )
        state = await self._state()
        stored = state.policy
        await self._caught_up(
            await self._store.write_policy(
                policy, expected_mod_revision=stored.mod_revision if stored else 0
            )
        )
        return policy.to_proto()

    # ------------------------------------------------------------------ tokens

    @rpc(Permission.TOKENS)
    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        name = check_name(request.name, "token name")
        record, token = new_token(name, request.role, now_iso())
        await self._caught_up(await self._store.write_token(record))
        return pb.CreateTokenResponse(id=record.id, token=token)

    @rpc(Permission.TOKENS)
    async def ListTokens(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.TokenList:
        state = await self._state()
        return pb.TokenList(
            tokens=[
                pb.TokenInfo(
                    id=t.value.id,
                    name=t.value.name,
                    role=t.value.role,
                    created_at=t.value.created_at,
                )
                for _, t in sorted(state.tokens.items())
            ]
        )

    @rpc(Permission.TOKENS)
    async def DeleteToken(
        self, request: pb.DeleteTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTokenResponse:
        token_id = check_name(request.id, "token id")
        stored = (await self._state()).tokens.get(token_id)
        if stored is None:
            raise NotFound(f"token {token_id!r} not found (see `fleet tokens list`)")
        await self._caught_up(
            await self._store.delete_token(token_id, expected_mod_revision=stored.mod_revision)
        )
        return pb.DeleteTokenResponse()
