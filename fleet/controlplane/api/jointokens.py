"""Join tokens (admin): make, list and revoke the tokens new hosts join with
(``fleet hosts token``). What a token is and how it is checked: ``joining``."""

from __future__ import annotations

import time
from datetime import timedelta

import grpc.aio

from fleet.controlplane.api._service import ServiceBase
from fleet.controlplane.auth import Permission, caller, rpc
from fleet.controlplane.joining import DEFAULT_TOKEN_TTL, Signer, new_join_token
from fleet.errors import FailedPrecondition, InvalidArgument, NotFound
from fleet.hostlabels import MAX_LABELS, check_admin_label
from fleet.proto import fleet_pb2 as pb
from fleet.store import check_name
from fleet.store.records import JoinTokenRecord

__all__ = ["JoinTokensApi", "token_info"]

_MAX_USES = 100_000


def token_info(record: JoinTokenRecord) -> pb.JoinTokenInfo:
    return pb.JoinTokenInfo(
        id=record.id,
        expires_at=record.expires_at,
        uses=record.uses,
        used=record.used,
        labels=record.labels,
        created_at=record.created_at,
        created_by=record.created_by,
        description=record.description,
        hosts=record.hosts,
    )


class JoinTokensApi(ServiceBase):
    # The CA this replica signs joining hosts' certificates with (--ca-key); None: it
    # cannot, and says so when asked for a token.
    signer: Signer | None = None
    token_listen = ""  # its --token-listen: where hosts join ("": nowhere on this replica)

    @rpc(Permission.HOSTS_WRITE)
    async def CreateJoinToken(
        self, request: pb.CreateJoinTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateJoinTokenResponse:
        if self.signer is None or not self.token_listen:
            raise FailedPrecondition(
                "this control plane cannot let hosts join: start it with --ca-key (the key "
                "of its --tls-ca), to sign their certificates, and --token-listen, the "
                "address they join at"
            )
        if request.uses > _MAX_USES:
            raise InvalidArgument(f"--uses must be at most {_MAX_USES}")
        if len(request.labels) > MAX_LABELS:
            raise InvalidArgument(f"a token gives at most {MAX_LABELS} labels")
        for key, value in request.labels.items():
            check_admin_label(key, value)
        if len(request.description) > 200:
            raise InvalidArgument("--description must be at most 200 characters")
        ttl = timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else DEFAULT_TOKEN_TTL
        who = caller(context, insecure=self.insecure, tokens=self.token_identity)
        record, token = new_join_token(
            ttl=ttl,
            uses=request.uses,
            labels=dict(request.labels),
            description=request.description,
            by=who.name,
            now=time.time(),
        )
        await self._caught_up(await self._store.write_join_token(record))
        return pb.CreateJoinTokenResponse(
            info=token_info(record),
            token=token,
            ca_fingerprint=self.signer.fingerprint,
            token_listen=self.token_listen,
        )

    @rpc(Permission.HOSTS_WRITE)
    async def ListJoinTokens(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.JoinTokenList:
        state = await self._state()
        return pb.JoinTokenList(
            tokens=[token_info(t.value) for _, t in sorted(state.join_tokens.items())]
        )

    @rpc(Permission.HOSTS_WRITE)
    async def DeleteJoinToken(
        self, request: pb.DeleteTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteTokenResponse:
        token_id = check_name(request.id, "join token id")
        stored = (await self._state()).join_tokens.get(token_id)
        if stored is None:
            raise NotFound(f"join token {token_id!r} not found (see `fleet hosts token list`)")
        await self._caught_up(
            await self._store.delete_join_token(token_id, expected_mod_revision=stored.mod_revision)
        )
        return pb.DeleteTokenResponse()
