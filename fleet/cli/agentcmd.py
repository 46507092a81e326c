"""``fleet agent``: one per Docker host. Its options turned into the agent's config
(``fleet.agent``, imported only when it starts), joining with a token when asked, run in
the foreground (``lifecycle``). Every option also comes from ``FLEET_<OPTION>`` and a
``--config`` file (``daemonconfig``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli import lifecycle
from fleet.cli.daemonconfig import ConfigOpt
from fleet.cli.logformat import LogFormat, LogFormatOpt, LogLevel, daemon_logging
from fleet.cli.options import duration_option, memory_option
from fleet.cli.output import fail
from fleet.cli.policy import (
    AllowBindOpt,
    AllowCapOpt,
    AllowDeviceOpt,
    AllowOpt,
    policy_from_options,
)
from fleet.client import servers_from
from fleet.transport import TlsFiles, Transport, client_transport

__all__ = ["RunsIn", "agent"]


def _address_option(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        fail(f"--advertise-address must be an IP address, got {text!r}")


def _default_state_dir(host_id: str) -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/fleet-agent") / host_id
    return Path.home() / ".fleet" / f"agent-{host_id}"


def _labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--label {item!r} must be KEY=VALUE")
        labels[key] = value
    return labels


def _joined(
    token: str,
    join_server: str | None,
    fingerprint: str | None,
    host_id: str,
    state_dir: Path,
    tls: tuple[Path | None, Path | None, Path | None],
) -> Transport:
    """The agent's transport once it joined the pool with ``token`` (or had already):
    its files are the --tls-* paths, else its state dir's pki/. A control plane that
    cannot be reached is tried again (a new host may boot before it); a refusal stops
    the agent, saying why."""
    from fleet.agent.joining import join_pool, normalize_fingerprint
    from fleet.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unavailable

    if not fingerprint:
        fail("--join needs --ca-fingerprint sha256:HEX (fleet hosts token create prints it)")
    if not join_server:
        fail("--join needs --join-server, the control plane's --token-listen address")
    try:
        pinned = normalize_fingerprint(fingerprint)
    except InvalidArgument as error:
        fail(str(error))
    pki = state_dir / "pki"
    files = TlsFiles(
        tls[0] or pki / "ca.crt",
        tls[1] or pki / "agent.crt",
        tls[2] or pki / "agent.key",
        "the certificate --join got",
    )
    delay = 1.0
    while True:
        try:
            join_pool(
                join_server=join_server,
                token=token,
                fingerprint=pinned,
                host_id=host_id,
                files=files,
            )
            return Transport(files)
        except (PermissionDenied, FailedPrecondition, InvalidArgument) as error:
            fail(str(error))
        except OSError as error:  # a read-only --tls-* path, a full disk
            fail(
                f"--join cannot keep a certificate there: {error}; give it a writable state "
                "dir (and no --tls-* paths, or writable ones)"
            )
        except Unavailable as error:
            logging.getLogger("fleet.agent").warning("%s; trying again in %.0fs", error, delay)
            time.sleep(delay)  # nothing else to do before the agent has a certificate
            delay = min(delay * 2, 30.0)


def _default_host_id() -> str:
    return socket.gethostname().split(".")[0].lower()


class RunsIn(StrEnum):
    process = "process"
    container = "container"


def agent(
    host_id: Annotated[
        str | None,
        typer.Option(
            "--host-id",
            help="This host's name in the pool, which its agent certificate names. "
            "Default: the machine's short host name.",
        ),
    ] = None,
    server_: Annotated[
        str | None, typer.Option("--server", "-s", help="Control plane address(es).")
    ] = None,
    docker_url: Annotated[
        str | None,
        typer.Option("--docker", help="Docker daemon URL. Default: $DOCKER_HOST or the socket."),
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Host label KEY=VALUE (repeat).")
    ] = None,
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca", help="fleet's CA.")] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="This host's agent certificate.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its key.")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Plaintext to a server started with --insecure.")
    ] = False,
    join: Annotated[
        str | None,
        typer.Option(
            "--join",
            help="Join the pool with this token (fleet hosts token create): the agent makes "
            "its own key and gets its certificate from the control plane, into its state "
            "dir's pki/ (or the --tls-* paths). Once joined, the same command line starts "
            "it without joining again. Prefer FLEET_JOIN or the config file: a command "
            "line is visible to every user of the host.",
        ),
    ] = None,
    join_server: Annotated[
        str | None,
        typer.Option(
            "--join-server",
            help="With --join: where to join, the control plane's --token-listen address.",
        ),
    ] = None,
    ca_fingerprint: Annotated[
        str | None,
        typer.Option(
            "--ca-fingerprint",
            help="With --join: sha256:HEX of the pool's CA certificate, which the agent "
            "pins before it sends the token (fleet hosts token create prints it).",
        ),
    ] = None,
    allow: AllowOpt = None,
    allow_cap: AllowCapOpt = None,
    allow_bind: AllowBindOpt = None,
    allow_device: AllowDeviceOpt = None,
    cpus: Annotated[
        float | None,
        typer.Option("--cpus", help="Cores this host offers fleet (default: all it has)."),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", help="Memory this host offers fleet, e.g. 6Gi (default: all)."),
    ] = None,
    image_gc_after: Annotated[
        str | None,
        typer.Option(
            "--image-gc-after",
            help="Remove images fleet containers have not used for this long, e.g. 24h "
            "(never one a container uses). Default: keep them.",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Keeps restart counts across agent restarts. Default: "
            "/var/lib/fleet-agent/HOST_ID as root, else ~/.fleet/agent-HOST_ID.",
        ),
    ] = None,
    advertise_address: Annotated[
        str | None,
        typer.Option(
            "--advertise-address",
            help="Where this host's published ports answer (`fleet endpoints`). Default: "
            "its address on the route to the control plane.",
        ),
    ] = None,
    ingress: Annotated[
        str | None,
        typer.Option(
            "--ingress",
            help="Make this host an edge: its proxy listens on ADDR:PORT (e.g. 0.0.0.0:80) "
            "for HTTP and routes to the apps with an `ingress:` (their tcp routes on "
            "their own ports).",
        ),
    ] = None,
    os_release: Annotated[
        Path,
        typer.Option(
            "--os-release", help="The os-release file whose NAME and VERSION_ID it reports."
        ),
    ] = Path("/etc/os-release"),
    machine_id_file: Annotated[
        Path,
        typer.Option(
            "--machine-id-file",
            help="The machine id whose Zincati id it reports (FleetLock maps it to this host).",
        ),
    ] = Path("/etc/machine-id"),
    allow_host_commands: Annotated[
        bool,
        typer.Option(
            "--allow-host-commands",
            help="Let `fleet upgrade-hosts --command` run its command on this host, once "
            "per walk (as the agent's user; as root with --host-commands-in container).",
        ),
    ] = False,
    host_commands_in: Annotated[
        RunsIn,
        typer.Option(
            "--host-commands-in",
            help="Where host commands run: process (a process of the agent's own, for an "
            "agent installed on the host) or container (a privileged sibling container "
            "that enters the host's namespaces, for an agent in a container: the image's "
            "default). Either way they outlive the agent.",
        ),
    ] = RunsIn.process,
    edge_proxy_in: Annotated[
        RunsIn,
        typer.Option(
            "--edge-proxy-in",
            help="With --ingress: where HAProxy runs. process (a process of its own "
            "session, for an agent installed on the host) or container (a sibling "
            "container from the agent's image, with the host's network, sharing the "
            "state dir: for an agent in a container, the image's default). Either way it "
            "keeps serving while the agent restarts, and the next agent adopts it.",
        ),
    ] = RunsIn.process,
    host_command_image: Annotated[
        str | None,
        typer.Option(
            "--host-command-image",
            help="The image of --host-commands-in container's containers (it needs "
            "nsenter). Default: the agent's own container's image.",
        ),
    ] = None,
    host_command_pid: Annotated[
        int,
        typer.Option(
            "--host-command-pid",
            min=1,
            help="--host-commands-in container: the host process whose namespaces the "
            "commands enter. Default: 1, the host's init; another host process where PID 1 "
            "refuses to be entered (a sandboxed VM's init).",
        ),
    ] = 1,
    log_level: LogLevel = "info",
    log_format: LogFormatOpt = LogFormat.auto,
    config_file: ConfigOpt = None,  # read by its callback, into the defaults of the rest
) -> None:
    """Run the agent for one Docker host: it runs what the control plane places here.

    It authenticates with an agent certificate naming HOST_ID (--tls-*, FLEET_TLS_*, or
    agent-HOST_ID.crt in $FLEET_PKI_DIR). Every option can also be set by its FLEET_*
    variable or in the --config file. SIGTERM stops it cleanly: it leaves the control
    plane (its host shows disconnected at once) and the containers keep running. Under
    systemd (Type=notify) it says READY=1 once its first try to register is over,
    registered or not: the host's containers need no control plane to keep running.
    """
    from fleet.agent import Agent, AgentConfig, DockerRuntime
    from fleet.agent.edgelaunch import ContainerLauncher
    from fleet.agent.edgeproxy import EdgeProxy
    from fleet.agent.haproxy import HAProxyError
    from fleet.agent.hostcontainer import ContainerRunner
    from fleet.agent.incontainer import check_host_pid_namespace
    from fleet.agent.joining import CertificateRenewer
    from fleet.errors import FailedPrecondition, InvalidArgument
    from fleet.ingress import check_ingress
    from fleet.store.keys import check_host_id

    machine_logs = daemon_logging(log_level, log_format)
    try:
        host_id = check_host_id(host_id or _default_host_id())
    except InvalidArgument as error:
        fail(f"{error}; give one with --host-id (or FLEET_HOST_ID, or host-id in the config file)")
    try:
        ingress_listen = check_ingress((ingress or "").strip())
    except InvalidArgument as error:
        fail(f"--ingress: {error}")
    chosen_state_dir = state_dir or _default_state_dir(host_id)
    if join:
        transport = _joined(
            join,
            join_server,
            ca_fingerprint,
            host_id,
            chosen_state_dir,
            (tls_ca, tls_cert, tls_key),
        )
    else:
        transport = client_transport(
            ca=tls_ca, cert=tls_cert, key=tls_key, insecure=insecure, kind="agent", name=host_id
        )
    config = AgentConfig(
        servers=servers_from(server_),
        host_id=host_id,
        transport=transport,
        labels=_labels(label or []),
        policy=policy_from_options(allow or [], allow_cap or [], allow_bind or [], allow_device),
        state_dir=chosen_state_dir,
        cpus=cpus,
        memory=memory_option("--memory", memory) if memory else None,
        image_gc_after=duration_option("--image-gc-after", image_gc_after)
        if image_gc_after
        else None,
        address=_address_option(advertise_address) if advertise_address else "",
        ingress=ingress_listen,
        os_release=os_release,
        machine_id=machine_id_file,
        allow_host_commands=allow_host_commands,
    )
    runtime = DockerRuntime(docker_url)
    try:
        check_host_pid_namespace(lambda: runtime.client)
    except FailedPrecondition as error:
        fail(str(error))
    runner = (
        ContainerRunner(
            lambda: runtime.client, host_id, host_command_image or "", target_pid=host_command_pid
        )
        if host_commands_in is RunsIn.container
        else None  # a process of the agent's own
    )
    # An edge's HAProxy keeps serving while the agent restarts, and the next agent
    # adopts it (its state dir's pidfile and master socket).
    edge = (
        EdgeProxy(
            ingress_listen,
            (config.state_dir or Path(".")) / "edge",
            launcher=ContainerLauncher(lambda: runtime.client, host_id)
            if edge_proxy_in is RunsIn.container
            else None,  # a process of its own session
        )
        if ingress_listen
        else None
    )
    daemon = Agent(config, runtime, runner, on_edge=edge.update if edge else None)

    async def main(life: lifecycle.Lifecycle) -> None:
        def started(registered: bool) -> None:
            if registered:
                life.ready(f"registered as {host_id}")
            else:
                life.ready("no control plane answers yet; running alone and trying again")

        if edge is not None:
            try:
                await edge.start()
            except HAProxyError as error:
                # Asked to be an edge and cannot: say so and stop, as a proxy whose port
                # is taken does, rather than register as an edge that routes nothing.
                raise FailedPrecondition(
                    f"--ingress {ingress_listen}: HAProxy cannot start: {error}"
                ) from None
        # Two thirds into its certificate's life the agent asks for a new one; its
        # session's certificate watch reconnects with it.
        renewal = (
            asyncio.create_task(
                CertificateRenewer(transport.tls, transport, list(config.servers), host_id).run(),
                name="certificate-renewal",
            )
            if transport.tls is not None
            else None
        )
        try:
            await daemon.run_until(life.stopping, started)
        finally:
            if renewal is not None:
                renewal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewal
            if edge is not None:
                await edge.stop()  # HAProxy keeps serving; the next agent adopts it

    lifecycle.run_daemon(main, log_errors=machine_logs)
