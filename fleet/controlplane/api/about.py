"""What the control plane says of itself: its version, its name and whether it leads
(``fleet version``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import grpc.aio

from fleet import __version__
from fleet.controlplane.api._service import ServiceBase
from fleet.controlplane.auth import Permission, rpc
from fleet.proto import fleet_pb2 as pb

__all__ = ["AboutApi", "ServerAbout"]


def _never() -> bool:
    return False


@dataclass(frozen=True)
class ServerAbout:
    """The replica serving the API: its ``--server-id``, and a question it answers
    each time, since leadership comes and goes."""

    server_id: str = ""
    leading: Callable[[], bool] = field(default=_never)


class AboutApi(ServiceBase):
    # The control plane that serves this API tells it who it is (ControlPlane.__init__).
    about = ServerAbout()

    # Any client role may ask: a version is no secret to whoever can list apps.
    @rpc(Permission.APPS_READ)
    async def GetServerInfo(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerInfo:
        return pb.ServerInfo(
            version=__version__, server_id=self.about.server_id, leader=self.about.leading()
        )
