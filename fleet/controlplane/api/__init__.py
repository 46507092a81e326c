"""The API the CLI speaks (``FleetService`` in fleet.proto), one module per area:

    apps.py      apply, scale, delete; get apps, containers and endpoints
    rollouts.py  set image; rollout status, history, undo, pause and restart
    hosts.py     get hosts; cordon, label, drain and remove; the OS upgrade walk
    observe.py   events; logs, exec and top (relayed to the host's agent)
    execstream.py  exec with streamed input and a terminal (exec -it), relayed likewise
    signals.py   pause, unpause and kill an app's replicas (relayed likewise)
    admin.py     secrets, the container policy, API tokens
    registries.py  private registries' logins and the pool's mirror (fleet registry)
    jointokens.py  the tokens new hosts join with (the joining itself: ``joinservice``)
    about.py     the server's version, name and leadership (``fleet version``)
    pending.py   why an app's slots are pending (the leader knows; a follower plans)
    _service.py  what every area shares: reads from the informer's cache, and writes
                 that return once it has seen them, so a client reads its own writes

Handlers check the caller (``auth.rpc``), read, decide and write; the rules they
decide by are pure functions elsewhere in ``fleet.controlplane``: ``appchanges``
(what an apply writes), ``revisions`` (numbering, pruning, the undo target),
``maintenance`` (the semaphore, drain records), ``upgrades`` (the walk), ``auth``
(who may, tokens). Every write is a compare-and-swap on the revision it was planned on.
"""

from __future__ import annotations

from fleet.controlplane.api._service import Relay
from fleet.controlplane.api.about import AboutApi, ServerAbout
from fleet.controlplane.api.admin import AdminApi
from fleet.controlplane.api.apps import AppsApi
from fleet.controlplane.api.execstream import ExecStreamApi
from fleet.controlplane.api.hosts import HostsApi
from fleet.controlplane.api.jointokens import JoinTokensApi
from fleet.controlplane.api.observe import ObserveApi
from fleet.controlplane.api.registries import RegistriesApi
from fleet.controlplane.api.rollouts import RolloutsApi
from fleet.controlplane.api.signals import SignalsApi
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.store import Informer

__all__ = ["FleetService", "Relay", "ServerAbout"]


class FleetService(
    AppsApi,
    RolloutsApi,
    HostsApi,
    ObserveApi,
    ExecStreamApi,
    SignalsApi,
    AdminApi,
    RegistriesApi,
    JoinTokensApi,
    AboutApi,
    pb_grpc.FleetServiceServicer,
):
    """Every RPC of ``FleetService``: gRPC binds a service to one object, so the areas'
    mixins make one class (an RPC none of them has would answer UNIMPLEMENTED, from
    the generated base; a unit test checks there is none)."""

    def sibling(self, informer: Informer) -> FleetService:
        """A servicer of the same parts and settings over another ``informer``, with
        memos of its own: the read port's, which answers from a thread of its own
        (``controlplane.readport``)."""
        other = FleetService(
            self._store,
            informer,
            self._events,
            self._relay,
            insecure=self.insecure,
            secrets=self._secrets,
        )
        other.about = self.about
        other.token_listen = self.token_listen
        other.hold_moves_when_down = self.hold_moves_when_down
        other.pending.leading = self.pending.leading  # reads the leader's, never changes it
        return other
