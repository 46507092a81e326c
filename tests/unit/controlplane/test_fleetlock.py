"""Tests of FleetLock's pure parts: the request as Zincati sends it (and what is
refused), who may ask, which host an id names, and the state machine of a host's lock
over fleet's maintenance semaphore. Each decision is applied back to the state
(``apply``) and the world is played between requests (a drain ends, a host reboots)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.controlplane.fleetlock import (
    Answer,
    Credentials,
    Refused,
    authorize,
    find_host,
    host_group,
    parse_request,
    parse_tokens,
    pre_reboot,
    steady_state,
)
from fleet.store import ClusterState, Versioned
from fleet.store.records import LiveRecord, MaintenanceRecord
from fleet.zincati import zincati_id
from tests.unit.controlplane.builders import add_host, cluster

HEADERS = {"fleet-lock-protocol": "true", "content-type": "application/json"}


def body(client_id: str = "h1", group: str = "default") -> bytes:
    return json.dumps({"client_params": {"id": client_id, "group": group}}).encode()


# ------------------------------------------------------------------ the request


def test_a_zincati_request_parses() -> None:
    request = parse_request("POST", "/v1/pre-reboot", HEADERS, body("abc", "workers"))
    assert (request.operation, request.id, request.group) == ("pre-reboot", "abc", "workers")
    request = parse_request("POST", "/v1/steady-state", HEADERS, body())
    assert request.operation == "steady-state"
    # A base_url with a path of its own keeps it (Zincati joins "v1/pre-reboot" onto it).
    assert parse_request("POST", "/fleet/v1/pre-reboot", HEADERS, body()).operation == "pre-reboot"
    # Zincati's first releases named the id node_uuid.
    old = json.dumps({"client_params": {"node_uuid": "abc", "group": "default"}}).encode()
    assert parse_request("POST", "/v1/pre-reboot", HEADERS, old).id == "abc"


@pytest.mark.parametrize(
    ("method", "path", "headers", "payload", "status", "kind"),
    [
        ("POST", "/v1/reboot", HEADERS, body(), 404, "not_found"),
        ("GET", "/v1/pre-reboot", HEADERS, body(), 405, "method_not_allowed"),
        ("POST", "/v1/pre-reboot", {}, body(), 400, "missing_header"),
        ("POST", "/v1/pre-reboot", {"fleet-lock-protocol": "yes"}, body(), 400, "missing_header"),
        ("POST", "/v1/pre-reboot", HEADERS, b"{not json", 400, "bad_body"),
        ("POST", "/v1/pre-reboot", HEADERS, b"[]", 400, "bad_body"),
        ("POST", "/v1/pre-reboot", HEADERS, b'{"client_params": 1}', 400, "bad_body"),
        ("POST", "/v1/pre-reboot", HEADERS, body(""), 400, "bad_body"),
        ("POST", "/v1/pre-reboot", HEADERS, body("x" * 300), 400, "bad_body"),
        ("POST", "/v1/pre-reboot", HEADERS, body("a", "bad group"), 400, "bad_body"),
        ("POST", "/v1/pre-reboot", HEADERS, body("a", ""), 400, "bad_body"),
        ("POST", "/v1/pre-reboot", HEADERS, b"\xff\xfe", 400, "bad_body"),
    ],
)
def test_malformed_requests_get_the_protocols_error(
    method: str, path: str, headers: dict[str, str], payload: bytes, status: int, kind: str
) -> None:
    with pytest.raises(Refused) as refused:
        parse_request(method, path, headers, payload)
    assert (refused.value.status, refused.value.kind) == (status, kind)
    assert refused.value.value  # a non-empty description, as the protocol asks


@given(st.binary(max_size=200))
def test_any_body_is_parsed_or_refused_never_crashes(payload: bytes) -> None:
    try:
        parse_request("POST", "/v1/pre-reboot", HEADERS, payload)
    except Refused as refused:
        assert refused.status == 400


# ------------------------------------------------------------------ identity and auth


def test_zincati_id_matches_systemds_app_specific_id() -> None:
    # `systemd-id128 machine-id --app-specific=de35106b6ec24688b63afddaa156679b` on a
    # machine with this /etc/machine-id (systemd 252, Debian 12) printed this id.
    machine = "3d1219c7c4c5404aaa1f6d2a48adfda4"
    assert zincati_id(machine) == "975228d46dc94622b9bbe16671e2b58d"
    assert zincati_id(machine + "\n") == zincati_id(machine.upper())
    with pytest.raises(ValueError):
        zincati_id("not-a-machine-id")


def test_tokens_are_kept_hashed_and_bad_lines_named() -> None:
    tokens = parse_tokens("# groups\ndefault s3cr3t-token-0123456\nworkers other-token-0123456\n")
    assert set(tokens) == {"default", "workers"}
    assert "s3cr3t-token-0123456" not in tokens.values()
    with pytest.raises(ValueError, match="line 1"):
        parse_tokens("default short\n")


def test_a_groups_token_counts_for_its_group_only() -> None:
    tokens = parse_tokens("default s3cr3t-token-0123456\n")
    basic = "Basic " + base64.b64encode(b"default:s3cr3t-token-0123456").decode()
    assert authorize(Credentials(authorization=basic), "default", tokens, open_to_all=False) is None
    bearer = Credentials(authorization="Bearer s3cr3t-token-0123456")
    assert authorize(bearer, "default", tokens, open_to_all=False) is None
    for credentials, group in [
        (bearer, "workers"),
        (Credentials(authorization="Bearer wrong"), "default"),
        (Credentials(authorization="Basic !!!"), "default"),
        (Credentials(), "default"),
    ]:
        with pytest.raises(Refused) as refused:
            authorize(credentials, group, tokens, open_to_all=False)
        assert refused.value.status == 401
    assert authorize(Credentials(), "default", {}, open_to_all=True) is None
    # An agent certificate: this host's requests only (the port checks the host).
    assert authorize(Credentials(cert_host="h2"), "default", {}, open_to_all=False) == "h2"


def test_ids_map_to_hosts_by_reported_zincati_id_or_host_id() -> None:
    state = cluster()
    add_host(state, "h1", facts={"zincati_id": "aaa"})
    add_host(state, "h2", facts={"zincati_id": "bbb"})
    assert find_host(state, "aaa") == "h1"
    assert find_host(state, "h2") == "h2"
    with pytest.raises(Refused) as refused:
        find_host(state, "zzz")
    assert (refused.value.status, refused.value.kind) == (404, "unknown_client")
    add_host(state, "h3", facts={"zincati_id": "aaa"})  # a cloned machine id
    with pytest.raises(Refused) as refused:
        find_host(state, "aaa")
    assert refused.value.kind == "ambiguous_client"


def test_groups_come_from_a_host_label() -> None:
    state = cluster()
    add_host(state, "h1", admin_labels={"tier": "db"})
    add_host(state, "h2", labels={"tier": "web"})
    add_host(state, "h3")
    assert [host_group(state, h, "tier") for h in ("h1", "h2", "h3")] == ["db", "web", "default"]
    assert host_group(state, "h1", "") == "default"


# ------------------------------------------------------------------ the lock


def pool(count: int = 3, max_slots: int = 1) -> ClusterState:
    state = cluster()
    for i in range(1, count + 1):
        add_host(state, f"h{i}", facts={"boot_id": f"b{i}-0", "os_version": "1"})
    state.maintenance = Versioned(MaintenanceRecord(max=max_slots), 5)
    return state


def apply(state: ClusterState, host_id: str, answer: Answer) -> Answer:
    if answer.host is not None and answer.maintenance is not None:
        state.hosts[host_id] = Versioned(answer.host, state.hosts[host_id].mod_revision + 1)
        state.maintenance = Versioned(answer.maintenance, 50)
    return answer


def holders(state: ClusterState) -> dict[str, str]:
    return dict(state.maintenance.value.holders) if state.maintenance else {}


def drained(state: ClusterState, host_id: str) -> None:
    stored = state.hosts[host_id]
    state.hosts[host_id] = Versioned(stored.value.model_copy(update={"state": "drained"}), 77)


def reboot(state: ClusterState, host_id: str, *, down: bool = False) -> None:
    stored = state.hosts[host_id]
    facts = {**stored.value.facts, "boot_id": stored.value.facts["boot_id"] + "+1"}
    state.hosts[host_id] = Versioned(stored.value.model_copy(update={"facts": facts}), 78)
    if down:
        state.alive.pop(host_id, None)
    else:
        state.alive[host_id] = Versioned(LiveRecord(server="cp", connected_at="t"), 79)


def test_pre_reboot_takes_a_slot_drains_and_says_200_only_once_drained() -> None:
    state = pool()
    first = apply(state, "h1", pre_reboot(state, "h1", "default", 1000.0))
    assert (first.status, first.kind) == (409, "failed_lock_draining")
    assert holders(state) == {"h1": "fleetlock group default"}
    assert state.hosts["h1"].value.state == "draining"
    assert state.hosts["h1"].value.drain is not None
    # Asking again while it drains: still "not yet", nothing written.
    again = pre_reboot(state, "h1", "default", 1001.0)
    assert (again.status, again.writes) == (409, False)
    # The others wait: one slot.
    other = pre_reboot(state, "h2", "default", 1001.0)
    assert (other.status, other.kind, other.writes) == (409, "failed_lock_semaphore_full", False)
    drained(state, "h1")
    done = pre_reboot(state, "h1", "default", 1002.0)
    assert (done.status, done.writes) == (200, False)


def test_steady_state_waits_for_a_new_boot_then_uncordons_and_releases() -> None:
    state = pool()
    apply(state, "h1", pre_reboot(state, "h1", "default", 1000.0))
    drained(state, "h1")
    assert pre_reboot(state, "h1", "default", 1001.0).status == 200
    # Not rebooted yet (same boot id): the slot stays.
    assert steady_state(state, "h1").kind == "failed_unlock_not_back"
    reboot(state, "h1", down=True)  # new boot id, but the agent is not connected
    assert steady_state(state, "h1").status == 409
    reboot(state, "h1")
    answer = apply(state, "h1", steady_state(state, "h1"))
    assert answer.status == 200 and answer.writes
    assert holders(state) == {}
    assert state.maintenance is not None and state.maintenance.value.fleetlock == {}
    assert (state.hosts["h1"].value.state, state.hosts["h1"].value.drain) == ("ready", None)
    # Idempotent, and the next host proceeds.
    assert (steady_state(state, "h1").status, steady_state(state, "h1").writes) == (200, False)
    assert apply(state, "h2", pre_reboot(state, "h2", "default", 1003.0)).writes


def test_steady_state_before_the_200_gives_the_slot_back_at_once() -> None:
    """Zincati restarted while its host drained: it never rebooted for us."""
    state = pool()
    apply(state, "h1", pre_reboot(state, "h1", "default", 1000.0))
    answer = apply(state, "h1", steady_state(state, "h1"))
    assert answer.status == 200 and holders(state) == {}
    assert state.hosts["h1"].value.state == "ready"


def test_a_slot_held_by_a_manual_drain_is_not_taken_over() -> None:
    state = pool(max_slots=2)
    assert state.maintenance is not None
    state.maintenance = Versioned(
        state.maintenance.value.model_copy(update={"holders": {"h1": "fleet drain"}}), 6
    )
    answer = pre_reboot(state, "h1", "default", 1000.0)
    assert (answer.status, answer.kind, answer.writes) == (409, "failed_lock_held_elsewhere", False)
    # steady-state from it: it holds no FleetLock slot, so 200 and the drain's slot stays.
    assert (steady_state(state, "h1").status, steady_state(state, "h1").writes) == (200, False)
    # With two slots another host may go meanwhile.
    assert apply(state, "h2", pre_reboot(state, "h2", "default", 1000.0)).writes
    assert pre_reboot(state, "h3", "default", 1000.0).kind == "failed_lock_semaphore_full"


@given(st.lists(st.tuples(st.sampled_from(["h1", "h2", "h3"]), st.integers(0, 3)), max_size=40))
def test_never_more_holders_than_slots(events: list[tuple[str, int]]) -> None:
    """Whatever order hosts ask, drain and reboot in, at most ``max`` hold a slot and
    only a drained host ever hears 200 on pre-reboot."""
    state = pool(max_slots=1)
    for host_id, action in events:
        if action == 0:
            answer = apply(state, host_id, pre_reboot(state, host_id, "default", 1000.0))
            if answer.status == 200:
                assert state.hosts[host_id].value.state == "drained"
        elif action == 1 and state.hosts[host_id].value.state == "draining":
            drained(state, host_id)
        elif action == 2:
            reboot(state, host_id)
        else:
            apply(state, host_id, steady_state(state, host_id))
        assert len(holders(state)) <= 1
        assert state.maintenance is not None
        assert set(state.maintenance.value.fleetlock) == set(holders(state))
