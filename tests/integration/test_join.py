"""Hosts join with a token, and agents renew their certificates, against a real etcd, a
real control plane (with --ca-key and --token-listen) and a namespaced Docker host.

The first test joins a host as an operator would (the command `fleet hosts token
create` prints), checks what it got (its own key, a certificate of the pool's CA for
its host id, the token's labels) and that it runs a replica; and that every bad join
(a wrong CA fingerprint, an unknown, API, expired, used-up or revoked token, a host id
already in the pool) is refused with its reason and writes nothing to etcd.

The second lets a joined agent's one-minute certificate come up for renewal: the agent
gets a new one and reconnects with it while its container runs on untouched, and the
old serial, once an admin revokes it, is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from fleet.spec import load_documents
from fleet.store._etcd import Etcd
from fleet.testing import DockerHost, EtcdServer, ManagedProcess, free_port, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from tests.conftest import ensure_image
from tests.helpers import documented_json, fleet_containers


def _fingerprint(pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _stored(etcd: EtcdServer, prefix: str, *folders: str) -> dict[bytes, bytes]:
    """The keys under ``folders`` of the pool, read back from etcd."""

    async def read() -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        async with Etcd([etcd.endpoint]) as client:
            for folder in folders:
                kvs, _ = await client.get_prefix(f"{prefix}{folder}/".encode())
                found.update({kv.key: kv.value for kv in kvs})
        return found

    return asyncio.run(read())


class Pool:
    def __init__(self, etcd: EtcdServer, pki: TestPKI, tmp: Path, name: str, *extra: str) -> None:
        self.etcd, self.pki, self.tmp = etcd, pki, tmp
        self.prefix = f"/join-{name}/"
        self.join_at = f"127.0.0.1:{free_port()}"
        args = ["--ca-key", str(pki.dir / "ca.key"), "--token-listen", self.join_at, *extra]
        self.server = FleetServerProcess(etcd.endpoint, self.prefix, tmp, pki, extra_args=args)

    def token(self, *args: str) -> dict[str, Any]:
        made = self.server.cli("hosts", "token", "create", *args, "-o", "json")
        assert made.returncode == 0, made.stdout + made.stderr
        data: dict[str, Any] = json.loads(made.stdout)
        return data

    def agent_args(
        self, token: str, host_id: str, host: DockerHost, fingerprint: str = "", state: str = ""
    ) -> list[str]:
        fingerprint = fingerprint or _fingerprint(self.pki.ca.read_bytes())
        return [
            *(sys.executable, "-m", "fleet", "agent", "--join", token),
            *("--ca-fingerprint", fingerprint, "--join-server", self.join_at),
            *("--server", self.server.address, "--host-id", host_id),
            *("--docker", host.docker_url, "--log-level", "debug"),
            *("--state-dir", str(self.tmp / (state or f"state-{host_id}"))),
        ]

    def refused(self, args: list[str]) -> str:
        """Run an agent that must not join: its error (it exits at once)."""
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode != 0, done.stdout + done.stderr
        return done.stderr

    def stored(self) -> dict[bytes, bytes]:
        return _stored(self.etcd, self.prefix, "join-tokens", "hosts", "host-labels", "denied")


def test_a_host_joins_with_a_token_and_bad_joins_change_nothing(
    clean_host: DockerHost, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    pool = Pool(etcd_server, pki, tmp_path, "join")
    pool.server.start()
    agent: ManagedProcess | None = None
    try:
        made = pool.token("--uses", "1", "--labels", "zone=a", "--description", "rack 4")
        # Its JSON is an interface (docs/cli-json.md), as the token list's below.
        shapes = documented_json()
        assert set(made) == shapes["fleet hosts token create --ttl 1h -o json"][1]
        # The printed fingerprint is the CA's, as openssl would give it.
        assert made["ca_fingerprint"] == _fingerprint(pki.ca.read_bytes())
        assert made["command"].startswith(f"fleet agent --join {made['token']} ")
        assert f"--join-server {pool.join_at}" in made["command"]
        expired = pool.token("--ttl", "1s")
        api_token = pool.server.cli("tokens", "create", "ci", "--role", "admin").stdout.strip()
        before = pool.stored()

        # Refused before anything is sent: another CA at the join address.
        other = "sha256:" + "0" * 64
        said = pool.refused(pool.agent_args(made["token"], "j1", clean_host, other))
        assert f"presents no CA with fingerprint {other}" in said, said
        assert "nothing was sent to it" in said
        # Refused by the control plane, each saying why.
        said = pool.refused(pool.agent_args("fleetjoin_0123456789ab_nope", "j1", clean_host))
        assert "unknown or revoked join token" in said, said
        said = pool.refused(pool.agent_args(api_token, "j1", clean_host))
        assert "that is not a join token" in said, said
        wait_until(
            lambda: (
                "expired at" in pool.refused(pool.agent_args(expired["token"], "j1", clean_host))
            ),
            20,
            what="the 1s token to be refused as expired",
        )
        assert pool.stored() == before, "a refused join wrote to etcd"

        # The join, as the printed command does it.
        args = pool.agent_args(made["token"], "j1", clean_host)
        agent = ManagedProcess(args, tmp_path / "agent-j1.log", name="fleet agent j1")
        agent.start()
        client = pool.server.client()
        agent.wait_ready(
            lambda: any(h.host_id == "j1" and h.connected for h in client.hosts()),
            60,
            what="j1 to join and register",
        )
        [host] = client.hosts("j1")
        assert dict(host.labels) == {"zone": "a"}  # the token's labels
        pki_dir = tmp_path / "state-j1" / "pki"
        assert stat.S_IMODE((pki_dir / "agent.key").stat().st_mode) == 0o600
        cert = x509.load_pem_x509_certificate((pki_dir / "agent.crt").read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "j1"
        assert cert.issuer == x509.load_pem_x509_certificate(pki.ca.read_bytes()).subject
        assert format(cert.serial_number, "x") == host.cert_serial
        listed = json.loads(pool.server.cli("hosts", "token", "list", "-o", "json").stdout)
        mine = next(t for t in listed if t["id"] == made["info"]["id"])
        assert {frozenset(t) for t in listed} == {
            frozenset(shapes["fleet hosts token list -o json"][1])
        }
        assert (mine["used"], mine["hosts"], mine["description"]) == (1, ["j1"], "rack 4")
        assert "secret" not in json.dumps(listed) and made["token"] not in json.dumps(listed)

        # It runs what is placed on it.
        image = ensure_image(clean_host)
        client.apply(load_documents(f"name: joined\nimage: {image}\nreplicas: 1\n"))
        wait_until(
            lambda: (
                [c.status for c in fleet_containers(clean_host.client(), "joined")] == ["running"]
            ),
            60,
            what="the replica on the joined host",
        )

        # Used up, revoked, or for a host id in the pool: refused, nothing written.
        again = pool.token()
        revoked = pool.token()
        assert pool.server.cli("hosts", "token", "revoke", revoked["info"]["id"]).returncode == 0
        before = pool.stored()
        said = pool.refused(pool.agent_args(made["token"], "j2", clean_host))
        assert "has let in its 1 host(s) already (j1)" in said, said
        said = pool.refused(pool.agent_args(revoked["token"], "j2", clean_host))
        assert "unknown or revoked join token" in said, said
        # (Another machine: this one's state dir holds j1's certificate, which it uses.)
        said = pool.refused(pool.agent_args(again["token"], "j1", clean_host, state="other"))
        assert "host 'j1' is in the pool already" in said, said
        assert pool.stored() == before, "a refused join wrote to etcd"

        # Started again with the same line (its token used up), it does not join again.
        issued = (pki_dir / "agent.crt").read_bytes()
        agent.stop()
        agent.start()
        agent.wait_ready(
            lambda: any(h.host_id == "j1" and h.connected for h in client.hosts()),
            60,
            what="j1 to come back with the certificate it has",
        )
        assert (pki_dir / "agent.crt").read_bytes() == issued
        client.close()
    finally:
        if agent is not None:
            agent.stop()
            print(agent.log_tail(40))
        pool.server.stop()
        print(pool.server.process.log_tail(40))


def test_an_agent_renews_its_certificate_and_the_old_one_can_be_revoked(
    clean_host: DockerHost, etcd_server: EtcdServer, pki: TestPKI, tmp_path: Path
) -> None:
    pool = Pool(etcd_server, pki, tmp_path, "renew", "--agent-cert-ttl", "1m")
    pool.server.start()
    agent: ManagedProcess | None = None
    try:
        made = pool.token("--uses", "1")
        args = pool.agent_args(made["token"], "r1", clean_host)
        agent = ManagedProcess(args, tmp_path / "agent-r1.log", name="fleet agent r1")
        agent.start()
        client = pool.server.client()
        agent.wait_ready(
            lambda: any(h.host_id == "r1" and h.connected for h in client.hosts()),
            60,
            what="r1 to join",
        )
        [host] = client.hosts("r1")
        first_serial, first_expiry = host.cert_serial, host.cert_expires
        old = tmp_path / "old-pki"
        shutil.copytree(tmp_path / "state-r1" / "pki", old)
        image = ensure_image(clean_host)
        client.apply(load_documents(f"name: steady\nimage: {image}\nreplicas: 1\n"))

        def started() -> tuple[str, str] | None:
            found = fleet_containers(clean_host.client(), "steady")
            if [c.status for c in found] != ["running"]:
                return None
            return found[0].id, found[0].attrs["State"]["StartedAt"]

        container = wait_until(started, 60, what="the replica")

        # About 40 s in (2/3 of its minute and a little skew), a new certificate.
        def renewed() -> str | None:
            hosts = [h for h in client.hosts() if h.host_id == "r1" and h.connected]
            serial = hosts[0].cert_serial if hosts else first_serial
            return serial if serial != first_serial else None

        new_serial = wait_until(renewed, 90, interval=0.5, what="r1 to renew its certificate")
        [host] = client.hosts("r1")
        assert first_serial in host.past_serials
        assert host.cert_expires > first_expiry
        wide = pool.server.cli("get", "hosts", "-o", "wide")
        assert "CERT EXPIRES" in wide.stdout and host.cert_expires in wide.stdout, wide.stdout
        assert "renewed the agent certificate" in agent.log_tail(200)
        # The replica never noticed: the same container, never restarted.
        assert started() == container
        assert new_serial == format(
            x509.load_pem_x509_certificate(
                (tmp_path / "state-r1" / "pki" / "agent.crt").read_bytes()
            ).serial_number,
            "x",
        )

        # The admin denies the old certificate: an agent presenting it is refused.
        current = pool.server.cli("hosts", "revoke-cert", "r1", new_serial)
        assert current.returncode != 0 and "connects with now" in current.stderr
        revoked = pool.server.cli("hosts", "revoke-cert", "r1", first_serial)
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        stale = [
            *(sys.executable, "-m", "fleet", "agent", "--host-id", "r1"),
            *("--server", pool.server.address, "--docker", clean_host.docker_url),
            *("--tls-ca", str(old / "ca.crt"), "--tls-cert", str(old / "agent.crt")),
            *("--tls-key", str(old / "agent.key"), "--state-dir", str(tmp_path / "stale")),
        ]
        said = pool.refused(stale)
        assert f"certificate serial {first_serial} of host r1" in said, said
        assert [h.connected for h in client.hosts("r1")] == [True]
        client.close()
    finally:
        if agent is not None:
            agent.stop()
            print(agent.log_tail(60))
        pool.server.stop()
        print(pool.server.process.log_tail(40))
