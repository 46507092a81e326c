"""The client library the CLI is built on, for anyone who wants to script fleet.

    with FleetClient(["127.0.0.1:7400"]) as fleet:
        changes = fleet.apply(load_file("app.yaml"))

Every call raises fleet's own errors (``fleet.errors``), never ``grpc.RpcError``; with
several server endpoints a call that finds one unreachable tries the next. Given
``read_servers`` (a server's ``--read-listen``), reads go there first, until the client
writes: from then on it reads where it wrote, so it always sees its own writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc

from fleet.errors import FleetError, InvalidArgument, TlsRefused, Unavailable, error_from_grpc
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.refusals import explain_refusal
from fleet.spec import AppSpec
from fleet.transport import Transport

__all__ = [
    "DEFAULT_SERVER",
    "ExecCall",
    "FleetClient",
    "parse_addresses",
    "read_servers_from",
    "servers_from",
]

DEFAULT_SERVER = "127.0.0.1:7400"

T = TypeVar("T")


def servers_from(value: str | None) -> list[str]:
    """Endpoints from ``--server``, else ``FLEET_SERVER``, else the local default."""
    return parse_addresses(value or os.environ.get("FLEET_SERVER") or DEFAULT_SERVER, "server")


def read_servers_from(value: str | None) -> list[str]:
    """Read ports from ``FLEET_READ_SERVER``, else ``value`` (a context's), else none."""
    return parse_addresses(os.environ.get("FLEET_READ_SERVER") or value or "", "read server")


def parse_addresses(text: str, what: str) -> list[str]:
    """HOST:PORT[,HOST:PORT...] as a list (InvalidArgument naming ``what`` otherwise)."""
    servers = [s.strip() for s in text.split(",") if s.strip()]
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidArgument(f"{what} address {server!r} must be HOST:PORT")
    return servers


class ExecCall:
    """An open ``ExecStream``: iterate it for the answer (fleet errors, never
    ``grpc.RpcError``); ``cancel`` hangs up (the command is hung up too)."""

    def __init__(self, call: Any, to_error: Callable[[grpc.RpcError], FleetError]) -> None:
        self._call = call
        self._to_error = to_error
        self._hung_up = False

    def __iter__(self) -> Iterator[pb.ExecOutput]:
        try:
            yield from self._call
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED and self._hung_up:
                return  # we hung up ourselves
            raise self._to_error(error) from None

    def cancel(self) -> None:
        self._hung_up = True
        self._call.cancel()


class FleetClient:
    def __init__(
        self,
        servers: Sequence[str],
        transport: Transport,
        *,
        timeout: float = 30.0,
        read_servers: Sequence[str] = (),
    ) -> None:
        if not servers:
            raise InvalidArgument("no server address given")
        self.servers = list(servers)
        self.read_servers = list(read_servers)
        self.transport = transport
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}
        self._wrote = False  # a call other than a read was made: read from the main port

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def _stub(self, server: str) -> pb_grpc.FleetServiceStub:
        if server not in self._channels:
            self._channels[server] = self.transport.channel(server)
        return pb_grpc.FleetServiceStub(self._channels[server])

    def _read(self, method: Callable[[pb_grpc.FleetServiceStub], T]) -> T:
        """A read: from a read port while this client has not written, else (and when
        no read port answers, or it is not one) as any call."""
        if self.read_servers and not self._wrote:
            for server in self.read_servers:
                try:
                    return method(self._stub(server))
                except grpc.RpcError as error:
                    code = error.code()
                    if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                        raise error_from_grpc(
                            code, error.details(), error.trailing_metadata() or ()
                        ) from None
        return self._call(method, reading=True)

    def _call(self, method: Callable[[pb_grpc.FleetServiceStub], T], *, reading: bool = False) -> T:
        if not reading:
            self._wrote = True  # (or might have: every call but the reads counts)
        unreachable: list[tuple[str, grpc.RpcError]] = []
        answer: grpc.RpcError | None = None  # a server's own "unavailable" (etcd away)
        for server in self.servers:
            try:
                return method(self._stub(server))
            except grpc.RpcError as error:
                code = error.code()
                if code != grpc.StatusCode.UNAVAILABLE:
                    trailers = error.trailing_metadata() or ()
                    raise error_from_grpc(code, error.details(), trailers) from None
                # Unreachable, or up but without etcd: either way another endpoint may do.
                if any(k == "fleet-error" for k, _ in error.trailing_metadata() or ()):
                    answer = error
                else:
                    unreachable.append((server, error))
        if answer is not None:
            raise error_from_grpc(answer.code(), answer.details())
        raise self._unreachable(unreachable)

    def _unreachable(self, failures: list[tuple[str, grpc.RpcError]]) -> Unavailable:
        """Why no server answered: a refused TLS handshake says who refused what (it is
        no use asking whether the server runs), anything else that none could be reached."""
        now = datetime.now(UTC)
        for server, error in failures:
            refusal = explain_refusal(error.details() or "", self.transport, server, now)
            if refusal is not None:
                return TlsRefused(refusal)
        detail = failures[-1][1].details() if failures else ""
        return Unavailable(
            f"cannot reach the fleet control plane at {', '.join(self.servers)}"
            + (f" ({detail})" if detail else "")
            + "; is `fleet server` (or `fleet up`) running? Set --server or FLEET_SERVER."
        )

    def _stream_error(self, error: grpc.RpcError) -> FleetError:
        """The fleet error for a stream that failed while read (a stream goes to the
        first server, and its handshake happens at the first read)."""
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            refusal = explain_refusal(
                error.details() or "", self.transport, self.servers[0], datetime.now(UTC)
            )
            if refusal is not None:
                return TlsRefused(refusal)
        return error_from_grpc(error.code(), error.details())

    # ------------------------------------------------------------------ calls

    def apply(
        self,
        specs: Sequence[AppSpec],
        *,
        dry_run: bool = False,
        base_generations: dict[str, int] | None = None,
    ) -> list[pb.AppChange]:
        """Create or update ``specs``. With ``base_generations`` (app -> the generation it
        was planned on, 0 for new) a concurrent change raises ``Conflict``, not an overwrite.
        A ``SpecError`` or ``PolicyDenied`` names each problem by its spec's place in
        ``specs`` (document i of ``REQUEST``): ``AppFile.locate`` finds its line."""
        request = pb.ApplyRequest(
            specs_json=[s.model_dump_json() for s in specs],
            dry_run=dry_run,
            base_generations=base_generations or {},
        )
        response = self._call(lambda s: s.Apply(request, timeout=self.timeout))
        return list(response.changes)

    def apps(self, name: str = "") -> list[pb.AppInfo]:
        request = pb.GetRequest(name=name)
        return list(self._read(lambda s: s.GetApps(request, timeout=self.timeout)).apps)

    def hosts(self, name: str = "") -> list[pb.HostInfo]:
        return list(self.host_list(name).hosts)

    def host_list(self, name: str = "") -> pb.HostList:
        """The hosts, and whether the replicas of those down are being held
        (``moves_held``)."""
        request = pb.GetRequest(name=name)
        listing: pb.HostList = self._read(lambda s: s.GetHosts(request, timeout=self.timeout))
        return listing

    def containers(self, app: str = "", host: str = "") -> list[pb.ContainerInfo]:
        request = pb.GetRequest(app=app, host=host)
        response = self._read(lambda s: s.GetContainers(request, timeout=self.timeout))
        return list(response.containers)

    def scale(self, name: str, replicas: int) -> pb.ScaleResponse:
        if replicas < 0:
            raise InvalidArgument("replicas must be 0 or more")
        request = pb.ScaleRequest(name=name, replicas=replicas)
        response: pb.ScaleResponse = self._call(lambda s: s.Scale(request, timeout=self.timeout))
        return response

    def delete_app(self, name: str) -> None:
        request = pb.DeleteAppRequest(name=name)
        self._call(lambda s: s.DeleteApp(request, timeout=self.timeout))

    def set_secret(
        self,
        name: str,
        value: bytes,
        *,
        apps: Sequence[str] = (),
        all_apps: bool = False,
    ) -> pb.SecretInfo:
        """Create or replace a secret (admin only). A new one needs a scope: the ``apps``
        that may use it, or ``all_apps``; without one, a new value keeps the stored scope."""
        request = pb.SetSecretRequest(name=name, value=value)
        if apps or all_apps:
            request.scope.CopyFrom(pb.SecretScope(apps=apps, all_apps=all_apps))
        response: pb.SecretInfo = self._call(lambda s: s.SetSecret(request, timeout=self.timeout))
        return response

    def set_secret_scope(
        self, name: str, *, apps: Sequence[str] = (), all_apps: bool = False
    ) -> pb.SecretInfo:
        """Replace which apps may use a secret (admin only), keeping its value."""
        request = pb.SetSecretScopeRequest(
            name=name, scope=pb.SecretScope(apps=apps, all_apps=all_apps)
        )
        response: pb.SecretInfo = self._call(
            lambda s: s.SetSecretScope(request, timeout=self.timeout)
        )
        return response

    def secrets(self, name: str = "") -> list[pb.SecretInfo]:
        request = pb.GetRequest(name=name)
        return list(self._call(lambda s: s.ListSecrets(request, timeout=self.timeout)).secrets)

    def delete_secret(self, name: str) -> None:
        request = pb.DeleteSecretRequest(name=name)
        self._call(lambda s: s.DeleteSecret(request, timeout=self.timeout))

    def registry_login(
        self,
        registry: str,
        username: str,
        password: bytes,
        *,
        apps: Sequence[str] = (),
        all_apps: bool = False,
    ) -> pb.RegistryInfo:
        """Store a registry's credentials, sealed (admin only); used for the pulls of
        every app (or of ``apps``) whose image names the registry."""
        request = pb.RegistryLoginRequest(registry=registry, username=username, password=password)
        if apps or all_apps:
            request.scope.CopyFrom(pb.SecretScope(apps=apps, all_apps=all_apps))
        response: pb.RegistryInfo = self._call(
            lambda s: s.RegistryLogin(request, timeout=self.timeout)
        )
        return response

    def registry_logout(self, registry: str) -> None:
        request = pb.RegistryLogoutRequest(registry=registry)
        self._call(lambda s: s.RegistryLogout(request, timeout=self.timeout))

    def registries(self) -> pb.RegistryList:
        """The registries fleet holds credentials for (never a password), and the mirror."""
        request = pb.GetRequest()
        response: pb.RegistryList = self._call(
            lambda s: s.ListRegistries(request, timeout=self.timeout)
        )
        return response

    def set_registry_mirror(self, mirror: str) -> pb.RegistryList:
        """Set the pool's mirror for Docker Hub images ("" clears it; admin only)."""
        request = pb.RegistryMirrorRequest(mirror=mirror)
        response: pb.RegistryList = self._call(
            lambda s: s.SetRegistryMirror(request, timeout=self.timeout)
        )
        return response

    def policy(self) -> pb.Policy:
        request = pb.GetRequest()
        response: pb.Policy = self._read(lambda s: s.GetPolicy(request, timeout=self.timeout))
        return response

    def set_policy(self, policy: pb.Policy) -> pb.Policy:
        response: pb.Policy = self._call(lambda s: s.SetPolicy(policy, timeout=self.timeout))
        return response

    def server_info(self) -> pb.ServerInfo:
        """The version, name and leadership of the first server that answers."""
        request = pb.GetRequest()
        response: pb.ServerInfo = self._call(
            lambda s: s.GetServerInfo(request, timeout=self.timeout), reading=True
        )
        return response

    def events(
        self,
        *,
        app: str = "",
        host: str = "",
        since_seconds: float = 0.0,
        follow: bool = False,
        limit: int = 0,
    ) -> Iterator[pb.Event]:
        """Recent events, oldest first (the last ``limit`` only, if set); with ``follow``
        the iterator waits for new ones."""
        request = pb.EventsRequest(
            app=app, host=host, since_seconds=since_seconds, follow=follow, limit=limit
        )
        stream = self._call(lambda s: s.Events(request, timeout=None if follow else self.timeout))
        try:
            yield from stream
        except grpc.RpcError as error:
            raise self._stream_error(error) from None

    def logs(
        self,
        app: str,
        *,
        slot: int = -1,
        follow: bool = False,
        tail: int = -1,
        timestamps: bool = False,
        since_seconds: float = 0.0,
        previous: bool = False,
    ) -> Iterator[pb.LogChunk]:
        """The replicas' log output as it arrives (each chunk says which replica):
        only the last ``since_seconds`` when given, of each replica's last exited
        container with ``previous``."""
        request = pb.LogsRequest(
            app=app,
            slot=slot,
            follow=follow,
            tail=tail,
            timestamps=timestamps,
            since_seconds=since_seconds,
            previous=previous,
        )
        stream = self._call(lambda s: s.Logs(request, timeout=None if follow else self.timeout))
        try:
            yield from stream
        except grpc.RpcError as error:
            raise self._stream_error(error) from None

    def watch_endpoints(
        self, app: str, *, retry_rounds: int = 3
    ) -> Generator[pb.EndpointList, None, None]:
        """``app``'s whole endpoint list at once, then each time it changes (``version``
        rising), for as long as the caller iterates. A stream that breaks (its server
        stopped or unreachable) is opened again on the next server, which sends its
        whole list: a list equal to the last one given is skipped, so each item is a
        change, its version above the last one given. ``Unavailable`` once every server
        failed ``retry_rounds`` times in a row without sending anything; other refusals
        (NotFound, PermissionDenied) at once."""
        request = pb.GetRequest(name=app)
        last: list[pb.Endpoint] | None = None
        version = 0  # the last version given
        failures: list[tuple[str, grpc.RpcError | None]] = []  # None: ended, no error
        turn = 0
        while len(failures) < retry_rounds * len(self.servers):
            server = self.servers[turn % len(self.servers)]
            stream = self._stub(server).WatchEndpoints(request)
            try:
                for found in stream:
                    failures.clear()
                    if last is None or list(found.endpoints) != last:
                        last = list(found.endpoints)
                        # Another server's count may lag this one's: still rising.
                        found.version = max(found.version, version + 1)
                        version = found.version
                        yield found
                # The server ended the stream without an error: it is going away.
                failures.append((server, None))
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise self._stream_error(error) from None
                failures.append((server, error))
            finally:
                stream.cancel()  # the caller stopped early: hang up, the server's watch ends
            turn += 1
            if failures and len(failures) % len(self.servers) == 0:
                time.sleep(min(2.0, 0.25 * len(failures)))  # a round failed: let them restart
        raise self._unreachable([(s, e) for s, e in failures if e is not None])

    def exec(self, app: str, command: Sequence[str], *, slot: int = -1) -> pb.ExecResponse:
        request = pb.ExecRequest(app=app, slot=slot, command=list(command))
        response: pb.ExecResponse = self._call(lambda s: s.Exec(request, timeout=self.timeout))
        return response

    def exec_stream(self, inputs: Iterator[pb.ExecInput]) -> ExecCall:
        """A command in a replica with its input streamed (``fleet exec -i``, with a
        terminal if ``ExecStart.tty``): ``inputs`` starts with ``ExecStart``, then input
        and resizes as they come (read by gRPC's thread); the answer's messages are
        ``ExecStarted``, output, and ``ExecExit`` last. No deadline: it is interactive."""
        call = self._call(lambda s: s.ExecStream(inputs))
        return ExecCall(call, self._stream_error)

    def signal_replicas(
        self, app: str, action: str, *, slot: int = -1, signal: str = ""
    ) -> pb.SignalResponse:
        """``pause``, ``unpause`` or ``kill`` (with ``signal``) the app's replicas (one
        with ``slot``): one result per replica, its ``error`` set where it failed."""
        request = pb.SignalRequest(app=app, slot=slot, action=action, signal=signal)
        response: pb.SignalResponse = self._call(
            lambda s: s.SignalReplicas(request, timeout=self.timeout)
        )
        return response

    def top(self, *, app: str = "", host: str = "") -> list[pb.TopResponse]:
        request = pb.TopRequest(app=app, host=host)
        return list(self._call(lambda s: s.Top(request, timeout=self.timeout)).entries)

    def set_host_state(self, host_id: str, state: str) -> pb.HostInfo:
        """``cordoned``: the host takes no new replicas; ``ready``: it does again."""
        request = pb.SetHostStateRequest(host_id=host_id, state=state)
        response: pb.HostInfo = self._call(lambda s: s.SetHostState(request, timeout=self.timeout))
        return response

    def label_host(
        self,
        host_id: str,
        labels: Mapping[str, str] | None = None,
        remove: Sequence[str] = (),
        *,
        overwrite: bool = False,
    ) -> pb.HostInfo:
        """Set ``labels`` on a host and remove the keys in ``remove`` (admin only): the
        labels constraints match by name; a label with another value changes only with
        ``overwrite``, as with kubectl label."""
        request = pb.LabelHostRequest(
            host_id=host_id, set=dict(labels or {}), remove=list(remove), overwrite=overwrite
        )
        response: pb.HostInfo = self._call(lambda s: s.LabelHost(request, timeout=self.timeout))
        return response

    def remove_host(self, host_id: str, *, force: bool = False) -> pb.RemoveHostResponse:
        """Take a host out of the pool (admin only): its certificates are denied on every
        stream, its record goes and its replicas are placed elsewhere; refused while it
        has replicas unless ``force``."""
        request = pb.RemoveHostRequest(host_id=host_id, force=force)
        response: pb.RemoveHostResponse = self._call(
            lambda s: s.RemoveHost(request, timeout=self.timeout)
        )
        return response

    def release_host(self, host_id: str) -> pb.ReleaseHostResponse:
        """Give back the FleetLock slot ``host_id`` holds (admin only); it stays cordoned."""
        request = pb.ReleaseHostRequest(host_id=host_id)
        response: pb.ReleaseHostResponse = self._call(
            lambda s: s.ReleaseHost(request, timeout=self.timeout)
        )
        return response

    def create_token(self, name: str, role: str) -> pb.CreateTokenResponse:
        """A new bearer token (admin only); its secret is in the answer, and nowhere else."""
        request = pb.CreateTokenRequest(name=name, role=role)
        response: pb.CreateTokenResponse = self._call(
            lambda s: s.CreateToken(request, timeout=self.timeout)
        )
        return response

    def tokens(self) -> list[pb.TokenInfo]:
        request = pb.GetRequest()
        return list(self._call(lambda s: s.ListTokens(request, timeout=self.timeout)).tokens)

    def delete_token(self, token_id: str) -> None:
        request = pb.DeleteTokenRequest(id=token_id)
        self._call(lambda s: s.DeleteToken(request, timeout=self.timeout))

    def create_join_token(
        self,
        *,
        ttl: float = 0.0,
        uses: int = 0,
        labels: Mapping[str, str] | None = None,
        description: str = "",
    ) -> pb.CreateJoinTokenResponse:
        """A new join token (admin only); its secret is in the answer, and nowhere else."""
        request = pb.CreateJoinTokenRequest(
            ttl_seconds=ttl, uses=uses, labels=dict(labels or {}), description=description
        )
        response: pb.CreateJoinTokenResponse = self._call(
            lambda s: s.CreateJoinToken(request, timeout=self.timeout)
        )
        return response

    def join_tokens(self) -> list[pb.JoinTokenInfo]:
        request = pb.GetRequest()
        return list(self._call(lambda s: s.ListJoinTokens(request, timeout=self.timeout)).tokens)

    def revoke_certificate(self, host_id: str, serial: str) -> None:
        request = pb.RevokeCertificateRequest(host_id=host_id, serial=serial)
        self._call(lambda s: s.RevokeCertificate(request, timeout=self.timeout))

    def delete_join_token(self, token_id: str) -> None:
        request = pb.DeleteTokenRequest(id=token_id)
        self._call(lambda s: s.DeleteJoinToken(request, timeout=self.timeout))

    # ------------------------------------------------------------------ rollouts

    def set_image(self, app: str, image: str) -> pb.AppChange:
        """Point ``app`` at ``image`` (a new revision, rolled out like an apply)."""
        request = pb.SetImageRequest(app=app, image=image)
        response: pb.AppChange = self._call(lambda s: s.SetImage(request, timeout=self.timeout))
        return response

    def _rollout(
        self,
        method: Callable[[pb_grpc.FleetServiceStub], Callable[..., T]],
        request: pb.RolloutRequest,
        answer: type[T],
        *,
        read: bool = False,
    ) -> T:
        """Call a ``Rollout*`` RPC (the stub's ``method``), which answers an ``answer``."""
        call = self._read if read else self._call
        response: T = call(lambda s: method(s)(request, timeout=self.timeout))
        return response

    def rollout_status(self, app: str) -> pb.RolloutInfo:
        request = pb.RolloutRequest(app=app)
        return self._rollout(lambda s: s.RolloutStatus, request, pb.RolloutInfo, read=True)

    def rollout_history(self, app: str) -> pb.RevisionList:
        request = pb.RolloutRequest(app=app)
        return self._rollout(lambda s: s.RolloutHistory, request, pb.RevisionList, read=True)

    def rollout_undo(self, app: str, to_revision: int = 0) -> pb.RolloutInfo:
        """Back to ``to_revision`` (0: the revision before the current one)."""
        request = pb.RolloutRequest(app=app, to_revision=to_revision)
        return self._rollout(lambda s: s.RolloutUndo, request, pb.RolloutInfo)

    def rollout_pause(self, app: str, paused: bool = True) -> pb.RolloutInfo:
        request = pb.RolloutRequest(app=app, paused=paused)
        return self._rollout(lambda s: s.RolloutPause, request, pb.RolloutInfo)

    def rollout_restart(self, app: str) -> pb.RolloutInfo:
        request = pb.RolloutRequest(app=app)
        return self._rollout(lambda s: s.RolloutRestart, request, pb.RolloutInfo)

    def endpoints(self, app: str) -> list[pb.Endpoint]:
        """host:port of every available replica of ``app``."""
        request = pb.GetRequest(name=app)
        return list(self._read(lambda s: s.Endpoints(request, timeout=self.timeout)).endpoints)

    def drain_host(
        self,
        host_id: str,
        *,
        deadline: float = 0.0,
        force: bool = False,
        include_global: bool = False,
    ) -> pb.HostInfo:
        """Start emptying ``host_id`` (see ``fleet drain --help``); returns at once."""
        request = pb.DrainRequest(
            host_id=host_id, deadline_seconds=deadline, force=force, include_global=include_global
        )
        response: pb.HostInfo = self._call(lambda s: s.DrainHost(request, timeout=self.timeout))
        return response

    def upgrade_hosts(
        self,
        action: str,
        *,
        selector: Sequence[str] = (),
        max_parallel: int = 1,
        command: str = "",
        canary_app: str = "",
    ) -> pb.UpgradeInfo:
        """Start (``action="start"``), stop, resume or cancel the OS upgrade walk."""
        request = pb.UpgradeRequest(
            action=action,
            selector=list(selector),
            max_parallel=max_parallel,
            command=command,
            canary_app=canary_app,
        )
        response: pb.UpgradeInfo = self._call(
            lambda s: s.UpgradeHosts(request, timeout=self.timeout)
        )
        return response

    def upgrade(self) -> pb.UpgradeInfo:
        """The current (or last) upgrade walk; an empty id when there was none."""
        request = pb.GetRequest()
        response: pb.UpgradeInfo = self._read(lambda s: s.GetUpgrade(request, timeout=self.timeout))
        return response
