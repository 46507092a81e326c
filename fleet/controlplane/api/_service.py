"""What every area of the API shares: the parts it works on, reads from the informer's
cache, and writes that return only once that cache has seen them, so a client reads
its own writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from fleet._time import now_iso
from fleet.controlplane.api.hostsums import HostSums
from fleet.controlplane.api.pending import PendingReasons
from fleet.controlplane.appchanges import AppChangePlan
from fleet.controlplane.appstatus import CountsCache
from fleet.controlplane.auth import token_identity
from fleet.controlplane.endpointcache import EndpointsCache
from fleet.controlplane.planner import DEFAULT_HOLD_MOVES_WHEN_DOWN
from fleet.controlplane.view import HostViews
from fleet.errors import NotFound, Unavailable
from fleet.pki.subjects import Identity
from fleet.proto import fleet_pb2 as pb
from fleet.secrets import SecretBox
from fleet.store import AppWrite, ClusterState, Informer, Store, Versioned, check_name
from fleet.store.events import EventLog
from fleet.store.records import AppRecord, ReplicaRecord, SecretRecord, SecretScope

__all__ = ["Relay", "ServiceBase", "app_change", "plan_write"]

# Sends a request to one host's agent and yields its answer (AgentService.relay).
Relay = Callable[[str, pb.ContainerRequest], AsyncIterator[pb.ContainerResponse]]

_CACHE_WAIT = 10.0


class ServiceBase:
    """The parts every area's handlers use; each area is a mixin of this class."""

    def __init__(
        self,
        store: Store,
        informer: Informer,
        events: EventLog,
        relay: Relay,
        *,
        insecure: bool = False,
        secrets: SecretBox | None = None,
    ) -> None:
        self._store = store
        self._informer = informer
        self._events = events
        self._relay = relay
        self._secrets = secrets
        self.insecure = insecure  # every caller is an anonymous admin (logged at start)
        # The control plane's memos of host views and app counts (its controller and
        # its metrics use them too), of what `get hosts` sums per host and of what
        # `endpoints` lists per app.
        self.views = HostViews()
        self.counts = CountsCache()
        self.host_sums = HostSums()
        self.endpoint_cache = EndpointsCache()
        self.pending = PendingReasons(self.views)
        # The server's --hold-moves-when-down, which `get hosts` says is holding moves.
        self.hold_moves_when_down: float | None = DEFAULT_HOLD_MOVES_WHEN_DOWN
        # Each unary call's handler time, by method name (``auth.rpc``; the metrics').
        self.observe_call: Callable[[str, float], None] | None = None

    def token_identity(self, token: str) -> Identity | None:
        """Who a bearer token stands for, if it is one of ours (``auth.token_identity``);
        ``rpc`` asks this on the token port."""
        return token_identity(self._informer.state().tokens, token)

    def _sealed(
        self,
        name: str,
        value: bytes,
        stored: Versioned[SecretRecord] | None,
        scope: SecretScope | None,
        **extra: str,
    ) -> SecretRecord:
        """The record of secret ``name`` holding ``value`` sealed with this server's
        key: the next version of ``stored`` (its creation time kept), or the first."""
        assert self._secrets is not None  # the callers refuse a server without a key
        nonce, ciphertext = self._secrets.seal(name, value)
        now = now_iso()
        return SecretRecord(
            name=name,
            key_id=self._secrets.key_id,
            nonce=nonce,
            ciphertext=ciphertext,
            version=stored.value.version + 1 if stored else 1,
            created_at=stored.value.created_at if stored else now,
            updated_at=now,
            scope=scope,
            **extra,
        )

    async def _state(self) -> ClusterState:
        await self._informer.wait_synced()
        return self._informer.state()

    async def state(self) -> ClusterState:
        """The informer's state once synced (for the control plane's other ports)."""
        return await self._state()

    async def caught_up(self, revision: int) -> None:
        """Returns once the informer has seen ``revision`` (Unavailable after a while)."""
        await self._caught_up(revision)

    async def _caught_up(self, revision: int) -> None:
        try:
            await asyncio.wait_for(self._informer.wait_for_revision(revision), _CACHE_WAIT)
        except TimeoutError:
            raise Unavailable(
                "the change was stored, but this server's view of etcd is behind; "
                "check `fleet get` again shortly"
            ) from None

    @staticmethod
    def _app(state: ClusterState, name: str) -> Versioned[AppRecord]:
        stored = state.apps.get(name)
        if stored is None:
            raise NotFound(f"app {name!r} not found (see `fleet get apps`)")
        return stored

    def _replicas(self, app: str, slot: int = -1, host: str = "") -> list[ReplicaRecord]:
        """The app's placed replicas (``slot`` < 0: all; ``host``: on it only)."""
        state = self._informer.state()
        self._app(state, check_name(app))
        found = [
            r
            for r in state.replicas_of(app)
            if (slot < 0 or r.slot == slot) and (not host or r.host == host)
        ]
        if not found:
            which = "" if slot < 0 else f" {slot}"
            raise NotFound(f"app {app!r} has no replica{which} placed")
        return found

    async def _read_app(self, name: str) -> tuple[ClusterState, Versioned[AppRecord]]:
        """The state, and the app ``name`` in it (InvalidArgument, NotFound)."""
        state = await self._state()
        return state, self._app(state, check_name(name))


def plan_write(plan: AppChangePlan, mod_revision: int) -> AppWrite:
    """The write of ``plan``, guarded on the app record's ``mod_revision`` (0: new)."""
    return AppWrite(plan.record, mod_revision, plan.new_revision, plan.prune_revisions)


def app_change(plan: AppChangePlan) -> pb.AppChange:
    """What ``plan`` does to its app, as an apply or ``fleet set image`` answers it."""
    return pb.AppChange(
        app=plan.record.spec.name,
        action=plan.action,
        fields=plan.fields,
        generation=plan.record.generation,
        revision=plan.record.revision,
    )
