"""Which etcd member calls go to, and when a failed call may go again on the next."""

from __future__ import annotations

import grpc

from fleet.store._members import Members, retryable, target_of

UNAVAILABLE, DEADLINE = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED
NOT_SENT = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.11:2379: refused"


def test_each_endpoint_gets_a_channel_of_its_own_named_as_given() -> None:
    members = Members(["https://10.0.0.11:2379/", "etcd2.example:2379"], lambda t: f"ch:{t}")
    assert members.endpoints == ["10.0.0.11:2379", "etcd2.example:2379"]
    assert members.channels == ["ch:10.0.0.11:2379", "ch:etcd2.example:2379"]
    assert target_of("http://127.0.0.1:2379") == "127.0.0.1:2379"


def test_a_member_in_trouble_is_left_for_the_next_once_however_many_calls_it_broke() -> None:
    members = Members(["a:1", "b:1", "c:1"], str)
    assert members.current == 0
    members.failed(0, UNAVAILABLE, "down")
    members.failed(0, UNAVAILABLE, "down")  # another call that broke on it: already left
    assert members.current == 1
    members.failed(1, DEADLINE, "slow")
    assert members.current == 2
    members.failed(2, UNAVAILABLE, "down")
    assert members.current == 0  # round and round while none answers


def test_a_refusal_of_the_request_is_not_the_members_fault() -> None:
    members = Members(["a:1", "b:1"], str)
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, None):
        members.failed(0, code, "no")
    assert members.current == 0


def test_reads_go_again_after_any_unavailable_a_transaction_only_if_never_sent() -> None:
    assert retryable(UNAVAILABLE, "Socket closed", idempotent=True)
    assert not retryable(UNAVAILABLE, "Socket closed", idempotent=False)  # maybe applied
    assert retryable(UNAVAILABLE, NOT_SENT, idempotent=False)
    assert not retryable(DEADLINE, NOT_SENT, idempotent=True)  # the caller's time is spent
    assert not retryable(grpc.StatusCode.INVALID_ARGUMENT, "", idempotent=True)
