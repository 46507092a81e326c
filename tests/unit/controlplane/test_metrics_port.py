"""Who the /metrics port answers (``judge_scrape``), and the port itself on loopback:
HTTPS with the server's certificate, for a client certificate or a bearer token."""

from __future__ import annotations

import json
import ssl
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge

from fleet.controlplane.auth import ROLE_PERMISSIONS, Permission
from fleet.controlplane.metricsport import (
    NO_CREDENTIALS,
    PLAIN_HTTP,
    UNKNOWN_TOKEN,
    MetricsPort,
    judge_scrape,
    metrics_tls_context,
)
from fleet.pki.subjects import Identity, Kind, Role
from fleet.testing.certs import TestPKI
from tests.helpers import scrape

TOKEN = "fleet_abc_secret"


def _tokens(token: str) -> Identity | None:
    return Identity(Kind.client, "token:prom", Role.viewer) if token == TOKEN else None


def _der(pki: TestPKI, kind: str, name: str, role: Role | None = None) -> bytes:
    files = pki.agent(name) if kind == "agent" else pki.client(name, role or Role.viewer)
    return ssl.PEM_cert_to_DER_cert(files.cert.read_text())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


def test_every_role_may_read_metrics_and_only_deployers_and_admins_list_processes() -> None:
    assert {r for r, p in ROLE_PERMISSIONS.items() if Permission.METRICS in p} == {
        "admin",
        "deployer",
        "viewer",
    }
    # `fleet top` shows command lines, which may hold secrets: as `fleet logs`.
    processes = {r for r, p in ROLE_PERMISSIONS.items() if Permission.PROCESSES in p}
    logs = {r for r, p in ROLE_PERMISSIONS.items() if Permission.LOGS in p}
    assert processes == logs == {"admin", "deployer"}


def test_a_scrape_needs_a_client_certificate_or_a_known_token(pki: TestPKI) -> None:
    assert judge_scrape(None, None, _tokens).status == 401
    assert judge_scrape(None, None, _tokens).reason == NO_CREDENTIALS
    assert judge_scrape(None, "Basic cHJvbTpwcm9t", _tokens).reason == NO_CREDENTIALS
    assert judge_scrape(None, "Bearer fleet_abc_wrong", _tokens).reason == UNKNOWN_TOKEN
    allowed = judge_scrape(None, f"Bearer {TOKEN}", _tokens)
    assert (allowed.status, allowed.who) == (200, "viewer 'token:prom'")
    for role in Role:
        verdict = judge_scrape(_der(pki, "client", f"c-{role}", role), None, _tokens)
        assert (verdict.status, verdict.who) == (200, f"{role} 'c-{role}'")
    # A certificate speaks for its holder, whatever token comes with it.
    assert judge_scrape(_der(pki, "client", "c-viewer"), "Bearer x", _tokens).status == 200


def test_an_agent_certificate_is_refused_saying_what_the_port_takes(pki: TestPKI) -> None:
    verdict = judge_scrape(_der(pki, "agent", "h1"), None, _tokens)
    assert verdict.status == 403
    assert "agent certificate 'h1' may not read metrics" in verdict.reason


@pytest.fixture(scope="module")
def port(pki: TestPKI) -> Iterator[str]:
    registry = CollectorRegistry()
    Gauge("fleet_leader", "1 while leading.", registry=registry).set(1)
    served = MetricsPort(registry, metrics_tls_context(pki.server()), _tokens)
    number = served.serve("127.0.0.1:0")
    try:
        yield f"127.0.0.1:{number}"
    finally:
        served.stop()


def test_the_port_serves_https_to_a_client_certificate_or_a_token(port: str, pki: TestPKI) -> None:
    status, body, _ = scrape(port, ca=pki.ca, cert=pki.client("vera", Role.viewer))
    assert status == 200 and "fleet_leader 1.0" in body
    status, body, _ = scrape(port, ca=pki.ca, token=TOKEN)
    assert status == 200 and "fleet_leader 1.0" in body


def test_the_port_refuses_whoever_shows_nothing_or_is_not_a_client(
    port: str, pki: TestPKI, tmp_path: Path
) -> None:
    status, body, headers = scrape(port, ca=pki.ca)
    assert (status, body) == (401, f"{NO_CREDENTIALS}\n")
    assert headers["WWW-Authenticate"] == 'Bearer realm="fleet"'
    assert scrape(port, ca=pki.ca, token="fleet_abc_wrong")[:2] == (401, f"{UNKNOWN_TOKEN}\n")
    status, body, _ = scrape(port, ca=pki.ca, cert=pki.agent("h1"))
    assert status == 403 and "agent certificate 'h1' may not read metrics" in body
    # Plain HTTP is answered with what to do instead.
    assert scrape(port) == (
        400,
        f"{PLAIN_HTTP}\n",
        {
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Length": str(len(PLAIN_HTTP) + 1),
            "Connection": "close",
        },
    )
    # A certificate of another CA, or the server's own (serverAuth only), ends the
    # handshake: nothing is served.
    other = TestPKI(tmp_path / "other")
    for refused in (other.client("eve", Role.admin), pki.server()):
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            scrape(port, ca=pki.ca, cert=refused)


def test_an_insecure_port_serves_plain_http_to_anyone() -> None:
    registry = CollectorRegistry()
    Gauge("fleet_leader", "1 while leading.", registry=registry).set(0)
    served = MetricsPort(registry, None, _tokens)
    number = served.serve("127.0.0.1:0")
    try:
        status, body, _ = scrape(f"127.0.0.1:{number}")
        assert status == 200 and "fleet_leader 0.0" in body
    finally:
        served.stop()


def test_service_discovery_is_json_behind_the_same_credentials(pki: TestPKI) -> None:
    """/v1/sd/http answers what the discovery gives as UTF-8 JSON, to whoever may read
    metrics (its ?app= passed on); a discovery that fails is a 500, /metrics unharmed."""
    asked: list[str] = []

    def discovery(app: str) -> list[dict[str, Any]]:
        asked.append(app)
        if app == "broken":
            raise RuntimeError("a bug")
        return [{"targets": ["10.0.0.1:32768"], "labels": {"__meta_fleet_app": "web"}}]

    registry = CollectorRegistry()
    Gauge("fleet_leader", "1 while leading.", registry=registry).set(1)
    served = MetricsPort(registry, metrics_tls_context(pki.server()), _tokens, discovery)
    address = f"127.0.0.1:{served.serve('127.0.0.1:0')}"
    try:
        status, body, headers = scrape(address, ca=pki.ca, token=TOKEN, path="/v1/sd/http?app=web")
        assert (status, headers["Content-Type"]) == (200, "application/json")
        assert json.loads(body) == discovery("web")
        assert scrape(address, ca=pki.ca, path="/v1/sd/http")[0] == 401
        assert asked == ["web", "web"]  # the refused one never reached it
        status, body, _ = scrape(address, ca=pki.ca, token=TOKEN, path="/v1/sd/http?app=broken")
        assert (status, body) == (500, "service discovery failed\n")
        assert "fleet_leader 1.0" in scrape(address, ca=pki.ca, token=TOKEN)[1]
    finally:
        served.stop()
