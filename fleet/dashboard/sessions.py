"""Dashboard sessions: a signed cookie that says who signed in, how and until when, and
the checks every change must pass (CSRF token, Origin). Pure: time is a parameter.

The cookie is ``<payload>.<mac>``, both base64url: the payload is JSON, the mac an
HMAC-SHA256 over it. Its key is derived (HKDF, ``SESSION_KEY_INFO``) from the pool's
secrets key, which every control-plane replica holds already: a cookie one replica
signed is good on every other, and after a restart. The payload holds no secret: a
token's id (to notice its revocation), never the token itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass

from fleet.secrets import SecretBox

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "DEFAULT_SESSION_SECONDS",
    "SESSION_KEY_INFO",
    "Session",
    "SessionSigner",
    "cookie_attributes",
    "csrf_problem",
    "new_session",
]

COOKIE = "fleet_session"
CSRF_HEADER = "X-CSRF-Token"
DEFAULT_SESSION_SECONDS = 8 * 3600.0
# HKDF's info: names this use of the secrets key, so the derived key is no other use's.
SESSION_KEY_INFO = b"fleet-dashboard-session"


@dataclass(frozen=True)
class Session:
    """Who signed in (the identity the API's role checks see), with what, and until."""

    name: str  # as the API names the caller: "token:ci" or a certificate's name
    role: str  # admin | deployer | viewer
    via: str  # "token:<id>" or "cert:<serial>": what to re-check on every request
    expires: float  # epoch seconds
    csrf: str  # sent back by the page with every change


def new_session(name: str, role: str, via: str, now: float, lifetime: float) -> Session:
    return Session(name, role, via, now + lifetime, secrets.token_urlsafe(24))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs sessions into cookie values and opens them again (None: forged, damaged or
    expired, all of which send the browser back to sign-in)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    @classmethod
    def for_pool(cls, secrets_key: SecretBox | None) -> SessionSigner:
        """The signer every replica sharing ``secrets_key`` has alike; without one (a
        server with no --secrets-key-file), a key of this process alone."""
        if secrets_key is None:
            return cls()
        return cls(secrets_key.derive(SESSION_KEY_INFO))

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def sign(self, session: Session) -> str:
        payload = _b64(json.dumps(asdict(session), separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def open(self, value: str | None, now: float) -> Session | None:
        if not value or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            session = Session(**json.loads(_unb64(payload)))
        except (ValueError, TypeError, binascii.Error):
            return None
        return session if now < session.expires else None


def cookie_attributes(max_age: float) -> dict[str, str | int | bool]:
    """The cookie's attributes (aiohttp's ``set_cookie`` keywords): sent over HTTPS only,
    never readable by scripts, never sent by another site's request, gone at expiry."""
    return {
        "secure": True,
        "httponly": True,
        "samesite": "Strict",
        "path": "/",
        "max_age": max(0, int(max_age)),
    }


def csrf_problem(
    session: Session, sent_token: str | None, origin: str | None, own_origin: str
) -> str | None:
    """Why a change must be refused, or None: the page must send the session's CSRF
    token, and the browser must say the request comes from this very origin (a missing
    Origin is refused too: every browser sends one with a POST made by script)."""
    if origin is None or origin != own_origin:
        return f"cross-origin request refused (Origin {origin or 'missing'})"
    if not sent_token or not hmac.compare_digest(sent_token, session.csrf):
        return "missing or wrong CSRF token: reload the page"
    return None
