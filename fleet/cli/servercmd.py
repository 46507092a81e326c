"""``fleet server``: the control plane's options turned into its config
(``fleet.controlplane.server``, imported only when it starts), run in the foreground
(``lifecycle``: SIGTERM, systemd's readiness). Every option also comes from
``FLEET_<OPTION>`` and a ``--config`` file (``daemonconfig``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fleet.cli import lifecycle
from fleet.cli.daemonconfig import ConfigOpt
from fleet.cli.logformat import LogFormat, LogFormatOpt, LogLevel, daemon_logging
from fleet.cli.options import duration_option, memory_option, share_option
from fleet.cli.output import fail
from fleet.transport import TlsFiles, client_transport

if TYPE_CHECKING:
    from fleet.controlplane.fleetlockport import FleetLockConfig

__all__ = ["server"]


def server(
    etcd: Annotated[
        str, typer.Option("--etcd", help="etcd endpoint(s), HOST:PORT[,HOST:PORT...].")
    ] = "127.0.0.1:2379",
    listen: Annotated[
        str, typer.Option("--listen", help="gRPC listen address.")
    ] = "127.0.0.1:7400",
    prefix: Annotated[str, typer.Option("--prefix", help="etcd key prefix.")] = "/fleet/",
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="CA that signs agents' and clients' certs.")
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            help="Server certificate. Default: server-controlplane.crt in $FLEET_PKI_DIR.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key", help="Server key. Default: server-controlplane.key in $FLEET_PKI_DIR."
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Serve plaintext with no authentication (tests only)."),
    ] = False,
    etcd_cacert: Annotated[Path | None, typer.Option("--etcd-cacert", help="etcd's CA.")] = None,
    etcd_cert: Annotated[
        Path | None, typer.Option("--etcd-cert", help="Client cert for etcd.")
    ] = None,
    etcd_key: Annotated[
        Path | None, typer.Option("--etcd-key", help="Client key for etcd.")
    ] = None,
    etcd_max_txn_ops: Annotated[
        int,
        typer.Option(
            "--etcd-max-txn-ops",
            min=16,
            help="etcd's --max-txn-ops (checked at start): an apply is one transaction, "
            "so at most half as many new apps fit in one.",
        ),
    ] = 128,
    token_listen: Annotated[
        str | None,
        typer.Option(
            "--token-listen",
            help="Also serve clients with bearer tokens (no client certificate) here, and "
            "hosts that join with a join token (fleet agent --join).",
        ),
    ] = None,
    read_listen: Annotated[
        str | None,
        typer.Option(
            "--read-listen",
            help="Also answer reads (get, ps, endpoints, rollout status) here, from a "
            "thread of their own: they stay fast while the main port is busy with a large "
            "apply. Same TLS as --listen; clients use it with FLEET_READ_SERVER or a "
            "context's read-server. An answer may be up to a moment older than the main "
            "port's.",
        ),
    ] = None,
    ca_key: Annotated[
        Path | None,
        typer.Option(
            "--ca-key",
            help="The key of --tls-ca (the ca.key of `fleet certs init`): with it the "
            "control plane signs the certificates of hosts joining with a token and of "
            "agents renewing theirs. Keep it only on control-plane machines, readable by "
            "the server alone; without it hosts get certificates by `fleet certs issue`.",
        ),
    ] = None,
    agent_cert_ttl: Annotated[
        str,
        typer.Option(
            "--agent-cert-ttl",
            help="The life of the agent certificates it signs (agents renew theirs after "
            "2/3 of it).",
        ),
    ] = "30d",
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help="Serve Prometheus /metrics here, e.g. :7401: HTTPS with the server's "
            "certificate, to a client certificate or a bearer token (fleet tokens create).",
        ),
    ] = None,
    metrics_insecure: Annotated[
        bool,
        typer.Option(
            "--metrics-insecure",
            help="Serve /metrics over plain HTTP to anyone who reaches it instead.",
        ),
    ] = False,
    dashboard_listen: Annotated[
        str | None,
        typer.Option(
            "--dashboard-listen",
            help="Serve the web dashboard here, e.g. 0.0.0.0:7443: HTTPS with the server's "
            "certificate; sign in with a token (fleet tokens create NAME --role viewer) or a "
            "client certificate. Example: fleet server --dashboard-listen 127.0.0.1:7443, "
            "then open https://127.0.0.1:7443/.",
        ),
    ] = None,
    dashboard_session_ttl: Annotated[
        str,
        typer.Option(
            "--dashboard-session-ttl",
            help="How long a dashboard sign-in lasts (then the page asks again).",
        ),
    ] = "8h",
    reflection: Annotated[
        bool,
        typer.Option("--reflection", help="Serve gRPC server reflection (grpcurl) too."),
    ] = False,
    fleetlock_listen: Annotated[
        str | None,
        typer.Option(
            "--fleetlock-listen",
            help="Serve FleetLock (Zincati's reboot lock) on ADDR:PORT: HTTPS with the "
            "server's certificate when it has TLS.",
        ),
    ] = None,
    fleetlock_group_label: Annotated[
        str,
        typer.Option(
            "--fleetlock-group-label",
            help="The host label naming a host's FleetLock group (without it: default).",
        ),
    ] = "",
    fleetlock_tokens: Annotated[
        Path | None,
        typer.Option(
            "--fleetlock-tokens",
            help="A file of 'GROUP TOKEN' lines: a group's token (Basic or Bearer) may ask "
            "for that group's hosts.",
        ),
    ] = None,
    fleetlock_insecure: Annotated[
        bool,
        typer.Option(
            "--fleetlock-insecure",
            help="Let anyone ask FleetLock, without a token or an agent certificate.",
        ),
    ] = False,
    host_down_after: Annotated[
        str,
        typer.Option("--host-down-after", help="A host silent this long is down (whole seconds)."),
    ] = "15s",
    reschedule_after: Annotated[
        str | None,
        typer.Option(
            "--reschedule-after",
            help="Then, after this long, its replicas are placed elsewhere (default: the same).",
        ),
    ] = None,
    hold_moves_when_down: Annotated[
        str,
        typer.Option(
            "--hold-moves-when-down",
            help="While this share of the hosts (at least 3) is down at once, their replicas "
            "stay put: so many silent at once is likelier this server cut off from them "
            "than the machines lost ('off': never held).",
        ),
    ] = "55%",
    heartbeat_interval: Annotated[
        str,
        typer.Option(
            "--heartbeat-interval", help="How often agents report (their liveness and status)."
        ),
    ] = "2s",
    leader_ttl: Annotated[
        str,
        typer.Option(
            "--leader-ttl",
            help="Run several servers against one etcd: one leads (runs the controllers), "
            "all serve. A dead leader is replaced this long after its last lease renewal.",
        ),
    ] = "4s",
    compact_interval: Annotated[
        str,
        typer.Option(
            "--compact-interval",
            help="The leader compacts etcd's history this often, keeping one interval "
            "of it (0: never, e.g. when etcd auto-compacts).",
        ),
    ] = "5m",
    server_id: Annotated[
        str | None,
        typer.Option(
            "--server-id", help="This replica's name in the election (default: host-pid)."
        ),
    ] = None,
    secrets_key_file: Annotated[
        Path | None,
        typer.Option(
            "--secrets-key-file",
            help="Key that encrypts secrets at rest (32 random bytes, base64). Every "
            "replica needs the same file: the pool's first replica makes it if missing, "
            "any other refuses to start without it.",
        ),
    ] = None,
    max_host_cpus: Annotated[
        float | None,
        typer.Option(
            "--max-host-cpus",
            min=0,
            help="The most cores any host is counted for, whatever its agent claims "
            "(default: as claimed). Give every replica the same.",
        ),
    ] = None,
    max_host_memory: Annotated[
        str | None,
        typer.Option(
            "--max-host-memory",
            help="The most memory any host is counted for, e.g. 256Gi (default: as claimed).",
        ),
    ] = None,
    log_level: LogLevel = "info",
    log_format: LogFormatOpt = LogFormat.auto,
    config_file: ConfigOpt = None,  # read by its callback, into the defaults of the rest
) -> None:
    """Run the control plane (API for the CLI, stream for agents) against etcd.

    TLS is required: --tls-ca/--tls-cert/--tls-key (or FLEET_TLS_*), else ca.crt,
    server-controlplane.crt and server-controlplane.key in $FLEET_PKI_DIR (the names
    `fleet certs issue server controlplane` writes); --insecure must be asked for.
    Every option can also be set by its FLEET_* variable or in the --config file.
    SIGTERM stops it cleanly (a leader hands over at once); under systemd (Type=notify)
    it says READY=1 once it serves.

    Examples:
      fleet server --etcd 10.0.0.5:2379 --listen 0.0.0.0:7400
      fleet server --dashboard-listen 0.0.0.0:7443  # then open https://HOST:7443/
      fleet server --read-listen 0.0.0.0:7403  # reads: fleet context add --help
    """
    from fleet.controlplane.mallocpolicy import limit_malloc_arenas
    from fleet.controlplane.registration import HostLimits
    from fleet.controlplane.server import ServerConfig, run_server

    machine_logs = daemon_logging(log_level, log_format)
    transport = client_transport(
        ca=tls_ca, cert=tls_cert, key=tls_key, insecure=insecure, kind="server", name="controlplane"
    )
    etcd_files = (etcd_cacert, etcd_cert, etcd_key)
    if any(etcd_files) and not all(etcd_files):
        fail("etcd TLS needs all of --etcd-cacert, --etcd-cert and --etcd-key")
    config = ServerConfig(
        etcd=[e for e in etcd.split(",") if e],
        transport=transport,
        etcd_tls=TlsFiles(*etcd_files) if all(etcd_files) else None,  # type: ignore[arg-type]
        listen=listen,
        prefix=prefix,
        secrets_key=secrets_key_file,
        host_lease_ttl=max(1, round(duration_option("--host-down-after", host_down_after))),
        token_listen=token_listen,
        read_listen=read_listen,
        ca_key=ca_key,
        agent_cert_ttl=duration_option("--agent-cert-ttl", agent_cert_ttl),
        metrics_listen=metrics_listen,
        metrics_insecure=metrics_insecure,
        reflection=reflection,
        dashboard_listen=dashboard_listen,
        dashboard_session_seconds=max(
            1.0, duration_option("--dashboard-session-ttl", dashboard_session_ttl)
        ),
        fleetlock=_fleetlock_config(
            fleetlock_listen, fleetlock_group_label, fleetlock_tokens, fleetlock_insecure
        ),
        reschedule_after=duration_option("--reschedule-after", reschedule_after)
        if reschedule_after
        else None,
        hold_moves_when_down=share_option("--hold-moves-when-down", hold_moves_when_down),
        leader_ttl=max(2, round(duration_option("--leader-ttl", leader_ttl))),
        heartbeat_seconds=max(0.1, duration_option("--heartbeat-interval", heartbeat_interval)),
        compact_interval=duration_option("--compact-interval", compact_interval),
        server_id=server_id or "",
        etcd_max_txn_ops=etcd_max_txn_ops,
        host_limits=HostLimits(
            cpus=max_host_cpus,
            memory=memory_option("--max-host-memory", max_host_memory) if max_host_memory else None,
        ),
    )
    # Before any thread of gRPC's starts: one malloc arena for all (``mallocpolicy``).
    limit_malloc_arenas()
    lifecycle.run_daemon(
        lambda life: run_server(config, ready=life.ready, stop=life.stopping),
        log_errors=machine_logs,
    )


def _fleetlock_config(
    listen: str | None, group_label: str, tokens_file: Path | None, insecure: bool
) -> FleetLockConfig | None:
    """FleetLock's settings from the server's options (None: not served)."""
    from fleet.controlplane.fleetlock import parse_tokens
    from fleet.controlplane.fleetlockport import FleetLockConfig

    if listen is None:
        if tokens_file or insecure or group_label:
            fail(
                "--fleetlock-tokens, --fleetlock-insecure and --fleetlock-group-label "
                "need --fleetlock-listen"
            )
        return None
    tokens: dict[str, str] = {}
    if tokens_file is not None:
        try:
            tokens = parse_tokens(tokens_file.read_text())
        except (OSError, ValueError) as error:
            fail(f"--fleetlock-tokens {tokens_file}: {error}")
    return FleetLockConfig(listen=listen, group_label=group_label, tokens=tokens, insecure=insecure)
