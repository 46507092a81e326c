"""The web dashboard in headless Chromium (Selenium) against a real control plane, etcd
and two agents on namespaced Docker hosts: sign-in, every page, live updates without a
reload, every button (a deployer's scale, pause, resume, restart and undo; an admin's
cordon, uncordon and drain) confirmed in the browser and checked against what etcd
holds and Docker runs, a viewer's change refused by the server, and the ways back to
sign-in (a wrong token, an expired session).

The browser trusts the test server's key alone: Chromium's
``--ignore-certificate-errors-spki-list`` with the hash of the server certificate's
public key (not a blanket ``--ignore-certificate-errors``). Screenshots of each page, at
1280x800, go to $FLEET_SCREENSHOTS (default build/screenshots).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleet.client import FleetClient
from fleet.spec import load_documents
from fleet.store.keys import KeyLayout
from fleet.testing import EtcdServer, HostPool, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from fleet.testing.procs import free_port
from tests.conftest import PoolFactory
from tests.helpers import fleet_containers

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoAlertPresentException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

IMAGE = "fleet-test/dash:v1"
PREFIX = "/e2e-dashboard/"
KEYS = KeyLayout(PREFIX)
SESSION_SECONDS = 25  # short, so that the expiry case waits little; each case signs in anew
WAIT = 30.0
SCREENSHOTS = Path(os.environ.get("FLEET_SCREENSHOTS", "build/screenshots"))


@dataclass
class Pool:
    hosts: HostPool
    server: FleetServerProcess
    client: FleetClient
    url: str
    tokens: dict[str, str]  # role -> token
    etcd: EtcdServer

    def running(self, app: str) -> int:
        return len(self.containers(app))

    def containers(self, app: str, host: int | None = None) -> list[Any]:
        """``app``'s running containers as Docker lists them (on one host, or all)."""
        hosts = self.hosts.hosts if host is None else [self.hosts.hosts[host]]
        return [
            c for h in hosts for c in fleet_containers(h.client(), app) if c.status == "running"
        ]

    def stored(self, key: bytes) -> dict[str, Any]:
        """A record as etcd holds it, read through its JSON gateway (not fleet's API)."""
        request = urllib.request.Request(
            self.etcd.url + "/v3/kv/range",
            data=json.dumps({"key": base64.b64encode(key).decode()}).encode(),
        )
        with urllib.request.urlopen(request, timeout=5, context=self.etcd.ssl_context()) as answer:
            kvs = json.load(answer).get("kvs") or []
        assert kvs, f"{key!r} is not in etcd"
        return dict(json.loads(base64.b64decode(kvs[0]["value"])))


def _spki_hash(cert: Path) -> str:
    """What Chromium's --ignore-certificate-errors-spki-list takes: base64(sha256(SPKI))."""
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def pool(
    docker_hosts: PoolFactory,
    etcd_server: EtcdServer,
    pki: TestPKI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pool]:
    hosts = docker_hosts(2)
    for host in hosts.hosts:
        host.remove_all_containers(label="fleet.app")
        ensure_image(host.client(), "fleet-test/dash", "v1", "dash v1\n")
    logs = tmp_path_factory.mktemp("dashboard")
    dashboard = f"127.0.0.1:{free_port()}"
    extra = ["--dashboard-listen", dashboard, "--dashboard-session-ttl", f"{SESSION_SECONDS}s"]
    server = FleetServerProcess(etcd_server.endpoint, PREFIX, logs, pki, extra_args=extra)
    server.start()
    agents = [
        FleetAgentProcess(
            [server.address],
            h.name,
            h.docker_url,
            logs,
            pki,
            extra_args=["--advertise-address", h.address, "--memory", "2Gi", "--cpus", "2"],
        ).start()
        for h in hosts.hosts
    ]
    client = server.client()
    try:
        server.process.wait_ready(
            lambda: len([h for h in client.hosts() if h.connected]) == 2, 30, what="2 agents"
        )
        tokens = {}
        for role in ("viewer", "deployer", "admin"):
            made = server.cli("tokens", "create", f"dash-{role}", "--role", role)
            assert made.returncode == 0, made.stderr
            tokens[role] = made.stdout.strip()
        apps = "".join(
            f"---\nname: {name}\nimage: {IMAGE}\nreplicas: {n}\n"
            f"resources: {{cpu: 0.1, memory: 16Mi}}\n"
            for name, n in (("web", 2), ("api", 1))
        )
        client.apply(load_documents(apps, "apps.yaml"))
        found = Pool(hosts, server, client, f"https://{dashboard}", tokens, etcd_server)
        wait_until(lambda: found.running("web") == 2, 60, what="web's 2 replicas running")
        yield found
    finally:
        client.close()
        for agent in agents:
            agent.stop()
        server.stop()
        print(server.process.log_tail(60))
        for host in hosts.hosts:
            host.remove_all_containers(label="fleet.app")


