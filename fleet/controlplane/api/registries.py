"""Private registries and the pool's mirror (``fleet registry``): a login is a sealed
fleet secret of a reserved name (``fleet.registries``), a mirror one record in etcd.
Passwords go in, never out."""

from __future__ import annotations

import grpc.aio

from fleet._time import now_iso
from fleet.controlplane.api._service import ServiceBase
from fleet.controlplane.auth import Permission, rpc
from fleet.errors import FailedPrecondition, InvalidArgument, NotFound
from fleet.proto import fleet_pb2 as pb
from fleet.registries import check_mirror, check_registry, registry_of, secret_name
from fleet.secrets import MAX_SECRET_BYTES, scope_from
from fleet.store import ClusterState
from fleet.store.records import RegistryMirrorRecord, SecretRecord, SecretScope

__all__ = ["RegistriesApi"]


def _info(record: SecretRecord, state: ClusterState) -> pb.RegistryInfo:
    scope = record.scope or SecretScope(all_apps=True)
    users = sorted(
        name
        for name, app in state.apps.items()
        if registry_of(app.value.spec.image) == record.registry and record.allows(name)
    )
    return pb.RegistryInfo(
        registry=record.registry,
        username=record.username,
        secret=record.name,
        scope=pb.SecretScope(apps=scope.apps, all_apps=scope.all_apps),
        version=record.version,
        updated_at=record.updated_at,
        used_by=users,
    )


def _list(state: ClusterState) -> pb.RegistryList:
    return pb.RegistryList(
        registries=[
            _info(stored.value, state)
            for _, stored in sorted(state.secrets.items())
            if stored.value.registry
        ],
        mirror=state.registry_mirror.value.mirror if state.registry_mirror else "",
    )


class RegistriesApi(ServiceBase):
    @rpc(Permission.SECRETS_WRITE)
    async def RegistryLogin(
        self, request: pb.RegistryLoginRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegistryInfo:
        """Store (or replace) a registry's credentials, sealed; a new login is for every
        app unless it names the apps."""
        registry = check_registry(request.registry)
        if not request.username or any(c in request.username for c in ":\n\r\0"):
            raise InvalidArgument("give the registry's user name with --username (no ':')")
        password = request.password.rstrip(b"\r\n")  # what `echo pw | ... --password-stdin` adds
        if not password or len(password) > MAX_SECRET_BYTES:
            raise InvalidArgument("give the password on standard input (--password-stdin)")
        if self._secrets is None:
            raise FailedPrecondition(
                "this control plane has no secrets key; start it with --secrets-key-file"
            )
        name = secret_name(registry)
        state = await self._state()
        stored = state.secrets.get(name)
        if stored is not None and stored.value.registry != registry:
            raise FailedPrecondition(
                f"secret {name!r} exists and is not registry {registry}'s credentials; "
                f"move it with `fleet secrets delete {name}` first"
            )
        if request.HasField("scope"):
            scope = scope_from(request.scope.apps, request.scope.all_apps)
        elif stored is not None and stored.value.scope is not None:
            scope = stored.value.scope
        else:
            scope = SecretScope(all_apps=True)
        record = self._sealed(
            name, password, stored, scope, registry=registry, username=request.username
        )
        revision = await self._store.write_secret(
            record, expected_mod_revision=stored.mod_revision if stored else 0
        )
        await self._caught_up(revision)
        return _info(record, self._informer.state())

    @rpc(Permission.SECRETS_WRITE)
    async def RegistryLogout(
        self, request: pb.RegistryLogoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegistryLogoutResponse:
        """Forget a registry's credentials: new pulls from it are anonymous (containers
        that run keep running)."""
        registry = check_registry(request.registry)
        name = secret_name(registry)
        stored = (await self._state()).secrets.get(name)
        if stored is None or stored.value.registry != registry:
            raise NotFound(f"no login for registry {registry} (see `fleet registry list`)")
        await self._caught_up(
            await self._store.delete_secret(name, expected_mod_revision=stored.mod_revision)
        )
        return pb.RegistryLogoutResponse()

    @rpc(Permission.SECRETS_READ)
    async def ListRegistries(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegistryList:
        return _list(await self._state())

    @rpc(Permission.SECRETS_WRITE)
    async def SetRegistryMirror(
        self, request: pb.RegistryMirrorRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegistryList:
        mirror = check_mirror(request.mirror) if request.mirror else ""
        stored = (await self._state()).registry_mirror
        record = RegistryMirrorRecord(mirror=mirror, set_at=now_iso()) if mirror else None
        await self._caught_up(
            await self._store.write_registry_mirror(
                record, expected_mod_revision=stored.mod_revision if stored else 0
            )
        )
        return _list(self._informer.state())
