"""The API's service class, built from one mixin per area, has a handler of its own for
every RPC of ``FleetService`` in fleet.proto (one it lacked would answer UNIMPLEMENTED)."""

from __future__ import annotations

from fleet.controlplane.api import FleetService
from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc


def test_every_rpc_has_a_handler() -> None:
    methods = [m.name for m in pb.DESCRIPTOR.services_by_name["FleetService"].methods]
    generated = pb_grpc.FleetServiceServicer
    missing = [m for m in methods if getattr(FleetService, m) is getattr(generated, m)]
    assert missing == []


def test_each_rpc_is_handled_in_one_area_only() -> None:
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["FleetService"].methods}
    areas = [
        c for c in FleetService.__mro__[1:] if c.__module__.startswith("fleet.controlplane.api.")
    ]
    seen: dict[str, str] = {}
    for area in areas:
        for name in methods & vars(area).keys():
            assert name not in seen, f"{name} is in {seen.get(name)} and {area.__name__}"
            seen[name] = area.__name__
    assert seen.keys() == methods
