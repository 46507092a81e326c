"""The id Zincati (Fedora CoreOS's updater) gives itself in FleetLock requests, which
an agent reports as its host's ``zincati_id`` fact so the control plane can tell which
host asks. Pure."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

__all__ = ["APP_ID", "zincati_id", "zincati_id_of"]

# Zincati's application id: its client id is /etc/machine-id made app-specific with it
# (systemd's sd_id128_get_machine_app_specific; Zincati's src/identity/mod.rs APP_ID).
APP_ID = bytes.fromhex("de35106b6ec24688b63afddaa156679b")


def zincati_id(machine_id: str) -> str:
    """The id Zincati sends for a host with this /etc/machine-id: systemd's
    app-specific id (HMAC-SHA256 keyed by the machine id's 16 bytes over the app id's,
    the first 16 bytes made a UUID v4), as 32 lowercase hex digits. ValueError if
    ``machine_id`` is not 32 hex digits."""
    raw = machine_id.strip().replace("-", "")
    if len(raw) != 32:
        raise ValueError("a machine id is 32 hex digits")
    digest = bytearray(hmac.new(bytes.fromhex(raw), APP_ID, hashlib.sha256).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def zincati_id_of(machine_id_file: Path) -> str | None:
    """The Zincati id of the host whose machine id is in ``machine_id_file`` (None if
    it is unreadable or not a machine id)."""
    try:
        return zincati_id(machine_id_file.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
