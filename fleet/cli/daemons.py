"""The long-running commands: ``fleet server`` (the control plane, ``servercmd``), ``fleet
agent`` (one per Docker host, ``agentcmd``) and ``fleet up`` (etcd, a control plane and
an agent on one machine, here).

Each turns its options into the daemon's config and runs it in the foreground; the
daemons themselves are ``fleet.controlplane.server``, ``fleet.agent`` and ``fleet.up``,
imported only when one starts so other commands stay quick. ``server`` and ``agent``
take every option from ``FLEET_<OPTION>`` and a ``--config`` file too
(``daemonconfig``), stop cleanly on SIGTERM and tell systemd when they are ready
(``lifecycle``), and log for a terminal, journald or a shipper (``logformat``).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer

from fleet.cli.agentcmd import agent
from fleet.cli.logformat import LogLevel, daemon_logging
from fleet.cli.servercmd import server

__all__ = ["agent", "server", "up"]


def up(
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Everything this pool keeps: etcd's data (the apps), the PKI (pki/: the "
            "CLI's admin certificate too), the secrets key and the agent's state. A later "
            "`fleet up` on it finds the apps; one `fleet up` at a time may use it.",
        ),
    ] = Path(".fleet"),
    listen: Annotated[
        str, typer.Option("--listen", help="Control plane address.")
    ] = "127.0.0.1:7400",
    etcd_port: Annotated[
        int,
        typer.Option(
            "--etcd-port", help="etcd's client port; its peer port is the next one (7480)."
        ),
    ] = 7479,
    host_id: Annotated[str | None, typer.Option("--host-id", help="This host's id.")] = None,
    docker_url: Annotated[str | None, typer.Option("--docker", help="Docker daemon URL.")] = None,
    dashboard_listen: Annotated[
        str,
        typer.Option(
            "--dashboard-listen",
            help="The web dashboard's address (HTTPS; another free port if this one is "
            "taken; 'off': none). Its URL is printed at start.",
        ),
    ] = "127.0.0.1:7443",
    log_level: LogLevel = "info",
) -> None:
    """Run fleet on this one machine: etcd, the control plane and an agent, in the
    foreground (Ctrl-C stops all three). A later `fleet up` finds the same apps.

    Examples:
      fleet up                        # then, in another shell: fleet get hosts
      fleet up --data-dir /srv/fleet --listen 0.0.0.0:7400"""
    from fleet.up import UpConfig, run_up

    daemon_logging(log_level)
    config = UpConfig(
        data_dir=data_dir,
        listen=listen,
        etcd_port=etcd_port,
        host_id=host_id,
        docker_url=docker_url,
        dashboard_listen=None if dashboard_listen == "off" else dashboard_listen,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_up(config))
