"""``fleet policy``: what containers may ask of hosts, cluster-wide; and the ``--allow``
options ``fleet policy set`` and ``fleet agent`` share (an agent must allow the same).

What each word allows is in ``fleet.policy``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from fleet.cli.connection import CONNECTION, Connection, connected
from fleet.cli.output import Format, OutputOpt, console, fail, print_one, safe
from fleet.policy import ALLOW_WORDS, Policy
from fleet.proto import fleet_pb2 as pb

__all__ = [
    "AllowBindOpt",
    "AllowCapOpt",
    "AllowDeviceOpt",
    "AllowOpt",
    "app",
    "policy_from_options",
]


app = typer.Typer(
    help="What containers may ask of hosts (privileged, host network/PID, capabilities, "
    "bind mounts, devices). By default: nothing.",
    no_args_is_help=True,
)

AllowOpt = Annotated[
    list[str] | None,
    typer.Option("--allow", help="privileged, host-network or host-pid (repeat)."),
]
AllowCapOpt = Annotated[
    list[str] | None, typer.Option("--allow-cap", help="A capability, or ALL (repeat).")
]
AllowBindOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-bind", help="Host path prefix that may be bind-mounted (repeat)."),
]
AllowDeviceOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-device", help="Host device path prefix that may be passed in (repeat)."),
]


def policy_from_options(
    allow: list[str], caps: list[str], binds: list[str], devices: list[str] | None = None
) -> Policy:
    """The policy the ``--allow``, ``--allow-cap``, ``--allow-bind`` and
    ``--allow-device`` values say."""
    flags = {}
    for word in allow:
        if word not in ALLOW_WORDS:
            fail(f"--allow {word!r}: use one of {', '.join(ALLOW_WORDS)}")
        flags[ALLOW_WORDS[word]] = True
    return Policy(
        **flags,
        allow_capabilities=[c.upper() for c in caps],
        allow_bind_mounts=binds,
        allow_devices=devices or [],
    )


def _print_policy(policy: pb.Policy, output: Format) -> None:
    if output in (Format.json, Format.yaml):
        print_one(policy, output)
        return
    allowed = [w for w, f in ALLOW_WORDS.items() if getattr(policy, f)]
    allowed += [f"capability {c}" for c in policy.allow_capabilities]
    allowed += [f"bind mounts under {p}" for p in policy.allow_bind_mounts]
    allowed += [f"devices under {p}" for p in policy.allow_devices]
    what = ", ".join(allowed) or "nothing beyond the default"
    console.print(safe(f"containers may ask for: {what}"))


@app.command("get")
@connected
def policy_get(
    conn: Connection = CONNECTION,
    output: OutputOpt = Format.table,
) -> None:
    """Show the cluster's container policy.

    Examples:
      fleet policy get
      fleet policy get -o json"""
    with conn.client() as client:
        _print_policy(client.policy(), output)


@app.command("set")
@connected
def policy_set(
    allow: AllowOpt = None,
    allow_cap: AllowCapOpt = None,
    allow_bind: AllowBindOpt = None,
    allow_device: AllowDeviceOpt = None,
    conn: Connection = CONNECTION,
) -> None:
    """Replace the cluster's container policy (admin only); with no option, back to
    allowing nothing. Agents must allow the same (fleet agent --allow ...).

    Examples:
      fleet policy set --allow privileged --allow-bind /srv/data
      fleet policy set                  # back to allowing nothing"""
    policy = policy_from_options(allow or [], allow_cap or [], allow_bind or [], allow_device)
    with conn.client() as client:
        _print_policy(client.set_policy(policy.to_proto()), Format.table)