@pytest.fixture(scope="module")
def browser(pool: Pool, pki: TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/bootstrap.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={_spki_hash(pki.server().cert)}",
    ):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=driver_path)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(1280, 800)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, timeout: float = WAIT) -> Any:
    # A live page swaps its view in when it changed: an element read just before a
    # swap is stale by the next read; look again.
    return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException])


def _sign_in(driver: Any, pool: Pool, token: str) -> None:
    driver.get(f"{pool.url}/signin")
    driver.delete_all_cookies()
    driver.get(f"{pool.url}/signin")
    field = _wait(driver).until(ec.presence_of_element_located((By.ID, "token")))
    field.send_keys(token)
    driver.find_element(By.ID, "signin").click()


def _signed_in(driver: Any, pool: Pool, role: str) -> None:
    _sign_in(driver, pool, pool.tokens[role])
    _wait(driver).until(ec.url_to_be(f"{pool.url}/pool"))
    who = driver.find_element(By.ID, "who").text
    assert who == f"token:dash-{role} · {role}"


def _shot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def _texts(driver: Any, selector: str) -> list[str]:
    """The texts of what ``selector`` finds, read in one go in the page: a live page
    replaces its tables as it refreshes, and an element found, then read in a second
    call, may be gone by then (StaleElementReferenceException)."""
    script = "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText)"
    return [str(t) for t in driver.execute_script(script, selector)]


def _cell(driver: Any, row: str, column: str) -> str:
    found = _texts(driver, f"{row} td.{column}")
    return found[0] if found else ""


def test_a_viewer_signs_in_and_sees_every_host_and_app(pool: Pool, browser: Any) -> None:
    _signed_in(browser, pool, "viewer")
    _wait(browser).until(lambda d: _texts(d, "#hosts tr[data-host] td.name"))
    hosts = [t.split("\n")[0] for t in _texts(browser, "#hosts tr[data-host] td.name")]
    assert hosts == [h.name for h in pool.hosts.hosts]
    states = _texts(browser, "#hosts .state")
    assert states == ["ready", "ready"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#hosts meter")) == 8  # 4 bars a host
    # A viewer is shown no action it may not take (the server refuses them anyway).
    assert browser.find_elements(By.CSS_SELECTOR, "[data-action]") == []
    _shot(browser, "pool")

    browser.get(f"{pool.url}/apps")
    _wait(browser).until(lambda d: _cell(d, "tr[data-app=web]", "running") == "2")
    assert _texts(browser, "#apps td.name") == ["api", "web"]
    assert _cell(browser, "tr[data-app=web]", "desired") == "2"
    _shot(browser, "apps")

    browser.get(f"{pool.url}/apps/web")
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "available"), "2"))
    page = browser.find_element(By.ID, "live").text
    assert IMAGE in page and "Revisions" in page and "Replicas by host" in page
    assert browser.find_elements(By.ID, "scale") == []
    _shot(browser, "app")

    browser.get(f"{pool.url}/events?app=web")
    _wait(browser).until(lambda d: "web" in d.find_element(By.ID, "events").text)
    cells = browser.find_elements(By.CSS_SELECTOR, "#events td.app")
    assert {c.get_attribute("data-app") for c in cells} == {"web"}  # filtered by app
    _shot(browser, "events")

    browser.get(f"{pool.url}/upgrade")
    assert "No upgrade walk yet" in browser.find_element(By.ID, "live").text
    _shot(browser, "upgrade")


