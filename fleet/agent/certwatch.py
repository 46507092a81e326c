"""Certificate renewal without a restart: the agent notices that its certificate files
changed (``fleet certs issue agent HOST --force`` rewrote them) and reconnects with the
new ones.

Every connection reads the files afresh (``Transport.channel_credentials``); this says
when the files changed since the connection was made and make a set that can be used
(the key matches the certificate, the CA signed it, it is valid now), so that the
agent ends its stream and opens the next one with them. A set caught half-written (the
certificate rewritten, the key not yet) is said once and looked at again when the
files change again.
"""

from __future__ import annotations

import hashlib
import logging

from fleet.errors import FleetError
from fleet.pki.credentials import load_credentials
from fleet.pki.subjects import serial_of
from fleet.transport import TlsFiles

__all__ = ["CertificateWatch", "Stamp", "stamp"]

log = logging.getLogger(__name__)

# A digest of the CA, the certificate and the key: their contents, not their times (a
# file rewritten within one clock tick keeps its mtime), read every few seconds (a few
# KiB).
Stamp = bytes


def stamp(files: TlsFiles) -> Stamp | None:
    """What the three files hold now; None while one of them cannot be read."""
    digest = hashlib.sha256()
    try:
        for path in (files.ca, files.cert, files.key):
            digest.update(path.read_bytes())
            digest.update(b"\0")
    except OSError:
        return None
    return digest.digest()


class CertificateWatch:
    """Tells when the agent's certificate files changed into a new usable set."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._seen = stamp(files)

    def mark(self) -> None:
        """The files as they are now are the ones in use (called before a connection
        reads them: a change in between costs one reconnect more, never one less)."""
        self._seen = stamp(self.files)

    def renewed(self) -> str | None:
        """The serial of the new certificate once the files changed since ``mark`` into
        a set that can be used; None otherwise (unchanged, or not usable: logged)."""
        now = stamp(self.files)
        if now is None or now == self._seen:
            return None
        self._seen = now  # a set that cannot be used is said once, until it changes
        try:
            credentials = load_credentials(self.files.ca, self.files.cert, self.files.key)
        except FleetError as error:
            log.warning(
                "the certificate files changed but cannot be used (yet): %s; the current "
                "connection goes on",
                error,
            )
            return None
        return serial_of(credentials.cert)
