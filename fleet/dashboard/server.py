"""The dashboard's HTTPS port: aiohttp in the control plane's own event loop, beside
grpc.aio, with the server's certificate.

Every page and every action is a call to the API's own handlers (``FleetService``),
made with a ``LocalCall`` that carries the signed-in identity: the same role checks
(``auth.rpc``), the same reads of the informer's state, the same writes. Nothing here
decides what a change does; it shapes answers for pages (``views``) and keeps the
browser's session (``sessions``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web
from cryptography import x509

from fleet.controlplane.api import FleetService
from fleet.controlplane.auth import ROLE_PERMISSIONS, Permission, check
from fleet.dashboard.actions import Call, Refused, app_action, call_as, host_action
from fleet.dashboard.limits import SignInLimiter, StreamLimiter, client_of, retry_header
from fleet.dashboard.live import MIN_INTERVAL, ChangeHub, EventFeed, UsageHistory
from fleet.dashboard.sessions import (
    COOKIE,
    CSRF_HEADER,
    DEFAULT_SESSION_SECONDS,
    Session,
    SessionSigner,
    cookie_attributes,
    csrf_problem,
    new_session,
)
from fleet.dashboard.views import app_detail, app_rows, event_rows, host_rows
from fleet.errors import InvalidArgument, PermissionDenied
from fleet.pki.subjects import Identity, Kind, Role, identity_from_pem, serial_of
from fleet.proto import fleet_pb2 as pb
from fleet.secrets import SecretBox
from fleet.store import EventLog, Informer

__all__ = ["Dashboard", "DashboardConfig"]

log = logging.getLogger(__name__)


# Nothing but this origin's own files; no inline script or style (bars are <meter>s).
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it Chromium sends "Origin: null" with a form's POST, and the
    # sign-in's Origin check would refuse our own page.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000",
}

PAGES = ("pool", "apps", "events", "upgrade")
# Seconds between an idle event stream's comments: a closed page's stream notices its
# socket is gone (and frees its place: limits.StreamLimiter) at the latest after this.
_HEARTBEAT = 15.0
# The signed-in session, set on the request by the _signed_in middleware (a typed key:
# aiohttp warns about string keys).
_SESSION = web.RequestKey("session", Session)


@dataclass(frozen=True)
class DashboardConfig:
    listen: str  # HOST:PORT
    session_seconds: float = DEFAULT_SESSION_SECONDS


def _identity(session: Session) -> Identity:
    return Identity(kind=Kind.client, name=session.name, role=Role(session.role))


def _peer(request: web.Request) -> str:
    return f"https {request.remote or '?'}"


def _package_dir(name: str) -> str:
    return str(importlib.resources.files("fleet.dashboard") / name)


class Dashboard:
    """``start()`` binds and serves (the port it got); ``stop()`` ends every stream."""

    def __init__(
        self,
        config: DashboardConfig,
        api: FleetService,
        informer: Informer,
        events: EventLog,
        tls: ssl.SSLContext,
        secrets_key: SecretBox | None = None,
    ) -> None:
        self.config = config
        self._api = api
        self._informer = informer
        self._tls = tls
        # Derived from the pool's secrets key: a session is good on every replica.
        self._signer = SessionSigner.for_pool(secrets_key)
        self._signins = SignInLimiter()
        self.streams = StreamLimiter()
        self.usage = UsageHistory()
        self.hub = ChangeHub(informer, self.usage)
        self.feed = EventFeed(events, lambda: self.hub.publish(["events"]))
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_package_dir("templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._streams: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._headers, self._signed_in])
        app.router.add_get("/signin", self._signin_page)
        app.router.add_post("/signin", self._signin)
        app.router.add_post("/signout", self._signout)
        app.router.add_get("/", self._home)
        app.router.add_get("/live", self._live)
        for page in PAGES:
            app.router.add_get(f"/{page}", self._page)
        app.router.add_get("/apps/{app}", self._page)
        app.router.add_post("/api/apps/{app}/{action}", self._app_action)
        app.router.add_post("/api/hosts/{host}/{action}", self._host_action)
        app.router.add_static("/static", _package_dir("static"), append_version=True)
        app.on_shutdown.append(self._end_streams)
        return app

    async def start(self) -> int:
        host, _, port = self.config.listen.rpartition(":")
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]") or None, int(port), ssl_context=self._tls)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = int(self._runner.addresses[0][1])  # the one it got, for port 0
        self._tasks = [
            asyncio.create_task(self.hub.run(), name="dashboard-changes"),
            asyncio.create_task(self.feed.run(), name="dashboard-events"),
        ]
        return self.port

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _end_streams(self, app: web.Application) -> None:
        for task in list(self._streams):
            task.cancel()

    # -- sessions --------------------------------------------------------------------

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as error:
            response = error
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        if isinstance(response, web.HTTPException):
            raise response
        return response

    def _session(self, request: web.Request) -> Session | None:
        """The request's session if its cookie is ours, unexpired, and what it was
        signed in with still stands (a revoked token or denied certificate ends it)."""
        session = self._signer.open(request.cookies.get(COOKIE), time.time())
        if session is None:
            return None
        state = self._informer.state()
        kind, _, key = session.via.partition(":")
        if kind == "token":
            token = state.tokens.get(key)
            if token is None or token.value.role != session.role:
                return None
        elif kind != "cert" or key in state.denied:
            return None
        return session

    @web.middleware
    async def _signed_in(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in ("/signin", "/signout") or request.path.startswith("/static/"):
            return await handler(request)
        session = self._session(request)
        if session is None:
            if (
                request.path.startswith("/api/")
                or request.path == "/live"
                or _wants_fragment(request)
            ):
                return web.json_response({"error": "sign in first", "signin": True}, status=401)
            raise web.HTTPSeeOther("/signin")
        request[_SESSION] = session
        return await handler(request)

    def _client_certificate(self, request: web.Request) -> tuple[Identity, str, float] | None:
        """The identity, serial and expiry of the client certificate the TLS handshake
        verified against fleet's CA, if the browser presented one."""
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None
        pem = ssl.DER_cert_to_PEM_cert(der).encode()
        try:
            expires = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
            return identity_from_pem(pem), serial_of(pem), expires
        except (InvalidArgument, ValueError):
            return None

    def _render(self, template: str, status: int = 200, **values: Any) -> web.Response:
        html = self._templates.get_template(template).render(**values)
        return web.Response(text=html, status=status, content_type="text/html")

    async def _signin_page(
        self, request: web.Request, error: str = "", status: int = 200
    ) -> web.Response:
        found = self._client_certificate(request)
        certificate = f"{found[0].name} ({found[0].role})" if found and found[0].role else ""
        expired = request.query.get("expired") == "1" and not error
        return self._render(
            "signin.html",
            status=status,
            error=error,
            expired=expired,
            certificate=certificate,
        )

    async def _signin(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Origin") != _origin(request):
            log.warning("dashboard sign-in from %s refused: cross-origin", _peer(request))
            return await self._signin_page(request, "cross-origin sign-in refused", 403)
        now = time.time()
        client = client_of(request.remote)
        # Refused before the credentials are looked at: no more guesses to learn from.
        wait = self._signins.retry_after(client, now)
        if wait is not None:
            log.warning("dashboard sign-in from %s refused: too many failures", _peer(request))
            seconds = retry_header(wait)
            why = f"too many failed sign-ins from {client}: try again in {seconds} s"
            response = await self._signin_page(request, why, 429)
            response.headers["Retry-After"] = seconds
            return response
        form = await request.post()
        lifetime = self.config.session_seconds
        if form.get("method") == "certificate":
            found = self._client_certificate(request)
            if found is None or found[0].kind != Kind.client or found[0].role is None:
                self._signins.failed(client, now)
                return await self._signin_page(request, "no client certificate with a role", 401)
            identity, serial, expires = found
            # Never past the certificate's own expiry: fleet cannot revoke a client's.
            lifetime = max(0.0, min(lifetime, expires - now))
            session = new_session(
                identity.name, identity.role or "", f"cert:{serial}", now, lifetime
            )
        else:
            token = str(form.get("token", "")).strip()
            identity_or_none = self._api.token_identity(token)
            if identity_or_none is None:
                log.warning("dashboard sign-in from %s refused: unknown token", _peer(request))
                self._signins.failed(client, now)
                return await self._signin_page(request, "unknown or revoked token", 401)
            identity = identity_or_none
            token_id = token.split("_")[1]
            session = new_session(
                identity.name, identity.role or "", f"token:{token_id}", now, lifetime
            )
        log.info("dashboard: %s (%s) signed in from %s", session.name, session.role, _peer(request))
        response = web.HTTPSeeOther("/pool")
        response.set_cookie(COOKIE, self._signer.sign(session), **cookie_attributes(lifetime))  # type: ignore[arg-type]
        return response

    async def _signout(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Origin") != _origin(request):
            # Another site may not sign anyone out either (a nuisance, not a breach).
            return web.json_response({"error": "cross-origin request refused"}, status=403)
        session = self._session(request)
        if session is not None:
            log.info("dashboard: %s signed out", session.name)
        response = web.HTTPSeeOther("/signin")
        response.del_cookie(COOKIE, path="/")
        return response

    async def _home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/pool")

    # -- pages -----------------------------------------------------------------------

    async def _call(self, session: Session, request: web.Request, method: Any, message: Any) -> Any:
        """Call an API handler as ``session``'s identity; Refused with its status."""
        return await call_as(_identity(session), _peer(request), method, message)

    async def _view(self, page: str, request: web.Request, session: Session) -> dict[str, Any]:
        api = self._api
        if page == "pool":
            hosts = await self._call(session, request, api.GetHosts, pb.GetRequest())
            upgrade = await self._call(session, request, api.GetUpgrade, pb.GetRequest())
            return {"hosts": host_rows(hosts.hosts, upgrade)}
        if page == "apps":
            apps = await self._call(session, request, api.GetApps, pb.GetRequest())
            return {"apps": app_rows(apps.apps)}
        if page == "app":
            name = request.match_info["app"]
            get = pb.GetRequest(name=name)
            [app] = (await self._call(session, request, api.GetApps, get)).apps
            rollout_request = pb.RolloutRequest(app=name)
            rollout = await self._call(session, request, api.RolloutStatus, rollout_request)
            containers = await self._call(session, request, api.GetContainers, get)
            history = await self._call(session, request, api.RolloutHistory, rollout_request)
            endpoints = await self._call(session, request, api.Endpoints, get)
            detail = app_detail(
                app,
                rollout,
                containers.containers,
                history,
                endpoints,
                [e for e in self.feed.events if e.app == name],
                self.usage.of(name),
            )
            return {"detail": detail}
        if page == "events":
            # The same permission as ``fleet events`` (the Events handler's).
            check(_identity(session), Permission.APPS_READ)
            app, host = request.query.get("app", ""), request.query.get("host", "")
            state = self._informer.state()
            return {
                "events": event_rows(self.feed.events, app, host),
                "app_filter": app,
                "host_filter": host,
                "app_names": sorted(state.apps),
                "host_names": sorted(state.hosts),
            }
        upgrade = await self._call(session, request, api.GetUpgrade, pb.GetRequest())
        return {"upgrade": upgrade}

    async def _page(self, request: web.Request) -> web.StreamResponse:
        session = request[_SESSION]
        page = "app" if "app" in request.match_info else request.path.strip("/")
        try:
            view = await self._view(page, request, session)
            status = 200
        except PermissionDenied as error:
            view, status = {"error": str(error)}, 403
        except Refused as error:
            view, status = {"error": str(error)}, error.status
        permissions = ROLE_PERMISSIONS.get(session.role, frozenset())
        values = {
            "page": page,
            "live": f"_{page}.html" if status == 200 else "_error.html",
            "session": session,
            "can_change_apps": Permission.APPS_WRITE in permissions,
            "can_change_hosts": Permission.HOSTS_WRITE in permissions,
            "error": "",
            **view,
        }
        if _wants_fragment(request):
            return self._render(str(values["live"]), status=status, **values)
        return self._render("page.html", status=status, **values)

    async def _live(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``changed`` (topics) at most every MIN_INTERVAL, and
        ``signin`` when the session ends (the page then goes to sign-in)."""
        session = request[_SESSION]
        refused = self.streams.open(session.csrf)  # the csrf token: one per session
        if refused is not None:
            log.warning("dashboard: %s's event stream refused: %s", session.name, refused)
            return web.json_response(
                {"error": refused}, status=429, headers={"Retry-After": retry_header(_HEARTBEAT)}
            )
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        seen = self.hub.sequence
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
            )
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
            while True:
                remaining = session.expires - time.time()
                if remaining <= 0 or self._session(request) is None:
                    await response.write(b"event: signin\ndata: {}\n\n")
                    break
                try:
                    await asyncio.wait_for(self.hub.wait_past(seen), min(_HEARTBEAT, remaining))
                except TimeoutError:
                    await response.write(b": still here\n\n")
                    continue
                topics = self.hub.changed_since(seen)
                seen = self.hub.sequence
                data = json.dumps({"topics": topics})
                await response.write(f"event: changed\ndata: {data}\n\n".encode())
                await asyncio.sleep(MIN_INTERVAL)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the browser went away, or the server stops
        finally:
            self.streams.close(session.csrf)
            if task is not None:
                self._streams.discard(task)
        return response

    # -- actions ---------------------------------------------------------------------

    async def _act(
        self,
        request: web.Request,
        what: str,
        change: Callable[[Call], Awaitable[str]],
    ) -> web.Response:
        """Check the change came from our own page (CSRF), make it as the session's
        identity, and log who did what with which result."""
        session = request[_SESSION]
        problem = csrf_problem(
            session,
            request.headers.get(CSRF_HEADER),
            request.headers.get("Origin"),
            _origin(request),
        )
        if problem is not None:
            log.warning("dashboard: %s %s: refused: %s", session.name, what, problem)
            return web.json_response({"error": problem}, status=403)
        try:
            result = await change(
                lambda method, message: self._call(session, request, method, message)
            )
        except Refused as error:
            log.warning(
                "dashboard: %s (%s) %s: refused (%d): %s",
                session.name,
                session.role,
                what,
                error.status,
                error,
            )
            return web.json_response({"error": str(error)}, status=error.status)
        except (InvalidArgument, ValueError) as error:
            log.warning("dashboard: %s %s: bad request: %s", session.name, what, error)
            return web.json_response({"error": str(error)}, status=400)
        log.info("dashboard: %s (%s) %s: %s", session.name, session.role, what, result)
        return web.json_response({"message": result})

    async def _app_action(self, request: web.Request) -> web.Response:
        app, action = request.match_info["app"], request.match_info["action"]
        body = await _json_body(request)
        return await self._act(
            request,
            f"{action} app {app}",
            lambda call: app_action(self._api, call, app, action, body),
        )

    async def _host_action(self, request: web.Request) -> web.Response:
        host, action = request.match_info["host"], request.match_info["action"]
        return await self._act(
            request,
            f"{action} host {host}",
            lambda call: host_action(self._api, call, host, action),
        )


def _origin(request: web.Request) -> str:
    return f"https://{request.host}"


def _wants_fragment(request: web.Request) -> bool:
    return request.headers.get("X-Fleet-Fragment") == "1"


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