def test_a_change_from_the_cli_appears_without_a_reload(pool: Pool, browser: Any) -> None:
    _signed_in(browser, pool, "viewer")
    _wait(browser).until(lambda d: _texts(d, "#hosts .state") == ["ready", "ready"])
    browser.execute_script("window.notReloaded = true")
    host = pool.hosts.hosts[1].name
    began = time.monotonic()
    done = pool.server.cli("cordon", host)
    assert done.returncode == 0, done.stdout + done.stderr
    answered = time.monotonic()
    try:
        _wait(browser).until(lambda d: _texts(d, "#hosts .state") == ["ready", "cordoned"])
        shown = time.monotonic()
        assert browser.execute_script("return window.notReloaded === true")
        refreshed = browser.find_element(By.ID, "live").get_attribute("data-refreshed")
        assert int(refreshed or 0) >= 1
        print(
            f"cordon: CLI {answered - began:.2f}s, on the page {shown - answered:.2f}s later; "
            f"{refreshed} view fetch(es) in {shown - began:.1f}s"
        )
    finally:
        assert pool.server.cli("uncordon", host).returncode == 0


def test_a_deployer_scales_from_the_page_and_docker_runs_the_replicas(
    pool: Pool, browser: Any
) -> None:
    _signed_in(browser, pool, "deployer")
    browser.get(f"{pool.url}/apps/web")
    replicas = _wait(browser).until(ec.presence_of_element_located((By.ID, "replicas")))
    replicas.clear()
    replicas.send_keys("4")
    browser.find_element(By.ID, "scale").click()
    alert = _wait(browser, 5).until(ec.alert_is_present())
    assert alert.text == "Scale web to 4 replicas?"
    alert.accept()
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "flash"), "scaled web"))
    assert browser.find_element(By.ID, "flash").text == "scaled web from 2 to 4"
    # What Docker really runs, read back through its SDK on every host.
    wait_until(lambda: pool.running("web") == 4, 60, what="4 web containers running")
    # And the page, live: no reload.
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "running"), "4"))
    _shot(browser, "app-deployer")
    assert [a.desired for a in pool.client.apps("web")] == [4]


def _click(browser: Any, selector: str, question: str, said: str) -> str:
    """Click a button, check and accept its confirmation, and wait for the server's
    answer in the flash; the answer."""
    # Found and clicked in one go, again if the page's view was swapped in between
    # (live usage changes it every few seconds).
    _wait(browser).until(lambda d: d.find_element(By.CSS_SELECTOR, selector).click() or True)
    alert = _wait(browser, 5).until(ec.alert_is_present())
    assert alert.text == question
    alert.accept()
    _wait(browser).until(ec.text_to_be_present_in_element((By.ID, "flash"), said))
    assert browser.find_element(By.ID, "flash").get_attribute("class") == "ok"
    return str(browser.find_element(By.ID, "flash").text)


def _revisions(pool: Pool, app: str) -> list[tuple[str, str]]:
    """(container id, fleet.revision label) of ``app``'s running containers, in Docker."""
    return sorted((c.id, c.labels["fleet.revision"]) for c in pool.containers(app))


def _shown_revision(driver: Any) -> str:
    """The revision the app page's history marks current."""
    found = driver.find_elements(By.CSS_SELECTOR, "tr.current td")
    return str(found[0].text) if found else ""


