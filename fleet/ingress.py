"""An edge host's ingress address, checked alike where the agent reads its option and
where the control plane registers it. Apart from both so the agent need not import the
control plane (``fleet.controlplane`` brings the scheduler's numpy and the servers).
"""

from __future__ import annotations

import ipaddress

from fleet.errors import InvalidArgument

__all__ = ["check_ingress"]


def check_ingress(value: str) -> str:
    """An edge's listen address ``ADDR:PORT`` (``[ADDR]:PORT`` for IPv6) in normal form,
    "" for none; InvalidArgument saying what is expected otherwise."""
    if not value:
        return ""
    text, _, port = value.rpartition(":")
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
        number = int(port) if port.isdigit() else 0
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise InvalidArgument(
            "the ingress address must be ADDR:PORT, like 0.0.0.0:80 or [::]:80 (an IP "
            f"address and a port from 1 to 65535), got {value[:64]!r}"
        )
    return f"[{address}]:{number}" if address.version == 6 else f"{address}:{number}"
