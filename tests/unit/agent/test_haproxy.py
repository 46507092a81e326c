"""Parsing HAProxy 2.6's answers (fleet.agent.haproxy), on answers captured from the
real haproxy 2.6.12 of Debian 12."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.agent.edge import Backend, Route, Table
from fleet.agent.haproxy import (
    HAProxyError,
    Paths,
    ProcInfo,
    parse_proc,
    parse_servers_conn,
    parse_servers_state,
    render,
    split_listen,
)

STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 be_a 1 s1 127.0.0.1 0 0 1 1 621 8 2 0 6 0 0 0 - 18001 - 0 0 - - 0
3 be_a 2 s2 127.0.0.1 2 8 1 1 1 15 3 2 6 0 0 0 - 18002 - 0 0 - - 0
3 be_a 3 s3 127.0.0.1 0 1 1 1 0 1 0 0 2 0 0 0 - 18003 - 0 0 - - 0

"""  # noqa: E501

CONN = """# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[2]
be_a/s1 3/1 127.0.0.1 41817 - 5000 0 0 1 0 1 -1 1 1 0
be_a/s2 3/2 127.0.0.1 41277 - 0 1 2 2 0 0 0 0

"""  # noqa: E501

PROC_AFTER_FAILED_RELOAD = """#<PID>          <type>          <reloads>       <uptime>        <version>
27515           master          4 [failed: 1]   0d00h10m58s     2.6.12-1+deb12u4
# workers
19641           worker          1               0d00h00m08s     2.6.12-1+deb12u4
# programs

"""  # noqa: E501


def test_servers_state_reads_admin_states() -> None:
    rows = parse_servers_state(STATE)
    assert [(r.name, r.port, r.op_state, r.state) for r in rows] == [
        ("s1", 18001, 0, "ready"),
        ("s2", 18002, 2, "drain"),
        ("s3", 18003, 0, "maint"),  # a dynamic server, as added: in maintenance
    ]


def test_servers_conn_counts_idle_connections_and_short_dynamic_lines() -> None:
    assert parse_servers_conn(CONN) == {("be_a", "s1"): 1, ("be_a", "s2"): 1}


def test_show_proc_after_a_failed_reload_has_no_new_worker() -> None:
    assert parse_proc(PROC_AFTER_FAILED_RELOAD) == ProcInfo(27515, 4, ((19641, 1),))
    with pytest.raises(HAProxyError, match="Unknown command"):
        parse_proc("Unknown command.\n")


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("0.0.0.0:80", ("0.0.0.0", 80)), ("[::]:8080", ("::", 8080)), (":80", ("", 80))],
)
def test_split_listen(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected


@pytest.mark.parametrize("listen", ["80", "host:", "host:http", "h:70000"])
def test_split_listen_says_what_is_expected(listen: str) -> None:
    with pytest.raises(ValueError, match="ADDR:PORT"):
        split_listen(listen)


def test_a_routes_timeout_is_its_backends_server_timeout(tmp_path: Path) -> None:
    quick = Route("web", ("web.example",), "/", timeout=2.5)
    plain = Route("api", ("api.example",), "/")
    table = Table({r.backend: Backend(r) for r in (quick, plain)})
    text = render(table, "127.0.0.1:8080", Paths(tmp_path))
    web = text.split(f"backend {quick.backend}\n")[1].split("\n\n")[0]
    api = text.split(f"backend {plain.backend}\n")[1].split("\n\n")[0]
    assert "    timeout server 2500ms" in web.splitlines()
    assert "timeout server" not in api  # the defaults section's 60s


def test_sockets_move_to_a_short_dir_when_the_state_dirs_path_is_too_long() -> None:
    short = Paths(Path("/var/lib/fleet/edge"))
    assert short.master == Path("/var/lib/fleet/edge/master.sock")
    deep = Paths(Path("/tmp/" + "d" * 90 + "/edge"))
    assert deep.master.parent == deep.admin.parent != deep.dir
    assert len(str(deep.admin)) < 96  # sun_path, with HAProxy's ".<pid>.tmp" while binding
    assert Paths(Path("/tmp/" + "d" * 90 + "/edge")).master == deep.master  # found again
    assert deep.config.parent == deep.dir
