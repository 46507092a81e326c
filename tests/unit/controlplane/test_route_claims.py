"""Tests of ``appchanges.plan_routes``: which ingress routes an apply takes, keeps and
gives up, and how it refuses a route another app holds (or another app of the same
apply claims), naming the holder and the way out at the field it comes from; and of
the edge host's listen address a registration stores."""

from __future__ import annotations

import pytest

from fleet.controlplane.appchanges import RoutePlan, plan_routes, routes_held
from fleet.controlplane.registration import check_ingress, host_record
from fleet.errors import REQUEST, InvalidArgument, SpecError
from fleet.proto import fleet_pb2 as pb
from fleet.spec import AppSpec, load_documents
from fleet.store import ClusterState, Versioned
from fleet.store.records import RouteRecord


def spec(name: str, ingress: str = "") -> AppSpec:
    [parsed] = load_documents(
        f"name: {name}\nimage: img\n" + (f"ingress: {ingress}\n" if ingress else "")
    )
    return parsed


def test_a_new_app_takes_its_routes_as_new_claims() -> None:
    plans = plan_routes(
        [spec("web", "{port: 80, host: [b.example, a.example], path: /x}")], ClusterState(0)
    )
    assert plans == {"web": RoutePlan(held=(("http:a.example/x", 0), ("http:b.example/x", 0)))}
    assert plan_routes([spec("web")], ClusterState(0)) == {"web": RoutePlan()}


def test_an_app_keeps_its_own_claims_at_their_revisions_and_gives_up_the_rest() -> None:
    state = ClusterState(revision=100)
    state.routes["http:web/"] = Versioned(RouteRecord(app="web"), 41)
    state.routes["tcp:9000"] = Versioned(RouteRecord(app="web"), 42)
    state.routes["http:other/"] = Versioned(RouteRecord(app="other"), 43)
    assert routes_held(state, "web") == {"http:web/": 41, "tcp:9000": 42}
    [plan] = plan_routes([spec("web", "{port: 80}")], state).values()
    assert plan == RoutePlan(held=(("http:web/", 41),), released=(("tcp:9000", 42),))
    [plan] = plan_routes([spec("web")], state).values()  # no ingress any more
    assert plan == RoutePlan(released=(("http:web/", 41), ("tcp:9000", 42)))


def test_a_route_another_app_holds_is_refused_naming_it() -> None:
    state = ClusterState(revision=100)
    state.routes["http:shop.example/"] = Versioned(RouteRecord(app="shop"), 41)
    state.routes["tcp:5432"] = Versioned(RouteRecord(app="db"), 42)
    with pytest.raises(SpecError) as info:
        plan_routes(
            [
                spec("ok", "{port: 80, host: ok.example}"),
                spec("blog", "{port: 80, host: [blog.example, shop.example]}"),
                spec("pg", "{port: 5432, tcp: 5432}"),
            ],
            state,
        )
    found = [(p.source, p.document, p.path, p.message) for p in info.value.problems]
    assert found == [
        (
            REQUEST,
            2,
            "ingress.host",
            "the ingress route host shop.example path / is already claimed by app 'shop': "
            "choose another host name or path, or first remove the ingress of 'shop' (apply "
            "it without one, or `fleet delete app shop`)",
        ),
        (
            REQUEST,
            3,
            "ingress.tcp",
            "the ingress route tcp port 5432 of the edges is already claimed by app 'db': "
            "choose another port for tcp, or first remove the ingress of 'db' (apply it "
            "without one, or `fleet delete app db`)",
        ),
    ]


def test_two_apps_of_one_apply_cannot_claim_one_route() -> None:
    with pytest.raises(SpecError) as info:
        plan_routes(
            [spec("a", "{port: 80, host: x.example}"), spec("b", "{port: 8, host: x.example}")],
            ClusterState(0),
        )
    [problem] = info.value.problems
    assert problem.document == 2
    assert "already claimed by app 'a' in this same apply" in problem.message


def test_the_same_host_on_another_path_is_another_route() -> None:
    state = ClusterState(revision=100)
    state.routes["http:x.example/"] = Versioned(RouteRecord(app="site"), 41)
    [plan] = plan_routes([spec("api", "{port: 80, host: x.example, path: /api}")], state).values()
    assert plan.held == (("http:x.example/api", 0),)


@pytest.mark.parametrize(
    ("given", "stored"),
    [("", ""), ("0.0.0.0:80", "0.0.0.0:80"), ("[::]:443", "[::]:443"), ("[::1]:80", "[::1]:80")],
)
def test_an_edges_listen_address_is_stored_in_normal_form(given: str, stored: str) -> None:
    register = pb.Register(host_id="edge1", ingress=given)
    assert host_record(register, None).ingress == stored


@pytest.mark.parametrize("given", ["edge:80", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", ":80"])
def test_an_edges_listen_address_must_be_an_ip_and_a_port(given: str) -> None:
    with pytest.raises(InvalidArgument, match="the ingress address must be ADDR:PORT"):
        check_ingress(given)
