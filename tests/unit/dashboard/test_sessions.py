"""The dashboard's session cookie and CSRF checks: pure, time as a parameter."""

from __future__ import annotations

import pytest

from fleet.dashboard.sessions import (
    SESSION_KEY_INFO,
    Session,
    SessionSigner,
    cookie_attributes,
    csrf_problem,
    new_session,
)
from fleet.secrets import SecretBox, new_key

NOW = 1_800_000_000.0


def _session(lifetime: float = 60.0) -> Session:
    return new_session("token:ci", "viewer", "token:abc123", NOW, lifetime)


def test_a_signed_session_opens_again_until_it_expires() -> None:
    signer = SessionSigner(b"k" * 32)
    session = _session(60)
    cookie = signer.sign(session)
    assert signer.open(cookie, NOW) == session
    assert signer.open(cookie, NOW + 59.9) == session
    assert signer.open(cookie, NOW + 60) is None  # expired: back to sign-in
    assert signer.open(cookie, NOW + 3600) is None


def test_a_forged_or_damaged_cookie_is_refused() -> None:
    signer = SessionSigner(b"k" * 32)
    cookie = signer.sign(_session())
    payload, mac = cookie.split(".")
    # Another key (another server process, or a guess) signs nothing this one accepts.
    assert SessionSigner(b"x" * 32).open(cookie, NOW) is None
    # A payload changed to claim another role, with the old mac.
    admin = SessionSigner(b"other" * 8).sign(
        Session("token:ci", "admin", "token:abc123", NOW + 60, "t")
    )
    assert signer.open(f"{admin.split('.')[0]}.{mac}", NOW) is None
    for broken in ("", "nodot", f"{payload}.{mac}x", f"{payload}x.{mac}", "a.b.c", None):
        assert signer.open(broken, NOW) is None


def test_every_replica_with_the_pools_secrets_key_accepts_the_others_cookies() -> None:
    pool_key = new_key()
    # Two replicas (or one before and after a restart): each loads the same key file.
    first = SessionSigner.for_pool(SecretBox(pool_key))
    second = SessionSigner.for_pool(SecretBox(pool_key))
    session = _session()
    assert second.open(first.sign(session), NOW) == session
    assert first.open(second.sign(session), NOW) == session
    # A replica of another pool (another key) accepts none of them, and neither does a
    # server without a secrets key (a key of its own process).
    for stranger in (SessionSigner.for_pool(SecretBox(new_key())), SessionSigner.for_pool(None)):
        assert stranger.open(first.sign(session), NOW) is None
        assert first.open(stranger.sign(session), NOW) is None


def test_the_session_key_is_derived_not_the_secrets_key_itself() -> None:
    pool_key = new_key()
    box = SecretBox(pool_key)
    derived = box.derive(SESSION_KEY_INFO)
    assert len(derived) == 32 and derived != pool_key
    assert derived == SecretBox(pool_key).derive(SESSION_KEY_INFO)  # deterministic
    assert box.derive(b"another-use") != derived  # the info string separates uses
    # A cookie signed with the raw secrets key is not one the pool's signer accepts.
    assert SessionSigner.for_pool(box).open(SessionSigner(pool_key).sign(_session()), NOW) is None


def test_each_session_has_its_own_csrf_token() -> None:
    assert _session().csrf != _session().csrf
    assert len(_session().csrf) >= 24


@pytest.mark.parametrize(
    ("token", "origin", "refused"),
    [
        ("RIGHT", "https://dash:7443", None),
        ("WRONG", "https://dash:7443", "CSRF"),
        (None, "https://dash:7443", "CSRF"),
        ("", "https://dash:7443", "CSRF"),
        ("RIGHT", "https://evil.example", "cross-origin"),
        ("RIGHT", "http://dash:7443", "cross-origin"),  # not even the same scheme
        ("RIGHT", None, "cross-origin"),  # no Origin at all: refused too
        ("RIGHT", "null", "cross-origin"),
    ],
)
def test_a_change_needs_the_csrf_token_and_our_own_origin(
    token: str | None, origin: str | None, refused: str | None
) -> None:
    session = Session("token:ci", "deployer", "token:abc", NOW + 60, "RIGHT")
    problem = csrf_problem(session, token, origin, "https://dash:7443")
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem


def test_the_cookie_is_secure_http_only_strict_and_expires() -> None:
    attributes = cookie_attributes(3600.5)
    assert attributes == {
        "secure": True,
        "httponly": True,
        "samesite": "Strict",
        "path": "/",
        "max_age": 3600,
    }
    assert cookie_attributes(-5)["max_age"] == 0
