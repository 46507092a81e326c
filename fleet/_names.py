"""DNS labels (RFC 1123), the one form of fleet's names: apps, secrets, tokens; and the
name a replica's container is given.

The spec checks an app file's names with it and the key layout (``fleet.store.keys``)
checks every name before it becomes a key, so both accept exactly the same names. It
imports nothing of fleet, so anything can use it.
"""

from __future__ import annotations

import re

__all__ = [
    "DNS_LABEL",
    "DNS_LABEL_PATTERN",
    "DNS_LABEL_SCHEMA",
    "DNS_LABEL_TEXT",
    "container_name",
    "is_dns_label",
]

# Without capturing groups: the key layout builds each folder's pattern out of it.
DNS_LABEL_PATTERN = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# \A...\Z rather than ^...$: "$" would also accept a trailing newline.
DNS_LABEL = re.compile(rf"\A{DNS_LABEL_PATTERN}\Z")
DNS_LABEL_SCHEMA = f"^{DNS_LABEL_PATTERN}$"  # the same, as a JSON Schema (ECMA-262) pattern
DNS_LABEL_TEXT = (
    "a DNS label (lowercase letters, digits and '-', at most 63 characters, "
    "starting and ending with a letter or digit)"
)


def is_dns_label(s: str) -> bool:
    """Whether ``s`` is an RFC 1123 DNS label, the form of app names."""
    return DNS_LABEL.match(s) is not None


def container_name(app: str, slot: int, spec_hash: str) -> str:
    """``web.0.1a2b3c4d``: readable, and distinct per template so a replacement can be
    created before the old container is removed. An agent names a replica's container
    so (unless another pool holds the name); the control plane stores a report of a
    container so named without its name."""
    return f"{app}.{slot}.{spec_hash[:8]}"