def _rolled_out(pool: Pool, app: str, revision: int, old_ids: set[str]) -> bool:
    """Docker runs ``app``'s one replica at ``revision``, in a container new since
    ``old_ids``, and the controller recorded that rollout complete."""
    running = _revisions(pool, app)
    rollout = pool.stored(KEYS.rollout(app))
    return (
        len(running) == 1
        and running[0][1] == str(revision)
        and running[0][0] not in old_ids
        and (rollout["revision"], rollout["state"]) == (revision, "complete")
    )


def test_a_deployer_pauses_resumes_restarts_and_undoes_a_rollout_from_the_page(
    pool: Pool, browser: Any
) -> None:
    _signed_in(browser, pool, "deployer")
    browser.get(f"{pool.url}/apps/api")
    first = pool.stored(KEYS.app("api"))["revision"]
    assert pool.stored(KEYS.rollout("api"))["paused"] is False

    _click(browser, "[data-action$='/pause']", "Pause api's rollout?", "api's rollout paused")
    assert pool.stored(KEYS.rollout("api"))["paused"] is True
    _wait(browser).until(lambda d: "(paused)" in d.find_element(By.ID, "live").text)
    _click(browser, "[data-action$='/resume']", "Resume api's rollout?", "resumed")
    assert pool.stored(KEYS.rollout("api"))["paused"] is False
    _wait(browser).until(lambda d: "(paused)" not in d.find_element(By.ID, "live").text)

    # Restart: a new revision of the same template, so Docker runs a new container.
    before = {i for i, _ in _revisions(pool, "api")}
    assert len(before) == 1
    question = "Restart every replica of api (a rolling restart)?"
    said = _click(browser, "[data-action$='/restart']", question, "restarting api")
    restarted = pool.stored(KEYS.app("api"))["revision"]
    assert restarted > first and said == f"restarting api (revision {restarted})"
    wait_until(lambda: _rolled_out(pool, "api", restarted, before), 60, what="api restarted")
    _wait(browser).until(lambda d: _shown_revision(d) == str(restarted))  # live, no reload

    # Undo: back to the revision before the restart, again in a new container.
    before = {i for i, _ in _revisions(pool, "api")}
    question = "Roll api back to its previous revision?"
    said = _click(browser, "[data-action$='/undo']", question, "rolling api back")
    assert said == f"rolling api back to revision {first}"
    assert pool.stored(KEYS.app("api"))["revision"] == first
    wait_until(lambda: _rolled_out(pool, "api", first, before), 60, what="api rolled back")
    _wait(browser).until(lambda d: _shown_revision(d) == str(first))


def test_an_admin_cordons_uncordons_and_drains_a_host_from_the_page(
    pool: Pool, browser: Any
) -> None:
    _signed_in(browser, pool, "admin")
    host = pool.hosts.hosts[1].name
    row = f"tr[data-host={host}]"
    _click(
        browser,
        f"{row} [data-action$='/cordon']",
        f"Cordon {host}? No new replicas will land on it.",
        f"host {host} is cordoned",
    )
    assert pool.stored(KEYS.host(host))["state"] == "cordoned"
    _wait(browser).until(lambda d: _texts(d, f"{row} .state") == ["cordoned"])
    _click(browser, f"{row} [data-action$='/uncordon']", f"Uncordon {host}?", "is ready")
    assert pool.stored(KEYS.host(host))["state"] == "ready"
    _wait(browser).until(lambda d: _texts(d, f"{row} .state") == ["ready"])

    # Drain: every replica moves off the host, which Docker on both hosts shows.
    [web] = [a.desired for a in pool.client.apps("web")]
    on_host = len(pool.containers("web", 1)) + len(pool.containers("api", 1))
    assert on_host > 0
    question = f"Drain {host}? Its replicas move to other hosts."
    _click(browser, f"{row} [data-action$='/drain']", question, f"host {host} is draining")
    assert pool.stored(KEYS.host(host))["state"] in ("draining", "drained")
    wait_until(
        lambda: (
            pool.stored(KEYS.host(host))["state"] == "drained"
            and (pool.containers("web", 1), pool.containers("api", 1)) == ([], [])
            and (len(pool.containers("web", 0)), len(pool.containers("api", 0))) == (web, 1)
        ),
        60,
        what=f"{host} drained, its replicas running on the other host",
    )
    _wait(browser).until(lambda d: _texts(d, f"{row} .state") == ["drained"])
    _shot(browser, "pool-admin")
    # And back into service.
    _click(browser, f"{row} [data-action$='/uncordon']", f"Uncordon {host}?", "is ready")
    assert pool.stored(KEYS.host(host))["state"] == "ready"


