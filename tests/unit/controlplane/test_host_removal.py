"""Host lifecycle, the pure parts: the key of a denied certificate, the serials a host
record keeps for a removal to deny, the denial in the informer's state, what a refused
agent and `fleet hosts remove` say, and the agent noticing a renewed certificate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509

from fleet.agent.certwatch import CertificateWatch
from fleet.cli.hosts import removed_lines
from fleet.controlplane.registration import denied_message, denied_serials, host_record
from fleet.errors import InvalidArgument
from fleet.pki.issuing import issue
from fleet.pki.subjects import Kind, serial_from_auth_context, serial_of
from fleet.proto import fleet_pb2 as pb
from fleet.refusals import agent_refused
from fleet.store import KeyLayout, keys
from fleet.store._etcd import KeyValue
from fleet.store.keys import ParsedKey, check_serial
from fleet.store.live import LiveState
from fleet.store.records import DeniedRecord
from fleet.store.state import decode_state
from fleet.testing.certs import TestPKI
from fleet.transport import TlsFiles

LAYOUT = KeyLayout("/t/")
DENIED = DeniedRecord(serial="3f2a", host_id="h1", by="alice", at="2026-12-03T15:00:00Z")


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI(tmp_path / "pki")


def test_a_denied_serial_has_a_key_of_its_own() -> None:
    assert LAYOUT.denied("3f2a") == b"/t/denied/3f2a"
    assert LAYOUT.parse(b"/t/denied/3f2a") == ParsedKey(keys.DENIED, ("3f2a",))


@pytest.mark.parametrize("bad", ["", "3F2A", "../x", "3f2a/", "g1", "0x3f", "a" * 41, "3f\n"])
def test_only_lowercase_hex_serials_become_keys(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="certificate serial"):
        check_serial(bad)
    with pytest.raises(InvalidArgument):
        LAYOUT.denied(bad)


def test_the_informer_state_holds_denials_as_a_prefix_read_does() -> None:
    key, value = LAYOUT.denied(DENIED.serial), DENIED.dump()
    live = LiveState(LAYOUT)
    before = live.snapshot()
    live.apply(key, value, 7)
    after = live.snapshot()
    assert after.denied["3f2a"].value == DENIED
    assert "3f2a" not in before.denied  # a snapshot never sees a later change
    assert after.changes is not None and before.changes is not None
    assert after.changes.hosts != before.changes.hosts
    decoded = decode_state(LAYOUT, [KeyValue(key, value, 7)], 7)
    assert decoded.denied == after.denied
    live.apply(key, None, 8)
    assert live.snapshot().denied == {}


def _register() -> pb.Register:
    return pb.Register(host_id="h1", capacity=pb.Resources(cpu=2, memory_bytes=1 << 30))


def test_a_host_record_keeps_the_serials_it_registered_with() -> None:
    first = host_record(_register(), None, serial="a1")
    assert (first.cert_serial, first.past_serials) == ("a1", [])
    again = host_record(_register(), first, serial="a1")
    assert (again.cert_serial, again.past_serials) == ("a1", [])
    renewed = host_record(_register(), again, serial="b2")
    assert (renewed.cert_serial, renewed.past_serials) == ("b2", ["a1"])
    back = host_record(_register(), renewed, serial="a1")  # the old one again
    assert (back.cert_serial, back.past_serials) == ("a1", ["b2"])


def test_a_host_record_keeps_a_few_past_serials_only() -> None:
    record = host_record(_register(), None, serial="0")
    for n in range(1, 20):
        record = host_record(_register(), record, serial=format(n, "x"))
    assert record.cert_serial == "13"
    assert record.past_serials == [format(n, "x") for n in range(11, 19)]


def test_a_removal_denies_every_serial_the_host_registered_with_once() -> None:
    record = host_record(_register(), None, serial="a1")
    record = host_record(_register(), host_record(_register(), record, serial="b2"), serial="a1")
    assert denied_serials(record) == ["b2", "a1"]
    assert denied_serials(host_record(_register(), None)) == []  # a plaintext control plane


def test_a_denial_says_whose_certificate_by_whom_when_and_how_to_rejoin() -> None:
    said = denied_message(DENIED)
    assert "certificate serial 3f2a of host h1 was removed from the pool by alice" in said
    assert "2026-12-03T15:00:00Z" in said
    assert "fleet certs issue agent h1 --force" in said


def test_a_removed_agent_stops_with_the_control_planes_reason(pki: TestPKI) -> None:
    files = pki.agent("h1")
    error = agent_refused("h1", "127.0.0.1:7000", denied_message(DENIED), files)
    said = str(error)
    assert said.startswith("the control plane at 127.0.0.1:7000 refused this agent (")
    assert "removed from the pool by alice" in said
    assert str(files.cert) in said
    assert "--host-id" not in said  # nothing to fix there


def test_the_serial_is_read_from_the_peer_certificate(pki: TestPKI) -> None:
    files = pki.agent("h1")
    pem = files.cert.read_bytes()
    serial = serial_of(pem)
    assert int(serial, 16) == x509.load_pem_x509_certificate(pem).serial_number
    assert serial == check_serial(serial)
    assert serial_from_auth_context({"x509_pem_cert": [pem]}) == serial
    assert serial_from_auth_context({}) == ""


def test_removed_lines_say_what_was_denied_and_what_follows() -> None:
    lines = removed_lines(
        pb.RemoveHostResponse(
            host_id="h1", denied_serials=["3f2a", "b2"], replicas=2, was_connected=True
        )
    )
    assert lines[0] == (
        "host/h1 removed: certificate serial(s) 3f2a, b2 denied on every control plane; "
        "its agent's stream ended"
    )
    assert "2 replica(s) it had are placed elsewhere" in lines[1]
    assert "fleet certs issue agent h1 --force" in lines[2]
    plaintext = removed_lines(pb.RemoveHostResponse(host_id="h1"))
    assert "nothing denied" in plaintext[0] and "was not connected" in plaintext[0]
    assert len(plaintext) == 2


def _agent_files(pki: TestPKI, tmp_path: Path) -> TlsFiles:
    """A copy of h1's certificate files, as an agent would have them."""
    files = pki.agent("h1")
    own = tmp_path / "agent"
    own.mkdir()
    copied = TlsFiles(own / "ca.crt", own / "agent.crt", own / "agent.key")
    for source, target in zip(
        (files.ca, files.cert, files.key), (copied.ca, copied.cert, copied.key), strict=True
    ):
        shutil.copy(source, target)
    return copied


def test_a_renewed_certificate_is_noticed_once(pki: TestPKI, tmp_path: Path) -> None:
    files = _agent_files(pki, tmp_path)
    watch = CertificateWatch(files)
    watch.mark()
    assert watch.renewed() is None  # unchanged
    paths = issue(pki.dir, Kind.agent, "h1", force=True)
    shutil.copy(paths.cert, files.cert)
    shutil.copy(paths.key, files.key)
    assert watch.renewed() == serial_of(paths.cert.read_bytes())
    assert watch.renewed() is None  # said once


def test_a_half_written_certificate_waits_for_its_key(pki: TestPKI, tmp_path: Path) -> None:
    files = _agent_files(pki, tmp_path)
    watch = CertificateWatch(files)
    watch.mark()
    paths = issue(pki.dir, Kind.agent, "h1", force=True)
    shutil.copy(paths.cert, files.cert)  # the certificate first, the key not yet
    assert watch.renewed() is None
    files.key.unlink()
    assert watch.renewed() is None  # a file missing: nothing to use
    shutil.copy(paths.key, files.key)
    assert watch.renewed() == serial_of(paths.cert.read_bytes())
