"""FleetLock end to end: three namespaced docker hosts whose "Zincati" (a client written
from the published protocol, coreos/zincati docs/development/fleetlock/protocol.md:
POST {base}/v1/pre-reboot and /v1/steady-state, header ``fleet-lock-protocol: true``,
body ``{"client_params": {"id", "group"}}``, retried until 200) all want to reboot at
once. fleet must hand the lock to one host at a time (read from etcd), answer 200 only
once the host is drained with the app's budget held (a prober counts the replicas that
answer HTTP), release it once the host is back from its "reboot" (dockerd and agent
restarted, a new OS version), and keep the slot of a host that never comes back (across
a crash of the control plane) until ``fleet hosts release``. Bad requests get the
protocol's error and write nothing."""

from __future__ import annotations

import base64
import hmac
import http.client
import itertools
import json
import secrets
import ssl
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fleet.spec import load_documents
from fleet.store.keys import KeyLayout
from fleet.testing import EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetAgentProcess, FleetServerProcess
from fleet.testing.images import ensure_image
from fleet.testing.procs import free_port
from tests.conftest import PoolFactory
from tests.helpers import EndpointProber, fleet_containers

IMAGE = "fleet-test/drain:v1"
PREFIX = "/e2e-fleetlock/"
TOKEN = "workers-token-0123456789"
OTHER_TOKEN = "default-token-0123456789"
GROUP_LABEL = "reboot-group"
WEB = f"""
name: web
image: {IMAGE}
replicas: 6
placement: spread
ports: ["8080"]
resources: {{cpu: 0.1, memory: 32Mi}}
min_available: 5
shutdown_delay: 1s
health: {{http: "http://:8080/index.html", interval: 500ms, retries: 2}}
update: {{min_ready: 1s}}
"""


def app_specific_id(machine_id: str) -> str:
    """Zincati's default id (its docs: /etc/machine-id made app-specific with its app
    id, as systemd's sd_id128_get_machine_app_specific does)."""
    mac = hmac.new(
        bytes.fromhex(machine_id), bytes.fromhex("de35106b6ec24688b63afddaa156679b"), "sha256"
    )
    raw = bytearray(mac.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


class Zincati:
    """The FleetLock side of Zincati: base_url (userinfo becomes Basic auth, as its
    HTTP client does), its id and group, POSTs with the protocol's header and body."""

    def __init__(
        self, base_url: str, client_id: str, group: str, cafile: Path, cert: Any = None
    ) -> None:
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "", url.port or 443
        self.auth = (
            "Basic " + base64.b64encode(f"{url.username}:{url.password}".encode()).decode()
            if url.username
            else None
        )
        self.id, self.group = client_id, group
        self.tls = ssl.create_default_context(cafile=str(cafile))
        if cert is not None:  # a host's agent certificate (not Zincati's: it has none)
            self.tls.load_cert_chain(cert.cert, cert.key)

    def post(
        self, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        payload = body
        if payload is None:
            params = {"client_params": {"id": self.id, "group": self.group}}
            payload = json.dumps(params).encode()
        sent = {"fleet-lock-protocol": "true", "content-type": "application/json"}
        if self.auth:
            sent["authorization"] = self.auth
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v}
        connection = http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=10)
        try:
            connection.request("POST", path, body=payload, headers=sent)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    def pre_reboot(self) -> tuple[int, dict[str, Any]]:
        return self.post("/v1/pre-reboot")

    def steady_state(self) -> tuple[int, dict[str, Any]]:
        return self.post("/v1/steady-state")


def stored(etcd: EtcdServer, key: bytes) -> dict[str, Any] | None:
    """A record as etcd holds it (its JSON gateway), None if absent."""
    request = urllib.request.Request(
        etcd.url + "/v3/kv/range",
        data=json.dumps({"key": base64.b64encode(key).decode()}).encode(),
    )
    with urllib.request.urlopen(request, timeout=5, context=etcd.ssl_context()) as answer:
        kvs = json.load(answer).get("kvs") or []
    return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None