def _post(browser: Any, path: str, body: dict[str, Any], csrf: bool = True) -> Any:
    """A POST made by the page's own script (same origin, the session's cookie)."""
    return browser.execute_async_script(
        """
        const [path, body, withCsrf, done] = arguments;
        const headers = {"Content-Type": "application/json"};
        if (withCsrf) headers["X-CSRF-Token"] =
            document.querySelector("meta[name=csrf-token]").content;
        fetch(path, {method: "POST", headers, body: JSON.stringify(body)})
          .then(async (r) => done({status: r.status, body: await r.json()}))
          .catch((e) => done({status: 0, body: String(e)}));
        """,
        path,
        body,
        csrf,
    )


def test_a_viewers_scale_is_refused_by_the_server(pool: Pool, browser: Any) -> None:
    _signed_in(browser, pool, "viewer")
    browser.get(f"{pool.url}/apps/api")
    answer = _post(browser, "/api/apps/api/scale", {"replicas": 3})
    assert answer["status"] == 403, answer
    assert "may not change apps" in answer["body"]["error"]
    drain = _post(browser, f"/api/hosts/{pool.hosts.hosts[0].name}/drain", {})
    assert drain["status"] == 403, drain
    assert [a.desired for a in pool.client.apps("api")] == [1]

    # A deployer's change without the session's CSRF token is refused as well.
    _signed_in(browser, pool, "deployer")
    browser.get(f"{pool.url}/apps/api")
    forged = _post(browser, "/api/apps/api/scale", {"replicas": 3}, csrf=False)
    assert forged["status"] == 403 and "CSRF" in forged["body"]["error"], forged
    assert [a.desired for a in pool.client.apps("api")] == [1]


def test_signing_out_ends_the_session(pool: Pool, browser: Any) -> None:
    _signed_in(browser, pool, "viewer")
    cookie = browser.get_cookie("fleet_session")["value"]
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    _wait(browser).until(ec.url_to_be(f"{pool.url}/signin"))
    assert browser.get_cookie("fleet_session") is None
    # Another site's sign-out form is refused (the cookie would not come along anyway).
    assert _request(pool, "POST", "/signout", cookie=cookie, origin="https://evil")[0] == 403


def test_a_wrong_token_goes_back_to_sign_in(pool: Pool, browser: Any) -> None:
    _sign_in(browser, pool, "fleet_0123456789ab_not-the-secret")
    error = _wait(browser).until(ec.presence_of_element_located((By.ID, "signin-error")))
    assert error.text == "unknown or revoked token"
    assert browser.current_url == f"{pool.url}/signin"
    assert browser.get_cookie("fleet_session") is None
    browser.get(f"{pool.url}/pool")
    _wait(browser).until(ec.url_to_be(f"{pool.url}/signin"))
    _shot(browser, "signin")


