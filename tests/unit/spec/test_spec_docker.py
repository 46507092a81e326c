"""Tests of Docker's other container options in app files (``fleet.spec._docker``): the
shapes compose writes them in, what each becomes, and every refusal at its field and line
with a message that says what to write instead."""

from __future__ import annotations

import pytest

from fleet.errors import SpecError, SpecProblem
from fleet.spec import DEFAULT_LOGGING, AppSpec, json_schema, load_documents, parse_spec_json

BASE = "name: web\nimage: img\n"  # what follows starts on line 3

EVERY = """\
entrypoint: ["/bin/sh", "-c"]
user: "1000:1000"
working_dir: /srv
hostname: web-1.internal
read_only: true
tmpfs: ["/run:size=64m,mode=1777", /tmp]
stop_signal: quit
init: true
ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 512, core: -1}
dns: [10.0.0.2, "::1"]
dns_search: example.com
extra_hosts: ["db:10.0.0.5", "v6=::1", "gw:host-gateway"]
sysctls: {net.core.somaxconn: 1024, kernel.shmmax: "65536", fs.mqueue.msg_max: 20}
shm_size: 256Mi
cap_drop: [net_raw, CAP_MKNOD]
devices: [/dev/fuse, "/dev/null:/dev/mynull:rw"]
logging: {driver: local, options: {max-size: 20m, max-file: 5}}
networks: {backend: , front: {}}
"""


LOG = "logging.options."


def problem(text: str) -> SpecProblem:
    with pytest.raises(SpecError) as info:
        load_documents(BASE + text, "app.yaml")
    [found] = info.value.problems
    return found


def test_every_option_in_compose_shapes_reads_to_what_docker_takes() -> None:
    [spec] = load_documents(BASE + EVERY)
    assert spec.entrypoint == ["/bin/sh", "-c"]
    assert (spec.user, spec.working_dir, spec.hostname) == ("1000:1000", "/srv", "web-1.internal")
    assert spec.read_only and spec.init
    assert spec.tmpfs == ["/run:size=64m,mode=1777", "/tmp"]
    assert spec.stop_signal == "SIGQUIT"
    assert {k: (u.soft, u.hard) for k, u in spec.ulimits.items()} == {
        "nofile": (1024, 2048),
        "nproc": (512, 512),
        "core": (-1, -1),
    }
    assert spec.dns == ["10.0.0.2", "::1"]
    assert spec.dns_search == ["example.com"]
    assert spec.extra_hosts == ["db:10.0.0.5", "v6:::1", "gw:host-gateway"]
    assert spec.sysctls == {
        "net.core.somaxconn": "1024",
        "kernel.shmmax": "65536",
        "fs.mqueue.msg_max": "20",
    }
    assert spec.shm_size == 256 << 20
    assert spec.cap_drop == ["NET_RAW", "MKNOD"]
    assert spec.devices == ["/dev/fuse", "/dev/null:/dev/mynull:rw"]
    assert spec.logging is not None
    assert spec.networks == ["backend", "front"]
    assert (spec.logging.driver, spec.logging.options) == (
        "local",
        {"max-size": "20m", "max-file": "5"},
    )


def test_options_survive_the_api_round_trip_and_left_out_are_not_dumped() -> None:
    [spec] = load_documents(BASE + EVERY + "extra_hosts: {db: 10.0.0.5}\n" * 0)
    again = parse_spec_json(spec.model_dump_json())
    assert again == spec and again.template_hash() == spec.template_hash()
    [plain] = load_documents(BASE)
    dumped = plain.model_dump()
    assert "logging" not in dumped and "user" not in dumped and "ulimits" not in dumped
    assert plain.logging is None  # the agent then uses fleet's default
    assert DEFAULT_LOGGING.driver == "json-file"
    assert DEFAULT_LOGGING.options == {"max-size": "10m", "max-file": "3"}


def test_extra_hosts_as_a_mapping_and_sysctls_as_a_list() -> None:
    [spec] = load_documents(
        BASE + "extra_hosts: {db: 10.0.0.5}\nsysctls: [net.ipv4.ip_forward=1]\n"
    )
    assert spec.extra_hosts == ["db:10.0.0.5"]
    assert spec.sysctls == {"net.ipv4.ip_forward": "1"}


