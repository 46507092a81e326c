"""The dashboard calls the API's own handlers with a ``LocalCall``: the same ``rpc``
role check refuses a viewer's change, and lets a deployer's through to the same write."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from fleet.controlplane.api import FleetService
from fleet.controlplane.auth import LocalCall, caller
from fleet.dashboard.actions import Call, Refused, app_action, call_as, host_action
from fleet.errors import InvalidArgument
from fleet.pki.subjects import Identity, Kind, Role
from fleet.proto import fleet_pb2 as pb
from fleet.store import AppWrite
from tests.unit.controlplane.builders import StaticInformer, add_app, cluster, spec


class _Store:
    def __init__(self) -> None:
        self.writes: list[AppWrite] = []

    async def write_apps(self, writes: list[AppWrite]) -> int:
        self.writes += writes
        return 200


def _service() -> tuple[FleetService, _Store]:
    state = cluster(("h1", 4.0, 2**30))
    add_app(state, spec("replicas: 2\n"))
    store = _Store()
    informer: Any = StaticInformer(state)
    return FleetService(store, informer, None, None), store  # type: ignore[arg-type]


def _as(role: Role) -> LocalCall:
    return LocalCall(Identity(kind=Kind.client, name=f"token:{role}", role=role), "https test")


def test_the_caller_of_a_local_call_is_its_identity_whatever_the_server() -> None:
    call = _as(Role.viewer)
    assert caller(call, insecure=False) == call.identity  # type: ignore[arg-type]
    assert caller(call, insecure=True) == call.identity  # type: ignore[arg-type]


async def test_a_viewers_scale_is_refused_by_the_apis_own_check() -> None:
    service, store = _service()
    call = _as(Role.viewer)
    answer = await service.Scale(pb.ScaleRequest(name="web", replicas=5), call)
    assert answer is None
    assert call.code == grpc.StatusCode.PERMISSION_DENIED
    assert "may not change apps" in call.details and "deployer" in call.details
    assert store.writes == []


async def test_a_deployers_scale_writes_the_new_count() -> None:
    service, store = _service()
    call = _as(Role.deployer)
    answer = await service.Scale(pb.ScaleRequest(name="web", replicas=5), call)
    assert call.code is None
    assert answer.previous == 2
    [write] = store.writes
    assert write.record.spec.replicas == 5


async def test_a_viewer_may_read_apps() -> None:
    service, _ = _service()
    call = _as(Role.viewer)
    apps = await service.GetApps(pb.GetRequest(), call)
    assert call.code is None
    assert [a.name for a in apps.apps] == ["web"]


def _call_as(role: Role) -> Call:
    identity = Identity(kind=Kind.client, name=f"token:{role}", role=role)
    return lambda method, message: call_as(identity, "https test", method, message)


async def test_the_scale_button_is_the_apis_scale_with_its_refusal_as_a_status() -> None:
    service, store = _service()
    with pytest.raises(Refused) as refused:
        await app_action(service, _call_as(Role.viewer), "web", "scale", {"replicas": 3})
    assert refused.value.status == 403 and "may not change apps" in str(refused.value)
    assert store.writes == []
    said = await app_action(service, _call_as(Role.deployer), "web", "scale", {"replicas": 3})
    assert said == "scaled web from 2 to 3"
    assert [w.record.spec.replicas for w in store.writes] == [3]


@pytest.mark.parametrize("replicas", [None, -1, 1.5, "3", True])
async def test_a_scale_needs_a_whole_number(replicas: object) -> None:
    service, store = _service()
    with pytest.raises(InvalidArgument):
        await app_action(service, _call_as(Role.admin), "web", "scale", {"replicas": replicas})
    assert store.writes == []


async def test_unknown_apps_hosts_and_actions_are_refused() -> None:
    service, _ = _service()
    admin = _call_as(Role.admin)
    with pytest.raises(Refused) as unknown:
        await app_action(service, admin, "web", "explode", {})
    assert unknown.value.status == 404
    with pytest.raises(Refused) as missing:
        await app_action(service, admin, "nosuch", "scale", {"replicas": 1})
    assert missing.value.status == 404 and "not found" in str(missing.value)
    with pytest.raises(Refused) as host:
        await host_action(service, admin, "h1", "reboot")
    assert host.value.status == 404
    with pytest.raises(InvalidArgument):
        await host_action(service, admin, "../etc", "drain")


async def test_a_deployer_may_not_drain_a_host() -> None:
    service, _ = _service()
    with pytest.raises(Refused) as refused:
        await host_action(service, _call_as(Role.deployer), "h1", "drain")
    assert refused.value.status == 403 and "admin" in str(refused.value)
