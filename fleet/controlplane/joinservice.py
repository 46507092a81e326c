"""``JoinService.JoinHost``: a new host's agent, with a join token and a CSR, gets its
agent certificate. Served on the token port only (``--token-listen``: TLS without
client certificates, its chain carrying the CA the agent pins); the token in the
request is the only credential, checked by ``joining.check_join``.

Nothing is written for a refused join. An accepted one is one compare-and-swap: the
token's use counted, the labels it gives written, and no host of that id registered,
so a token of N uses lets exactly N hosts in whichever replicas they ask.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc.aio

from fleet._time import now_iso
from fleet.controlplane._handlers import check_well_formed
from fleet.controlplane.auth import answer
from fleet.controlplane.joining import Signer, check_join, joined, parse_join_token
from fleet.errors import Conflict, FailedPrecondition, FleetError, Unavailable
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.store import Informer, Store, check_host_id
from fleet.store.records import HostLabelsRecord

__all__ = ["JOIN_METHOD", "JoinService"]

log = logging.getLogger(__name__)

JOIN_METHOD = "/fleet.v1.JoinService/JoinHost"  # the token port lets it in without a token
_TRIES = 5  # joins racing for one token: each retries on the newer record
_CACHE_WAIT = 5.0


class JoinService(pb_grpc.JoinServiceServicer):
    def __init__(
        self, store: Store, informer: Informer, signer: Callable[[], Signer | None]
    ) -> None:
        self._store = store
        self._informer = informer
        self._signer = signer

    async def JoinHost(
        self, request: pb.JoinRequest, context: grpc.aio.ServicerContext
    ) -> pb.CertificateResponse:
        try:
            check_well_formed(request)
            return await self._join(request)
        except FleetError as error:
            log.warning("join of host %r refused: %s", request.host_id[:64], error)
            answer(context, error)
        return pb.CertificateResponse()

    async def _join(self, request: pb.JoinRequest) -> pb.CertificateResponse:
        signer = self._signer()
        if signer is None:
            raise FailedPrecondition(
                "this control plane cannot sign certificates (it has no --ca-key): join "
                "through one that has"
            )
        token_id, secret = parse_join_token(request.token)
        host_id = check_host_id(request.host_id)
        await self._informer.wait_synced()
        for _ in range(_TRIES):
            state = self._informer.state()
            stored = state.join_tokens.get(token_id)
            check_join(stored.value if stored else None, secret, time.time())
            assert stored is not None  # check_join refuses an unknown token
            if host_id in state.hosts:
                raise FailedPrecondition(
                    f"host {host_id!r} is in the pool already: join with another --host-id, "
                    f"or remove it first (fleet hosts remove {host_id})"
                )
            # Signed first (a bad CSR is refused before anything is written); a lost
            # race throws this certificate away unseen.
            cert = signer.sign(request.csr_pem, host_id, datetime.now(UTC))
            labels = state.host_labels.get(host_id)
            record = None
            if stored.value.labels:
                current = labels.value.labels if labels else {}
                record = HostLabelsRecord(
                    host_id=host_id,
                    labels={**current, **stored.value.labels},
                    updated_at=now_iso(),
                    updated_by=f"join-token:{token_id}",
                )
            try:
                revision = await self._store.use_join_token(
                    joined(stored.value, host_id),
                    expected_mod_revision=stored.mod_revision,
                    host_id=host_id,
                    labels=record,
                    labels_mod_revision=labels.mod_revision if labels else 0,
                )
            except Conflict:
                # Another join used the token (or the host registered) meanwhile: look
                # again at what etcd holds now.
                await asyncio.wait_for(
                    self._informer.wait_for_revision(await self._store.etcd.revision()), _CACHE_WAIT
                )
                continue
            await asyncio.wait_for(self._informer.wait_for_revision(revision), _CACHE_WAIT)
            log.info("host %s joined with token %s", host_id, token_id)
            return pb.CertificateResponse(certificate_pem=cert, ca_pem=signer.ca_pem)
        raise Unavailable(f"join token {token_id} is busy with other joins; try again")