@pytest.mark.parametrize(
    "text, path, line, words",
    [
        ("entrypoint: []\n", "entrypoint", 3, "leave entrypoint out to run the image's ENTRYPOINT"),
        ('entrypoint: "sh \'x"\n', "entrypoint", 3, "cannot split the entrypoint"),
        ("user: 'root user'\n", "user", 3, "USER:GROUP"),
        ("working_dir: app\n", "working_dir", 3, "absolute path like /app"),
        ("hostname: web_1\n", "hostname", 3, "letters, digits and '-'"),
        ("hostname: " + "a" * 64 + "\n", "hostname", 3, "at most 63"),
        ("read_only: yes\n", "read_only", 3, "expected true or false"),
        ("tmpfs: [run]\n", "tmpfs[0]", 3, "absolute path: start it with /"),
        ("tmpfs: ['/run:size=big']\n", "tmpfs[0]", 3, "size=N[k|m|g|%]"),
        ("tmpfs: ['/run:suid=1']\n", "tmpfs[0]", 3, "like /run:size=64m,mode=1777"),
        ("stop_signal: SIGFOO\n", "stop_signal", 3, "like SIGTERM"),
        ("stop_signal: 99\n", "stop_signal", 3, "1 to 64"),
        ("init: 1\n", "init", 3, "expected true or false"),
        ("ulimits:\n  nofiles: 10\n", "ulimits.nofiles", 4, "one of core, cpu"),
        ("ulimits:\n  nofile: {soft: 10}\n", "ulimits.nofile", 4, "expected hard as a whole"),
        ("ulimits:\n  nofile: {soft: 20, hard: 10}\n", "ulimits.nofile", 4, "at most the hard"),
        ("ulimits:\n  nofile: {soft: 1, hard: 2, max: 3}\n", "ulimits.nofile.max", 4, "soft"),
        ("ulimits:\n  nofile: lots\n", "ulimits.nofile", 4, "{soft: 1024, hard: 2048}"),
        ("dns: [dns.google]\n", "dns[0]", 3, "IP address like 10.0.0.2"),
        ("dns_search: [-bad-]\n", "dns_search[0]", 3, "like example.com"),
        ("extra_hosts: [db]\n", "extra_hosts[0]", 3, "HOST:IP like db:10.0.0.5"),
        ("extra_hosts: ['db:10.0.0']\n", "extra_hosts[0]", 3, "host-gateway"),
        ("sysctls: {vm.swappiness: 10}\n", "sysctls.vm.swappiness", 3, "set it on the hosts"),
        ("sysctls: [net.core.somaxconn]\n", "sysctls", 3, "NAME=VALUE"),
        ("sysctls: {'net..x': 1}\n", "sysctls.net..x", 3, "like net.core.somaxconn"),
        ("shm_size: 1k\n", "shm_size", 3, "at least 1Mi"),
        ("shm_size: lots\n", "shm_size", 3, "like 512, 64Mi or 1G"),
        ("cap_drop: [net-raw]\n", "cap_drop[0]", 3, "such as NET_ADMIN"),
        ("devices: [/etc/passwd]\n", "devices[0]", 3, "under /dev, like /dev/fuse"),
        ("devices: ['/dev/sda:/dev/xvda:rwx']\n", "devices[0]", 3, "letters of rwm"),
        ("devices: ['/dev/../etc']\n", "devices[0]", 3, "contains '..'"),
        ("networks: [Back_End]\n", "networks[0]", 3, "a network name that is"),
        ("networks:\n  backend: {aliases: [db]}\n", "networks", 4, "write networks: [NAME"),
        ("logging: {driver: Json File}\n", "logging.driver", 3, "json-file, local, journald"),
        ("logging: {drivr: local}\n", "logging.drivr", 3, "did you mean 'driver'"),
        (
            "logging:\n  driver: json-file\n  options: {max-sise: 1m}\n",
            "logging.options.max-sise",
            5,
            "(did you mean 'max-size'?)",
        ),
        (
            "logging:\n  driver: local\n  options: {max-size: lots}\n",
            "logging.options.max-size",
            5,
            "like 10m",
        ),
        (
            "logging:\n  driver: local\n  options: {max-file: 0}\n",
            "logging.options.max-file",
            5,
            ">= 1",
        ),
    ],
)
def test_bad_values_are_refused_at_their_field_and_line_with_a_fix(
    text: str, path: str, line: int, words: str
) -> None:
    found = problem(text)
    assert (found.source, found.path, found.line) == ("app.yaml", path, line), found
    assert words in found.message, found.message


def test_options_that_clash_with_the_host_network_are_refused() -> None:
    found = problem(
        "host_network: true\nhostname: web\nnetworks: [a]\n"
        "sysctls: {net.core.somaxconn: 1, kernel.sem: 1}\n"
    )
    assert "hostname, networks, sysctls net.core.somaxconn cannot be set with host_network" in str(
        found
    )
    assert "remove them, or host_network" in found.message
    found = problem("host_network: true\nsysctls: {kernel.domainname: x}\n")
    assert "sysctls kernel.domainname cannot be set with host_network" in found.message
    [spec] = load_documents(BASE + "host_network: true\nsysctls: {kernel.sem: '1 2 3 4'}\n")
    assert spec.sysctls == {"kernel.sem": "1 2 3 4"}


def test_other_drivers_options_are_passed_as_written() -> None:
    [spec] = load_documents(
        BASE + "logging: {driver: syslog, options: {syslog-address: 'udp://1.2.3.4:514'}}\n"
    )
    assert spec.logging is not None
    assert spec.logging.options == {"syslog-address": "udp://1.2.3.4:514"}


def test_the_json_schema_describes_the_options() -> None:
    properties = json_schema()["properties"]
    for field in ("entrypoint", "ulimits", "sysctls", "logging", "devices", "shm_size"):
        assert field in properties, field
    assert "policy" in properties["devices"]["description"]
    assert "net.*" in properties["sysctls"]["description"]


def test_a_spec_without_options_is_what_it_was() -> None:
    """Left out, no option shows in a dump: a control plane not yet upgraded (a rolling
    upgrade) still reads the records of apps that use none."""
    [spec] = load_documents(
        BASE + "user: ''\nhostname: ''\nread_only: false\ntmpfs: []\nlogging:\nstop_signal: ''\n"
    )
    assert spec.model_dump() == AppSpec(name="web", image="img").model_dump()
