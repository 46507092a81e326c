"""The options every command that talks to the control plane takes, added in one place.

``@connected`` gives a command ``--server``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``,
``--token``, ``--context`` and ``--insecure``, and hands it a ``Connection`` in place of
those parameters. Flags win over ``FLEET_*`` variables, which win over the context.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from fleet.client import FleetClient, read_servers_from, servers_from
from fleet.contexts import Contexts
from fleet.transport import client_transport

__all__ = ["CONNECTION", "Connection", "connected"]

R = TypeVar("R")

# Listed apart, after each command's own options, as kubectl's "global" flags are.
CONNECTION_PANEL = "Connection"

_OPTIONS: dict[str, tuple[Any, Any]] = {
    "server": (
        Annotated[
            str | None,
            typer.Option(
                "--server",
                "-s",
                help="Control plane address(es), HOST:PORT[,HOST:PORT...]. Default: "
                "$FLEET_SERVER or 127.0.0.1:7400.",
                show_default=False,
                rich_help_panel=CONNECTION_PANEL,
            ),
        ],
        None,
    ),
    "tls_ca": (
        Annotated[
            Path | None,
            typer.Option(
                "--tls-ca",
                help="CA certificate (PEM). Default: $FLEET_TLS_CA, or ca.crt in "
                "$FLEET_PKI_DIR or ~/.config/fleet/pki (never the current directory).",
                show_default=False,
                rich_help_panel=CONNECTION_PANEL,
            ),
        ],
        None,
    ),
    "tls_cert": (
        Annotated[
            Path | None,
            typer.Option(
                "--tls-cert",
                help="Client certificate. Default: $FLEET_TLS_CERT, or client-admin.crt "
                "in the PKI dir.",
                show_default=False,
                rich_help_panel=CONNECTION_PANEL,
            ),
        ],
        None,
    ),
    "tls_key": (
        Annotated[
            Path | None,
            typer.Option(
                "--tls-key",
                help="Client key. Default: $FLEET_TLS_KEY, or client-admin.key in the PKI dir.",
                show_default=False,
                rich_help_panel=CONNECTION_PANEL,
            ),
        ],
        None,
    ),
    "token": (
        Annotated[
            str | None,
            typer.Option(
                "--token",
                help="A bearer token (fleet tokens create) for the server's token port, "
                "instead of a client certificate. Default: $FLEET_TOKEN.",
                show_default=False,
                rich_help_panel=CONNECTION_PANEL,
            ),
        ],
        None,
    ),
    "context": (
        Annotated[
            str | None,
            typer.Option(
                "--context",
                help="The context to connect with (fleet context list). Default: "
                "$FLEET_CONTEXT, or the current one.",
                show_default=False,
                rich_help_panel=CONNECTION_PANEL,
            ),
        ],
        None,
    ),
    "insecure": (
        Annotated[
            bool,
            typer.Option(
                "--insecure",
                help="Plaintext, no authentication (only for a server started with --insecure).",
                rich_help_panel=CONNECTION_PANEL,
            ),
        ],
        False,
    ),
}


@dataclass(frozen=True)
class Connection:
    server: str | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    token: str | None
    insecure: bool
    context: str | None = None

    def resolved(self) -> Connection:
        """These options with the context's filling what neither a flag nor a FLEET_*
        variable gave (``fleet.contexts``)."""
        context = Contexts.load().chosen(self.context)
        if context is None:
            return self
        server = self.server or os.environ.get("FLEET_SERVER") or context.server or None
        credentials_given = any((self.tls_ca, self.tls_cert, self.tls_key, self.token))
        credentials_given = credentials_given or self.insecure
        credentials_given = credentials_given or any(os.environ.get(v) for v in _CREDENTIAL_ENV)
        if credentials_given:
            return replace(self, server=server)
        return replace(
            self,
            server=server,
            tls_ca=Path(context.tls_ca) if context.tls_ca else None,
            tls_cert=Path(context.tls_cert) if context.tls_cert else None,
            tls_key=Path(context.tls_key) if context.tls_key else None,
            token=context.token or None,
        )

    def client(self, *, timeout: float = 30.0) -> FleetClient:
        """A client for the servers these options name; ``timeout`` bounds each call.
        Reads go to the read ports of ``FLEET_READ_SERVER``, else of the context when the
        servers are the context's; never with a token (the read port takes certificates)."""
        chosen = self.resolved()
        transport = client_transport(
            ca=chosen.tls_ca,
            cert=chosen.tls_cert,
            key=chosen.tls_key,
            insecure=chosen.insecure,
            token=chosen.token,
        )
        context = Contexts.load().chosen(self.context)
        theirs = context.read_server if context and context.server == chosen.server else ""
        reads = [] if chosen.token else read_servers_from(theirs or None)
        return FleetClient(
            servers_from(chosen.server), transport, timeout=timeout, read_servers=reads
        )


# The connection options given before the verb (``fleet -s HOST get apps``): the
# defaults of the verb's own, which win when given too.
_BEFORE_THE_VERB: dict[str, Any] = {}


def root_options() -> dict[str, tuple[Any, Any]]:
    """The connection options, for the root command (``fleet [OPTIONS] VERB``)."""
    return dict(_OPTIONS)


def set_before_the_verb(options: dict[str, Any]) -> None:
    _BEFORE_THE_VERB.clear()
    _BEFORE_THE_VERB.update({k: v for k, v in options.items() if v not in (None, False)})


def connected(command: Callable[..., R]) -> Callable[..., R]:
    """Replace the command's ``conn: Connection`` parameter by the connection options
    (given after the verb, else before it)."""
    signature = inspect.signature(command, eval_str=True)
    kept = [p for name, p in signature.parameters.items() if name != "conn"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint)
        for name, (hint, default) in _OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        options = {name: kwargs.pop(name) for name in _OPTIONS}
        for name, value in _BEFORE_THE_VERB.items():
            if options[name] in (None, False):
                options[name] = value
        return command(*args, conn=Connection(**options), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
    return wrapper


# The default a command's ``conn`` parameter declares; ``@connected`` always passes the
# real one, built from the options.
CONNECTION = Connection(
    server=None, tls_ca=None, tls_cert=None, tls_key=None, token=None, insecure=False
)
# Credentials from the environment: a context's do not mix with them.
_CREDENTIAL_ENV = (
    "FLEET_TLS_CA",
    "FLEET_TLS_CERT",
    "FLEET_TLS_KEY",
    "FLEET_TOKEN",
    "FLEET_PKI_DIR",
)