def test_an_expired_session_goes_back_to_sign_in(pool: Pool, browser: Any) -> None:
    _signed_in(browser, pool, "viewer")
    cookie = browser.get_cookie("fleet_session")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # The open page is sent back by itself when the session ends (its event stream
    # says so), with no action of the user.
    _wait(browser, SESSION_SECONDS + 15).until(ec.url_to_be(f"{pool.url}/signin?expired=1"))
    assert browser.find_element(By.ID, "expired").is_displayed()
    # The old cookie, sent again, signs nobody in.
    status, location, _ = _request(pool, "GET", "/pool", cookie=cookie["value"])
    assert (status, location) == (303, "/signin")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (nothing was asked)


def _request(
    pool: Pool,
    method: str,
    path: str,
    *,
    cookie: str = "",
    body: str = "",
    tls: ssl.SSLContext | None = None,
    origin: str = "",
) -> tuple[int, str, str]:
    """One HTTPS request, verified against the test CA: status, Location, Set-Cookie."""
    parsed = urllib.parse.urlsplit(pool.url)
    context = tls or ssl.create_default_context(cafile=str(pool.server.pki.ca))  # type: ignore[union-attr]
    connection = http.client.HTTPSConnection(parsed.hostname, parsed.port, context=context)
    headers = {"Origin": origin or pool.url, "Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = f"fleet_session={cookie}"
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        response.read()
        return (
            response.status,
            response.getheader("Location", ""),
            response.getheader("Set-Cookie", ""),
        )
    finally:
        connection.close()


def test_a_client_certificate_signs_in_with_its_role(pool: Pool, pki: TestPKI) -> None:
    files = pki.client("dash-ops", "deployer")
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(files.cert, files.key)
    status, location, cookie = _request(
        pool, "POST", "/signin", body="method=certificate", tls=context
    )
    assert (status, location) == (303, "/pool")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    value = _cookie_value(cookie)
    assert _request(pool, "GET", "/pool", cookie=value)[0] == 200
    # Without a certificate there is nobody to sign in as.
    assert _request(pool, "POST", "/signin", body="method=certificate")[0] == 401
    # A sign-in posted from another origin is refused.
    other = _request(
        pool, "POST", "/signin", body="method=certificate", tls=context, origin="https://evil"
    )
    assert other[0] == 403 and other[2] == ""


def _cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";")[0].split("=", 1)[1]


def test_a_session_is_good_on_every_replica_of_the_pool(pool: Pool, pki: TestPKI) -> None:
    files = pki.client("dash-ha", "viewer")
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(files.cert, files.key)
    status, _, cookie = _request(pool, "POST", "/signin", body="method=certificate", tls=context)
    assert status == 303
    value = _cookie_value(cookie)
    # A second control-plane replica of the same pool: the same etcd prefix and the same
    # secrets key file (the fixture's log directory holds it), a dashboard of its own.
    dashboard = f"127.0.0.1:{free_port()}"
    extra = ["--dashboard-listen", dashboard, "--dashboard-session-ttl", f"{SESSION_SECONDS}s"]
    first = pool.server
    second = FleetServerProcess(
        first.etcd_endpoint, PREFIX, first.log_dir, pki, extra_args=extra, log_name="replica.log"
    ).start()
    try:
        other = Pool(pool.hosts, second, pool.client, f"https://{dashboard}", {}, pool.etcd)
        assert _request(other, "GET", "/pool", cookie=value)[0] == 200
        # And the other way round: a session the second replica signed is good on the first.
        status, _, cookie = _request(
            other, "POST", "/signin", body="method=certificate", tls=context
        )
        assert status == 303
        assert _request(pool, "GET", "/pool", cookie=_cookie_value(cookie))[0] == 200
        # The same session with the mac of another key is refused by both.
        mac = base64.urlsafe_b64encode(hashlib.sha256(b"another key").digest()).decode()
        forged = f"{value.split('.')[0]}.{mac.rstrip('=')}"
        for replica in (pool, other):
            assert _request(replica, "GET", "/pool", cookie=forged)[:2] == (303, "/signin")
    finally:
        second.stop()
