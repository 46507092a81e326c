"""The edge proxy's plan (fleet.agent.edge): pure, property-tested."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.agent.edge import (
    Backend,
    Route,
    Server,
    Table,
    apply,
    plan,
    table_from_config,
)
from fleet.proto import fleet_pb2 as pb

ROUTES = [
    Route("web", ("a.example",), ""),
    Route("web", ("a.example",), "/api"),
    Route("shop", ("shop.example",), "", check_path="/health"),
    Route("db", tcp_port=5432),
]
NAMES = ["s1", "s2", "s3", "s4"]
ADDRS = [("10.0.0.1", 8080), ("10.0.0.2", 8080)]


@st.composite
def tables(draw: st.DrawFn, observed: bool) -> Table:
    routes = draw(st.lists(st.sampled_from(ROUTES), unique=True, max_size=3))
    backends = {}
    for route in routes:
        names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=4))
        states = ["ready", "drain", "maint"] if observed else ["ready", "drain"]
        servers = {
            n: Server(
                n,
                *draw(st.sampled_from(ADDRS)),
                state=draw(st.sampled_from(states)),
                conns=draw(st.integers(0, 2)) if observed else 0,
            )
            for n in names
        }
        backends[route.backend] = Backend(route, servers)
    return Table(backends)


@settings(max_examples=200, deadline=None)
@given(tables(observed=True), tables(observed=False), st.booleans())
def test_applying_the_plan_gives_what_was_asked(
    current: Table, desired: Table, expired: bool
) -> None:
    waiting = {(b, s): 0.0 for b, be in current.backends.items() for s in be.servers}
    p = plan(current, desired, now=100.0 if expired else 1.0, waiting_since=waiting, bound=60.0)
    assert p.reload == (current.routes != desired.routes)
    if not p.reload:
        assert p.base == current
    got = apply(p.base, p.actions)  # raises on an impossible action (add twice, del ready)
    assert got.routes == desired.routes
    for name, want in desired.backends.items():
        have = got.backends[name].servers
        for s in want.servers.values():
            if s.state == "ready":
                assert have[s.name].state == "ready"
                assert (have[s.name].address, have[s.name].port) == (s.address, s.port)
            elif s.name in have:  # a draining server not present is not added
                assert have[s.name].state in ("drain", "maint")
        for s in have.values():
            if s.name not in want.servers:
                # a server that left is out of rotation, and gone unless still busy
                assert s.state == "maint"
                assert (name, s.name) in p.waiting
                was = current.server((name, s.name))
                assert was is None or was.state != "maint" or (s.conns > 0 and not expired)


@settings(max_examples=200, deadline=None)
@given(tables(observed=True), tables(observed=False))
def test_no_server_leaves_rotation_before_the_additions(current: Table, desired: Table) -> None:
    p = plan(current, desired)
    kinds = [a.kind for a in p.actions]
    adding = [i for i, k in enumerate(kinds) if k in ("add", "ready", "set_addr")]
    leaving = [i for i, k in enumerate(kinds) if k in ("drain", "maint", "delete", "shutdown")]
    if adding and leaving:
        assert max(adding) < min(leaving)
    # drain before maint before delete
    order = {"drain": 1, "maint": 2, "shutdown": 3, "delete": 3}
    ranks = [order[k] for k in kinds if k in order]
    assert ranks == sorted(ranks)


@settings(max_examples=200, deadline=None)
@given(tables(observed=True), tables(observed=False))
def test_a_second_plan_has_nothing_left_to_do(current: Table, desired: Table) -> None:
    """Level-triggered: once applied (and the leaving servers' connections ended),
    the same desired table needs nothing more."""
    p = plan(current, desired)
    after = apply(p.base, p.actions)
    idle = Table(
        {
            n: Backend(b.route, {k: replace(s, conns=0) for k, s in b.servers.items()})
            for n, b in after.backends.items()
        }
    )
    done = apply(idle, plan(idle, desired).actions)
    assert plan(done, desired).empty


def test_a_new_route_reloads_and_keeps_the_states_of_the_others() -> None:
    web, api = ROUTES[0], ROUTES[1]
    current = Table(
        {
            web.backend: Backend(
                web,
                {
                    "s1": Server("s1", "10.0.0.1", 1, "drain", conns=1),
                    "s2": Server("s2", "10.0.0.1", 2, "ready"),
                },
            )
        }
    )
    desired = Table(
        {
            web.backend: Backend(
                web,
                {
                    "s1": Server("s1", "10.0.0.1", 1, "drain"),
                    "s2": Server("s2", "10.0.0.1", 2, "ready"),
                },
            ),
            api.backend: Backend(
                api,
                {
                    "a1": Server("a1", "10.0.0.2", 1, "ready"),
                    "a2": Server("a2", "10.0.0.2", 2, "drain"),
                },
            ),
        }
    )
    p = plan(current, desired)
    assert p.reload
    assert p.base.backends[web.backend].servers["s1"].state == "drain"
    # the new backend starts with its ready server in the config; the draining one is not added
    assert set(p.base.backends[api.backend].servers) == {"a1"}
    assert p.actions == ()


def test_a_replacement_is_added_before_the_old_server_drains() -> None:
    web = ROUTES[0]
    current = Table({web.backend: Backend(web, {"old": Server("old", "10.0.0.1", 1)})})
    desired = Table(
        {
            web.backend: Backend(
                web,
                {
                    "old": Server("old", "10.0.0.1", 1, "drain"),
                    "new": Server("new", "10.0.0.1", 2),
                },
            )
        }
    )
    p = plan(current, desired)
    assert not p.reload
    assert [str(a) for a in p.actions] == [
        f"add {web.backend}/new (10.0.0.1:2)",
        f"drain {web.backend}/old (10.0.0.1:1)",
    ]


def test_a_server_that_left_is_deleted_once_idle_or_after_the_bound() -> None:
    web = ROUTES[0]
    busy = Table({web.backend: Backend(web, {"gone": Server("gone", "h", 1, "maint", conns=2)})})
    desired = Table({web.backend: Backend(web, {})})
    key = (web.backend, "gone")
    assert plan(busy, desired, now=10.0, waiting_since={key: 0.0}, bound=60).waiting == {key}
    late = plan(busy, desired, now=61.0, waiting_since={key: 0.0}, bound=60)
    assert [a.kind for a in late.actions] == ["shutdown", "delete"]
    ready = Table({web.backend: Backend(web, {"gone": Server("gone", "h", 1, "ready", conns=2)})})
    assert [a.kind for a in plan(ready, desired).actions] == ["maint"]


def test_table_from_config_names_what_it_drops() -> None:
    config = pb.EdgeConfig(
        version=3,
        routes=[
            pb.EdgeRoute(
                app="web",
                hosts=["A.example", "b.example."],
                path="/",
                check_path="/up",
                backends=[
                    pb.EdgeBackend(
                        name="web-0-r1-h1", address="10.0.0.1", port=8080, state="ready"
                    ),
                    pb.EdgeBackend(name="web-1-r1-h1", address="10.0.0.1", port=0, state="ready"),
                ],
            ),
            pb.EdgeRoute(app="bad", hosts=["no spaces allowed"]),
            pb.EdgeRoute(app="db", tcp_port=5432),
            pb.EdgeRoute(app="db2", tcp_port=5432),
        ],
    )
    table, problems = table_from_config(config)
    routes = sorted(table.routes)
    assert [r.app for r in routes] == ["db", "web"]
    web = next(b for b in table.backends.values() if b.route.app == "web")
    assert web.route.hosts == ("a.example", "b.example")
    assert web.route.path == ""
    assert list(web.servers) == ["web-0-r1-h1"]
    assert len(problems) == 3
    assert any("5432" in p and "'db'" in p for p in problems)