def test_zincati_hosts_reboot_one_at_a_time_each_drained_first(
    docker_hosts: PoolFactory, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    pool = docker_hosts(3)
    machine_ids = {}
    for host in pool.hosts:
        host.remove_all_containers(label="fleet.app")
        ensure_image(host.client(), "fleet-test/drain", "v1", "drain v1\n")
        (tmp_path / f"os-release-{host.name}").write_text('NAME="Fleet OS"\nVERSION_ID=1\n')
        machine_ids[host.name] = secrets.token_hex(16)
        (tmp_path / f"machine-id-{host.name}").write_text(machine_ids[host.name] + "\n")
    (tmp_path / "fleetlock-tokens").write_text(f"workers {TOKEN}\ndefault {OTHER_TOKEN}\n")
    port = free_port()
    fleetlock_args = ["--fleetlock-listen", f"127.0.0.1:{port}"]
    fleetlock_args += ["--fleetlock-group-label", GROUP_LABEL]
    fleetlock_args += ["--fleetlock-tokens", str(tmp_path / "fleetlock-tokens")]
    server = FleetServerProcess(
        etcd_server.endpoint, PREFIX, tmp_path, pki, extra_args=fleetlock_args
    ).start()
    keys = KeyLayout(PREFIX)

    def agent(name: str) -> FleetAgentProcess:
        host = pool.host(name)
        args = ["--advertise-address", host.address, "--memory", "4Gi", "--cpus", "2"]
        args += ["--os-release", str(tmp_path / f"os-release-{name}")]
        args += ["--machine-id-file", str(tmp_path / f"machine-id-{name}")]
        return FleetAgentProcess(
            [server.address], name, host.docker_url, tmp_path, pki, {GROUP_LABEL: "workers"}, args
        )

    agents = {h.name: agent(h.name).start() for h in pool.hosts}
    base = f"https://workers:{TOKEN}@127.0.0.1:{port}"
    zincati = {
        name: Zincati(base, app_specific_id(machine_ids[name]), "workers", pki.ca)
        for name in machine_ids
    }
    client = server.client()
    try:
        server.process.wait_ready(
            lambda: len([h for h in client.hosts() if h.connected]) == 3, 30, what="3 agents"
        )

        # -- bad requests: the protocol's error, and nothing written ------------------
        h1 = zincati["h1"]
        refusals = [
            (h1.post("/v1/pre-reboot", headers={"fleet-lock-protocol": ""}), 400, "missing_header"),
            (h1.post("/v1/pre-reboot", body=b'{"client_params": {"id": 7}}'), 400, "bad_body"),
            (h1.post("/v1/pre-reboot", body=b"{nope"), 400, "bad_body"),
            (Zincati(base, "f" * 32, "workers", pki.ca).pre_reboot(), 404, "unknown_client"),
            (
                Zincati(
                    f"https://default:{OTHER_TOKEN}@127.0.0.1:{port}", h1.id, "default", pki.ca
                ).pre_reboot(),
                403,
                "wrong_group",
            ),
            (
                Zincati(f"https://127.0.0.1:{port}", h1.id, "workers", pki.ca).pre_reboot(),
                401,
                "unauthorized",
            ),
            (
                Zincati(
                    f"https://workers:wrong@127.0.0.1:{port}", h1.id, "workers", pki.ca
                ).pre_reboot(),
                401,
                "unauthorized",
            ),
            # The default group's token does not open the workers group.
            (
                Zincati(
                    f"https://x:{OTHER_TOKEN}@127.0.0.1:{port}", h1.id, "workers", pki.ca
                ).pre_reboot(),
                401,
                "unauthorized",
            ),
        ]
        # An agent certificate speaks for its own host only.
        as_h2 = Zincati(f"https://127.0.0.1:{port}", h1.id, "workers", pki.ca, pki.agent("h2"))
        refusals.append((as_h2.pre_reboot(), 403, "forbidden"))
        as_h1 = Zincati(f"https://127.0.0.1:{port}", h1.id, "workers", pki.ca, pki.agent("h1"))
        assert as_h1.steady_state()[0] == 200  # it holds no slot: nothing to release
        for (status, body), wanted_status, wanted_kind in refusals:
            assert (status, body.get("kind")) == (wanted_status, wanted_kind), body
            assert body.get("value"), body
        assert stored(etcd_server, keys.maintenance()) is None
        assert all(stored(etcd_server, keys.host(h))["state"] == "ready" for h in zincati)  # type: ignore[index]

        client.apply(load_documents(WEB, "web.yaml"))
        wait_until(lambda: len(client.endpoints("web")) == 6, 90, what="6 available replicas")

        # -- all three want to reboot at once ---------------------------------------
        holders_seen: list[tuple[float, tuple[str, ...]]] = []
        granted: dict[str, float] = {}
        released: dict[str, float] = {}
        running_at_grant: dict[str, int] = {}
        kinds: dict[str, set[str]] = {name: set() for name in zincati}
        stop = threading.Event()
        failures: list[BaseException] = []

        def watch_semaphore() -> None:
            while not stop.is_set():
                record = stored(etcd_server, keys.maintenance()) or {}
                holders_seen.append((time.time(), tuple(sorted(record.get("holders", {})))))
                stop.wait(0.1)

        def running(name: str) -> int:
            containers = fleet_containers(pool.host(name).client(), "web")
            return sum(1 for c in containers if c.status == "running")

        def reboot(name: str) -> None:
            """The host's updater reboots it: a new OS, dockerd and agent start again."""
            agents[name].stop()
            pool.host(name).stop_daemon()
            (tmp_path / f"os-release-{name}").write_text('NAME="Fleet OS"\nVERSION_ID=2\n')
            pool.host(name).start_daemon()
            agents[name] = agent(name).start()

        def updater(name: str) -> None:
            """Zincati's loop: report steady, find an update, ask for the lock until
            granted, reboot, then report steady until it is accepted."""
            try:
                me = zincati[name]
                assert me.steady_state()[0] == 200
                while not stop.is_set():
                    status, body = me.pre_reboot()
                    if status == 200:
                        break
                    kinds[name].add(body["kind"])
                    stop.wait(0.3)
                granted[name] = time.time()
                running_at_grant[name] = running(name)
                reboot(name)
                while not stop.is_set() and me.steady_state()[0] != 200:
                    stop.wait(0.3)
                released[name] = time.time()
            except BaseException as error:
                failures.append(error)
                raise

        watcher = threading.Thread(target=watch_semaphore, daemon=True)
        updaters = [threading.Thread(target=updater, args=(n,), daemon=True) for n in zincati]
        watcher.start()
        with EndpointProber(client) as prober:
            for thread in updaters:
                thread.start()
            wait_until(lambda: len(released) == 3 or bool(failures), 150, what="3 reboots")
        assert not failures, failures
        stop.set()
        watcher.join(5)
        prober.check(at_least=5)  # min_available held throughout

        # One holder at a time, each host in turn; its lock from grant to release.
        assert max(len(h) for _, h in holders_seen) == 1, holders_seen
        assert {h for _, hs in holders_seen for h in hs} == {"h1", "h2", "h3"}
        order = sorted(granted, key=granted.__getitem__)
        for first, then in itertools.pairwise(order):
            assert released[first] <= granted[then], (first, then, granted, released)
        # 200 only once drained: none of web's replicas ran on it then.
        assert running_at_grant == {"h1": 0, "h2": 0, "h3": 0}
        # The ones that waited were told why, with the protocol's error body.
        assert set().union(*kinds.values()) >= {
            "failed_lock_semaphore_full",
            "failed_lock_draining",
        }
        hosts = {h.host_id: h for h in client.hosts()}
        assert {n: (h.state, h.maintenance, h.facts["os_version"]) for n, h in hosts.items()} == {
            n: ("ready", "", "2") for n in ("h1", "h2", "h3")
        }
        record = stored(etcd_server, keys.maintenance())
        assert record is not None and record["holders"] == {} and record["fleetlock"] == {}

        # -- a host that dies holding the lock keeps it until an admin releases it -----
        last = order[-1]
        wait_until(lambda: zincati[last].pre_reboot()[0] == 200, 60, what=f"{last} locked again")
        agents[last].kill()  # it never comes back
        # The control plane crashes and comes back: the lock lives in etcd alone, so
        # it answers as before.
        server.kill()
        server = server.again("server-again.log").start()
        server.process.wait_ready(
            lambda: len([h for h in client.hosts() if h.connected]) == 2, 30, what="2 agents"
        )
        status, body = zincati[last].steady_state()
        assert (status, body["kind"]) == (409, "failed_unlock_not_back"), body
        nxt = order[0]
        status, body = zincati[nxt].pre_reboot()
        assert (status, body["kind"]) == (409, "failed_lock_semaphore_full"), body
        [info] = client.hosts(last)
        assert info.maintenance == "fleetlock group workers"
        described = server.cli("describe", "host", last)
        assert "maintenance slot: held by fleetlock group workers" in described.stdout
        done = server.cli("hosts", "release", last)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "released" in done.stdout and "stays cordoned" in done.stdout, done.stdout
        record = stored(etcd_server, keys.maintenance())
        assert record is not None and last not in record["holders"]
        assert stored(etcd_server, keys.host(last))["state"] == "cordoned"  # type: ignore[index]
        # The next host takes the slot now.
        status, body = zincati[nxt].pre_reboot()
        assert status == 200 or body["kind"] == "failed_lock_draining", body
        record = stored(etcd_server, keys.maintenance())
        assert record is not None and list(record["holders"]) == [nxt]
    finally:
        client.close()
        for process in agents.values():
            process.stop()
        server.stop()
        print(server.process.log_tail(80))
        for host in pool.hosts:
            if not host.ping():
                host.start_daemon()
            host.remove_all_containers(label="fleet.app")
