"""The pure parts of an apply's refusals: which fields the cluster policy refuses, how a
problem the control plane names by request place and field finds its line in the file,
how problems travel in a status, and how large an apply's one etcd transaction is."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, cast

import grpc
import pytest

from fleet.controlplane.appchanges import plan_apply, too_large
from fleet.controlplane.desired import container_spec
from fleet.errors import (
    MAX_PROBLEM_BYTES,
    REQUEST,
    InvalidArgument,
    PermissionDenied,
    PolicyDenied,
    SpecError,
    SpecProblem,
    error_from_grpc,
    problems_trailer,
)
from fleet.policy import Policy, Privileges, refused_fields, violations
from fleet.spec import AppFile, load_documents
from fleet.store import AppWrite, Etcd, Store
from fleet.store._etcd import Compare, Put

TWO_APPS = """\
name: a
image: busybox:1
privileged: true
volumes:
  - data:/data
  - /var/log:/logs
---
---
name: b
image: busybox:1
cap_add: [NET_ADMIN, SYS_TIME]
resources:
  memory: 64Mi
"""


def test_refused_fields_name_each_field_with_the_option_that_allows_it() -> None:
    [spec] = load_documents(
        "name: a\nimage: x\nprivileged: true\nhost_network: true\n"
        "cap_add: [NET_ADMIN, SYS_TIME]\nvolumes: [data:/d, /var/log:/l:ro]\n",
        "a.yaml",
    )
    refused = refused_fields(spec, Policy(allow_capabilities=["SYS_TIME"]))
    assert [field for field, _ in refused] == [
        "privileged",
        "host_network",
        "cap_add[0]",
        "volumes[1]",
    ]
    messages = dict(refused)
    assert messages["privileged"].startswith(
        "app 'a': privileged is not allowed by the cluster policy; an admin can allow it "
        "with `fleet policy set --allow privileged`"
    )
    assert "`fleet policy set --allow host-network`" in messages["host_network"]
    assert "capability NET_ADMIN is not allowed" in messages["cap_add[0]"]
    assert "`fleet policy set --allow-bind /var/log`" in messages["volumes[1]"]

    allowing = Policy(
        allow_privileged=True,
        allow_host_network=True,
        allow_capabilities=["ALL"],
        allow_bind_mounts=["/var"],
    )
    assert refused_fields(spec, allowing) == []


def test_the_control_planes_problems_find_their_file_document_and_line() -> None:
    loaded = AppFile.parse(TWO_APPS, "apps.yaml")
    assert [s.name for s in loaded.specs] == ["a", "b"]
    found = loaded.located(
        [
            SpecProblem(REQUEST, 2, "cap_add[1]", None, "no SYS_TIME"),
            SpecProblem(REQUEST, 1, "volumes[1]", None, "no /var/log"),
            SpecProblem(REQUEST, 1, "privileged", None, "no privileged"),
            SpecProblem(REQUEST, 2, "resources.memory", None, "too much"),
        ]
    )
    # The second app is in document 3 (an empty one stands between); in file order.
    assert [str(p) for p in found] == [
        "apps.yaml:3 (document 1): privileged: no privileged",
        "apps.yaml:6 (document 1): volumes[1]: no /var/log",
        "apps.yaml:11 (document 3): cap_add[1]: no SYS_TIME",
        "apps.yaml:13 (document 3): resources.memory: too much",
    ]
    # About the whole request: the whole file, no document.
    [whole] = loaded.located([SpecProblem(REQUEST, 0, "", None, "too large")])
    assert str(whole) == "apps.yaml: too large"
    # Someone else's problem is left as it is.
    other = SpecProblem("x.yaml", 1, "name", 2, "bad")
    assert loaded.locate(other) == other


def test_problems_travel_one_by_one_in_the_status() -> None:
    problems = [
        SpecProblem(REQUEST, 1, "privileged", None, "app 'a': privileged is not allowed"),
        SpecProblem(REQUEST, 2, "volumes[0]", None, "app 'b': bind mount of /var/log ..."),
    ]
    denied = error_from_grpc(
        grpc.StatusCode.PERMISSION_DENIED, "cut", problems_trailer(PolicyDenied(problems))
    )
    assert isinstance(denied, PolicyDenied) and denied.problems == problems
    invalid = error_from_grpc(
        grpc.StatusCode.INVALID_ARGUMENT, "cut", problems_trailer(SpecError(problems))
    )
    assert isinstance(invalid, SpecError) and invalid.problems == problems

    # Other errors carry none; a status without (or with a garbled) trailer is plain.
    assert problems_trailer(InvalidArgument("x")) == ()
    plain = error_from_grpc(grpc.StatusCode.PERMISSION_DENIED, "viewer may not", ())
    assert type(plain) is PermissionDenied and str(plain) == "viewer may not"
    garbled = error_from_grpc(
        grpc.StatusCode.PERMISSION_DENIED, "d", (("fleet-problems", "[[1, 2]]"),)
    )
    assert type(garbled) is PermissionDenied and str(garbled) == "d"


def test_the_problems_trailer_is_bounded_and_says_how_many_it_left_out() -> None:
    # Messages that repeat (a policy's, for a hundred apps) compress: all of them go.
    [spec] = load_documents("name: a\nimage: x\nprivileged: true\nvolumes: [/v:/v]\n", "a")
    similar = [
        SpecProblem(REQUEST, i, field, None, message.replace("'a'", f"'app{i}'"))
        for i in range(1, 101)
        for field, message in refused_fields(spec, Policy())
    ]
    [(key, value)] = problems_trailer(PolicyDenied(similar))
    assert len(value) <= MAX_PROBLEM_BYTES
    value.encode("ascii")  # metadata values are ASCII
    error = error_from_grpc(grpc.StatusCode.PERMISSION_DENIED, "", ((key, value),))
    assert isinstance(error, PolicyDenied) and error.problems == similar

    # Messages that do not: as many as fit, then one saying how many more there were.
    unlike = [
        SpecProblem(REQUEST, i, "privileged", None, hashlib.sha256(bytes([i])).hexdigest())
        for i in range(1, 201)
    ]
    [(key, value)] = problems_trailer(PolicyDenied(unlike))
    assert len(value) <= MAX_PROBLEM_BYTES
    error = error_from_grpc(grpc.StatusCode.PERMISSION_DENIED, "", ((key, value),))
    assert isinstance(error, PolicyDenied)
    kept = len(error.problems) - 1
    assert 10 < kept < 200 and error.problems[:kept] == unlike[:kept]
    assert error.problems[-1].message == f"... and {200 - kept} more like these"


class _Limit:
    """What a ``Store`` asks of its etcd before any call: how large a transaction is."""

    def __init__(self, max_txn_ops: int = 128) -> None:
        self.max_txn_ops = max_txn_ops


def _store(max_txn_ops: int = 128) -> Store:
    return Store(cast(Etcd, _Limit(max_txn_ops)))


def _created(name: str) -> AppWrite:
    [spec] = load_documents(f"name: {name}\nimage: busybox:1\n", "a.yaml")
    plan = plan_apply(None, spec, 1_767_225_600.0)  # 2026-01-01T00:00:00Z
    return AppWrite(plan.record, 0, plan.new_revision, plan.prune_revisions)


def test_an_apply_is_one_transaction_of_two_operations_per_new_app() -> None:
    store = _store()
    writes = [_created(f"app{i}") for i in range(65)]
    assert store.apps_txn_size(writes[:64]) == 128  # the largest that fits
    assert store.apps_txn_size(writes) == 130
    # A change that prunes an old revision takes one more; a change of replicas alone,
    # only its record.
    pruning = AppWrite(writes[0].record, 5, writes[0].new_revision, (1,))
    assert store.apps_txn_size([pruning]) == 3
    scaled = [AppWrite(w.record, 5) for w in writes[:3]]
    assert store.apps_txn_size(scaled) == 3
    # etcd counts guards apart: a fenced store's guards are one more than its apps.
    fenced = store.fenced(Compare(b"/fleet/leader", 7))
    assert fenced.apps_txn_size(scaled) == 4


def test_chunks_of_large_writes_follow_the_limit() -> None:
    assert _store().txn_keys == 100
    assert _store(64).txn_keys == 58


def test_the_refusal_of_a_large_apply_says_how_many_apps_fit() -> None:
    message = too_large(100, 200, 128, 2)
    assert message.startswith("this apply writes 100 apps in 200 etcd operations")
    assert "etcd takes at most 128 in one transaction (its --max-txn-ops" in message
    assert message.endswith("split the file into applies of at most 64 apps")
    assert too_large(50, 150, 128, 3).endswith("at most 42 apps")


def test_a_transaction_larger_than_etcd_takes_is_refused_before_it_is_sent() -> None:
    async def run() -> None:
        # Nothing listens there: the refusal comes before any connection.
        etcd = Etcd(["127.0.0.1:9"], timeout=0.5)
        try:
            puts: list[Any] = [Put(f"/k{i}".encode(), b"v") for i in range(129)]
            with pytest.raises(InvalidArgument, match=r"129 operations .* \(128, its --max-txn"):
                await etcd.txn([], puts)
            guards = [Compare(b"/k", 0)] * 129
            with pytest.raises(InvalidArgument, match="129 operations"):
                await etcd.txn(guards, [])
        finally:
            await etcd.close()

    asyncio.run(run())
    with pytest.raises(ValueError, match="at least 16"):
        Etcd(["127.0.0.1:9"], max_txn_ops=8)


def test_devices_need_the_policy_named_by_their_option() -> None:
    [spec] = load_documents(
        "name: a\nimage: x\ndevices: [/dev/fuse, '/dev/snd/pcm0:/dev/snd/pcm0:rw']\n", "a.yaml"
    )
    refused = dict(refused_fields(spec, Policy(allow_devices=["/dev/snd"])))
    assert list(refused) == ["devices[0]"]
    assert "device /dev/fuse is not allowed by the cluster policy" in refused["devices[0]"]
    assert "`fleet policy set --allow-device /dev/fuse`" in refused["devices[0]"]
    assert refused_fields(spec, Policy(allow_devices=["/dev/fuse", "/dev/snd"])) == []
    # The agent checks the same words on what the control plane sent it.
    container = container_spec(spec, 0, 1, "h")
    assert violations(Privileges.of_container(container), Policy()) == [
        "device /dev/fuse",
        "device /dev/snd/pcm0",
    ]
    # /dev/sndx is not under /dev/snd.
    assert violations(Privileges(devices=("/dev/sndx",)), Policy(allow_devices=["/dev/snd"]))


def test_a_container_without_docker_options_is_sent_as_before() -> None:
    """No ``options`` at all when an app sets none (its container specs are the bytes
    they were, so no desired set changes on upgrade); each option when set."""
    [plain] = load_documents("name: a\nimage: x\n", "a.yaml")
    assert not container_spec(plain, 0, 1, "h").HasField("options")
    [spec] = load_documents(
        "name: a\nimage: x\nuser: '1'\nulimits: {nofile: 8}\nshm_size: 2Mi\n"
        "logging: {driver: local}\n",
        "a.yaml",
    )
    options = container_spec(spec, 0, 1, "h").options
    assert (options.user, options.shm_size_bytes, options.logging.driver) == ("1", 2 << 20, "local")
    assert (options.ulimits["nofile"].soft, options.ulimits["nofile"].hard) == (8, 8)
