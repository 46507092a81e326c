"""Fuzzing a running control plane (hypothesis): hostile API requests and agent streams
over mutual TLS, straight through the generated stubs.

Every refused call must end with a refusal status and a readable message of the server's
own (no traceback, no exception class name, not a transport error standing in for it);
the server must keep running and answering; and etcd under the prefix must stay byte for
byte what it was, except the keys that the one legitimate agent ("fuzzhost", whose
certificate these tests hold) writes by registering:

    hosts/fuzzhost, alive/fuzzhost, status/fuzzhost
    new events/... keys whose event is about fuzzhost (its own, and host-up/-down)

The tests at the end of the file pin bugs this fuzzing found, since fixed.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fleet.proto import fleet_pb2 as pb
from fleet.proto import fleet_pb2_grpc as pb_grpc
from fleet.spec import load_documents
from fleet.testing import EtcdServer, wait_until
from fleet.testing.certs import TestPKI
from fleet.testing.fleetprocs import FleetServerProcess
from fleet.transport import Transport
from tests.helpers import b64, etcd_post, etcd_prefix, prefix_end
from tests.unit.spec.builders import VALID, mutations

PREFIX = "/fuzz/"
HOST = "fuzzhost"  # the agent certificate these tests hold
APP = "fuzzapp"  # stored before the fuzzing, with 0 replicas (so no placement ever)
MAX_REPLICAS = 10_000
CALL_TIMEOUT = 10.0
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
    }
)
# Python's own words in a message: a traceback, a class, an exception's name.
LEAK = re.compile(r"Traceback|<class '|\b[A-Z][A-Za-z]*(?:Exception|Error)\b")
# What the server quotes back is the caller's own input (an app named 'AError' once
# matched LEAK): left out of that check, the quotes kept (so "<class '" still shows).
QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# What the client library says when the server's answer never arrived whole.
TRANSPORT_STAND_INS = ("Stream removed", "Received RST_STREAM", "Socket closed")

_SLOW_IS_FINE = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.large_base_example,
]
API = settings(max_examples=100, deadline=None, suppress_health_check=_SLOW_IS_FINE)
AGENT = settings(max_examples=75, deadline=None, suppress_health_check=_SLOW_IS_FINE)
STATS: Counter[str] = Counter()  # outcomes per family, printed at the end of the module
MUST_REFUSE = [  # families whose every call must be refused (checked call by call, and here)
    "apply must-refuse",
    "apply malformed",
    "scale",
    "scale too far",
    "delete",
    "agent: no register first",
    "agent: other host id",
    "agent: invalid register",
    "oversized",
    "oversized register",
    "oversized heartbeat",
]

U32 = st.integers(0, 2**32 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=40)
NAMES = st.one_of(
    st.text(max_size=300),
    st.sampled_from(["", "..", "/", "\0", "a/b", "../apps/x", "fuzzapp\n", "FUZZAPP", "-a"]),
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,61}[a-z0-9]", fullmatch=True),  # valid, but absent
)


@dataclass(repr=False)  # hypothesis prints the arguments of a failing example
class Plane:
    etcd: EtcdServer
    server: FleetServerProcess
    api: Any  # FleetServiceStub
    agent: Any  # AgentServiceStub for HOST
    raw: grpc.Channel
    pki: TestPKI
    baseline: dict[str, bytes]
    channels: list[grpc.Channel] = field(default_factory=list)


@pytest.fixture(scope="module")
def plane(
    etcd_server: EtcdServer, pki: TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Plane]:
    root = PREFIX.encode()
    etcd_post(
        etcd_server, "/v3/kv/deleterange", {"key": b64(root), "range_end": b64(prefix_end(root))}
    )
    log_dir = tmp_path_factory.mktemp("fuzz")
    server = FleetServerProcess(etcd_server.endpoint, PREFIX, log_dir, pki).start()
    # These channels send whatever a test builds (fleet's own send no more than the
    # server takes), so that the server's own limits are what is tested.
    unlimited = [("grpc.max_send_message_length", -1)]
    api_channel = pki.client_transport().channel(server.address, unlimited)
    agent_channel = Transport(pki.agent(HOST)).channel(server.address, unlimited)
    try:
        with server.client() as client:
            seed = f"name: {APP}\nimage: fuzz/app:v1\nreplicas: 0\nlabels: {{a: b}}\n"
            client.apply(load_documents(seed, "seed.yaml"))
        baseline = _settled(etcd_server)
        assert f"{PREFIX}apps/{APP}" in baseline
        yield Plane(
            etcd_server,
            server,
            pb_grpc.FleetServiceStub(api_channel),
            pb_grpc.AgentServiceStub(agent_channel),
            api_channel,
            pki,
            baseline,
            [api_channel, agent_channel],
        )
    finally:
        for channel in (api_channel, agent_channel):
            channel.close()
        server.stop()
        print("fuzz outcomes:", dict(sorted(STATS.items())))
        print(server.process.log_tail(60))


def _settled(etcd: EtcdServer, timeout: float = 10.0) -> dict[str, bytes]:
    """The prefix's content once it stops changing (nothing written for 0.3 s)."""
    deadline = time.monotonic() + timeout
    last = etcd_prefix(etcd, PREFIX)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = etcd_prefix(etcd, PREFIX)
        if now == last:
            return now
        last = now
    raise AssertionError("etcd under the prefix kept changing")


# ---------------------------------------------------------------- the checks


def _allowed(key: str, value: bytes | None, baseline: dict[str, bytes]) -> bool:
    """Whether a change of ``key`` is one the legitimate agent's registration makes."""
    if key in {f"{PREFIX}{folder}/{HOST}" for folder in ("hosts", "alive", "status")}:
        return True
    if key.startswith(f"{PREFIX}reports/{HOST}/"):
        return True  # its containers' reports (its session's, like its status)
    if key == f"{PREFIX}leader":
        return True  # leadership is liveness (a lease), not desired state
    if key.startswith(f"{PREFIX}serving/"):
        return True  # the lease the server binds its hosts' keys to (liveness too)
    if key.startswith(f"{PREFIX}events/") and key not in baseline and value is not None:
        found = json.loads(value)  # a batch (a list) of events, or one event
        return all(_within_limits(e) for e in (found if isinstance(found, list) else [found]))
    return False


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _within_limits(event: dict[str, Any]) -> bool:
    """An event an agent made the control plane store: its own host's, cut to size, with
    no terminal controls, and no count but the gate's (issue #17: events are held to
    limits, whatever an agent sends)."""
    text = [str(event.get(f, "")) for f in ("message", "kind", "app", "time", "containerId")]
    return (
        event.get("host") == HOST
        and event.get("source") in ("agent", "controlplane")
        and len(str(event.get("message", ""))) <= 1024
        and len(str(event.get("kind", ""))) <= 64
        and not any(_CONTROL.search(t) or "\x1b" in t for t in text)
        and int(event.get("count", 0)) < 10**6
    )


def assert_etcd_unchanged(plane: Plane) -> None:
    now = etcd_prefix(plane.etcd, PREFIX)
    changed = {
        key: (plane.baseline.get(key), now.get(key))
        for key in plane.baseline.keys() | now.keys()
        if plane.baseline.get(key) != now.get(key)
        and not _allowed(key, now.get(key), plane.baseline)
    }
    assert not changed, f"etcd changed: {changed}"


def check_refusal(error: grpc.RpcError) -> None:
    code, details = error.code(), error.details() or ""  # type: ignore[attr-defined]
    assert code in REFUSALS, (code, details[:500])
    assert details.strip(), code
    assert not LEAK.search(QUOTED.sub("''", details)), details[:500]
    assert not details.startswith(TRANSPORT_STAND_INS), details[:500]


def call(family: str, rpc: Callable[[], object]) -> grpc.RpcError | None:
    """Make one call; a refusal is checked; the outcome is counted."""
    try:
        rpc()
    except grpc.RpcError as error:
        check_refusal(error)
        STATS[f"{family}: {error.code().name}"] += 1  # type: ignore[attr-defined]
        return error
    STATS[f"{family}: accepted"] += 1
    return None


def stream(
    plane: Plane, family: str, messages: Iterable[pb.AgentMessage], stub: Any = None
) -> tuple[list[str], grpc.RpcError | None]:
    """Run one agent stream to its end: (kinds of the server's messages, the refusal)."""
    kinds: list[str] = []
    error = call(
        family,
        lambda: kinds.extend(
            m.WhichOneof("kind")
            for m in (stub or plane.agent).Connect(iter(messages), timeout=CALL_TIMEOUT)
        ),
    )
    return kinds, error


def wait_disconnected(plane: Plane, host: str = HOST, timeout: float = 30.0) -> None:
    """Until the host's previous session is gone (its keys deleted)."""
    wait_until(
        lambda: not etcd_prefix(plane.etcd, f"{PREFIX}alive/{host}"),
        timeout,
        interval=0.02,
        what=f"{host}'s previous session to end",
    )


def assert_still_serving(plane: Plane) -> None:
    plane.server.process.check_running()
    apps = plane.api.GetApps(pb.GetRequest(), timeout=CALL_TIMEOUT).apps
    assert [a.name for a in apps] == [APP]


# ---------------------------------------------------------------- the API


def _spec_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc)


@API
@given(texts=st.lists(st.text(max_size=300), max_size=3), dry_run=st.booleans())
def test_apply_random_text(plane: Plane, texts: list[str], dry_run: bool) -> None:
    request = pb.ApplyRequest(specs_json=texts, dry_run=dry_run)
    error = call("apply random text", lambda: plane.api.Apply(request, timeout=CALL_TIMEOUT))
    if error is None and not dry_run:
        plane.baseline = _settled(plane.etcd)  # a valid app by chance: legitimately stored
    assert_etcd_unchanged(plane)


@API
@given(
    mutation=mutations(),
    name=st.sampled_from([APP, "fuzznew"]),
    company=st.sampled_from(["alone", "after a valid spec", "before a valid spec"]),
    dry_run=st.booleans(),
)
def test_apply_invalid_specs_is_refused_and_stores_nothing(
    plane: Plane, mutation: tuple[dict[str, Any], bool, str], name: str, company: str, dry_run: bool
) -> None:
    """Specs that must be refused, alone or next to a valid one (which must not be
    stored either: an apply is all or nothing)."""
    doc, must_refuse, what = mutation
    assume(must_refuse)
    # Refusals echo keys whole; beyond 16 KiB of details that is a known bug of its own
    # (test_long_inputs_get_their_own_refusal), kept out of this family.
    assume(len(json.dumps(doc)) < 12_000)
    if "name" in doc and doc["name"] == "web":
        doc["name"] = name
    valid = _spec_json({**VALID, "name": "fuzzvalid", "replicas": 0})
    specs = {
        "alone": [_spec_json(doc)],
        "after a valid spec": [valid, _spec_json(doc)],
        "before a valid spec": [_spec_json(doc), valid],
    }[company]
    request = pb.ApplyRequest(specs_json=specs, dry_run=dry_run)
    error = call("apply must-refuse", lambda: plane.api.Apply(request, timeout=CALL_TIMEOUT))
    assert error is not None, f"accepted: {what}"
    assert_etcd_unchanged(plane)


@API
@given(
    kind=st.sampled_from(["twice", "101 specs", "none", "truncated", "garbage", "not an object"]),
    dry_run=st.booleans(),
    cut=st.integers(0, 200),
)
def test_apply_malformed_requests_are_refused(
    plane: Plane, kind: str, dry_run: bool, cut: int
) -> None:
    valid = _spec_json({**VALID, "name": "fuzzvalid", "replicas": 0})
    specs = {
        "twice": [valid, valid],
        "101 specs": [_spec_json({**VALID, "name": f"a{i}", "replicas": 0}) for i in range(101)],
        "none": [],
        "truncated": [valid[: min(cut, len(valid) - 1)]],
        "garbage": [valid + "}" * (cut + 1)],
        "not an object": [json.dumps([json.loads(valid)] * (cut % 3))],
    }[kind]
    request = pb.ApplyRequest(specs_json=specs, dry_run=dry_run)
    error = call("apply malformed", lambda: plane.api.Apply(request, timeout=CALL_TIMEOUT))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, kind  # type: ignore[attr-defined]
    assert_etcd_unchanged(plane)


@API
@given(name=NAMES, replicas=U32)
def test_scale_random(plane: Plane, name: str, replicas: int) -> None:
    if name == APP:
        replicas = max(replicas, MAX_REPLICAS + 1)  # only ever a refused scale of the app
    request = pb.ScaleRequest(name=name, replicas=replicas)
    error = call("scale", lambda: plane.api.Scale(request, timeout=CALL_TIMEOUT))
    assert error is not None, (name, replicas)
    assert_etcd_unchanged(plane)


@API
@given(replicas=st.integers(MAX_REPLICAS + 1, 2**32 - 1))
def test_scale_beyond_the_limit_is_refused(plane: Plane, replicas: int) -> None:
    request = pb.ScaleRequest(name=APP, replicas=replicas)
    error = call("scale too far", lambda: plane.api.Scale(request, timeout=CALL_TIMEOUT))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert_etcd_unchanged(plane)


@API
@given(name=NAMES)
def test_delete_random(plane: Plane, name: str) -> None:
    assume(name != APP)
    request = pb.DeleteAppRequest(name=name)
    error = call("delete", lambda: plane.api.DeleteApp(request, timeout=CALL_TIMEOUT))
    assert error is not None, name
    assert_etcd_unchanged(plane)


@API
@given(
    method=st.sampled_from(["GetApps", "GetHosts", "GetContainers"]),
    name=NAMES,
    app=NAMES,
    host=NAMES,
)
def test_get_random(plane: Plane, method: str, name: str, app: str, host: str) -> None:
    request = pb.GetRequest(name=name, app=app, host=host)
    call(f"{method}", lambda: getattr(plane.api, method)(request, timeout=CALL_TIMEOUT))
    assert_etcd_unchanged(plane)


UNARY_METHODS = ["Apply", "Scale", "DeleteApp", "GetApps", "GetHosts", "GetContainers"]


@API
@given(method=st.sampled_from(UNARY_METHODS), body=st.binary(max_size=300))
def test_raw_bytes_to_each_method(plane: Plane, method: str, body: bytes) -> None:
    """Arbitrary bytes as the request body: valid protobuf or not."""
    rpc = plane.raw.unary_unary(f"/fleet.v1.FleetService/{method}")
    call(f"raw {method}", lambda: rpc(body, timeout=CALL_TIMEOUT))
    plane.server.process.check_running()
    assert_etcd_unchanged(plane)


# ---------------------------------------------------------------- the agent stream

FINITE = st.floats(allow_nan=False, allow_infinity=False)

statuses = st.builds(
    pb.ContainerStatus,
    app=TEXT | st.just(APP),
    slot=U32,
    revision=I64,
    spec_hash=TEXT,
    container_id=TEXT,
    name=TEXT,
    state=TEXT | st.sampled_from(["running", "exited", "created"]),
    exit_code=I32,
    started_at=TEXT,
    ports=st.lists(st.builds(pb.PortMapping, host_port=U32, container_port=U32, protocol=TEXT)),
    message=st.text(max_size=3000),
)
heartbeats = st.builds(
    pb.Heartbeat,
    usage=st.builds(pb.Resources, cpu=st.floats(0, 1e6), memory_bytes=I64),  # 0 or more
    containers=st.lists(statuses, max_size=6),
    applied_version=I64,
)
events = st.builds(
    pb.Event,
    time=TEXT,
    source=TEXT,
    host=TEXT,
    app=TEXT,
    slot=U32,
    container_id=TEXT,
    kind=TEXT,
    message=st.text(max_size=3000),
    exit_code=I32,
    count=st.integers(10**6, 2**32 - 1),  # a forged count: the control plane counts itself
)


def _register(**kwargs: Any) -> pb.AgentMessage:
    fields = {"host_id": HOST, "capacity": pb.Resources(cpu=2, memory_bytes=1 << 30), **kwargs}
    return pb.AgentMessage(register=pb.Register(**fields))


@AGENT
@given(
    first=st.one_of(
        st.builds(lambda h: pb.AgentMessage(heartbeat=h), heartbeats),
        st.builds(lambda e: pb.AgentMessage(events=pb.EventBatch(events=e)), st.lists(events)),
        st.just(pb.AgentMessage()),
        st.none(),
    ),
    then=st.lists(st.builds(lambda h: pb.AgentMessage(heartbeat=h), heartbeats), max_size=2),
)
def test_agent_stream_must_start_with_register(
    plane: Plane, first: pb.AgentMessage | None, then: list[pb.AgentMessage]
) -> None:
    wait_disconnected(plane)
    before = etcd_prefix(plane.etcd, PREFIX)
    messages = [] if first is None else [first, *then]
    kinds, error = stream(plane, "agent: no register first", messages)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, kinds  # type: ignore[attr-defined]
    assert kinds == []
    assert etcd_prefix(plane.etcd, PREFIX) == before  # not even the agent's own keys


@AGENT
@given(host_id=NAMES)
def test_register_as_another_host_is_refused(plane: Plane, host_id: str) -> None:
    assume(host_id != HOST)
    wait_disconnected(plane)
    before = etcd_prefix(plane.etcd, PREFIX)
    kinds, error = stream(plane, "agent: other host id", [_register(host_id=host_id)])
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED, kinds  # type: ignore[attr-defined]
    assert etcd_prefix(plane.etcd, PREFIX) == before


_MAP_TEXT = st.text(max_size=20).filter(lambda s: "\0" not in s)
_BREAKERS = [
    "too many",
    "NUL in a key",
    "NUL in a value",
    "empty key",
    "long key",
    "long value",
    "negative cpu",
    "negative memory",
]


@st.composite
def bad_registers(draw: st.DrawFn) -> tuple[pb.AgentMessage, str]:
    """A registration as HOST that breaks exactly one rule, with random other content."""
    labels = draw(st.dictionaries(_MAP_TEXT.filter(bool), _MAP_TEXT, max_size=5))
    facts = draw(st.dictionaries(_MAP_TEXT.filter(bool), _MAP_TEXT, max_size=5))
    cpu = draw(st.floats(0, 1e6))
    memory = draw(st.integers(0, 2**63 - 1))
    breaker = draw(st.sampled_from(_BREAKERS))
    target = labels if draw(st.booleans()) else facts
    if breaker == "too many":
        target.update({f"k{i}": "v" for i in range(draw(st.integers(65, 1000)))})
    elif breaker == "NUL in a key":
        target["a\0" + draw(TEXT)] = "v"
    elif breaker == "NUL in a value":
        target["k"] = draw(TEXT) + "\0"
    elif breaker == "empty key":
        target[""] = draw(TEXT)
    elif breaker == "long key":
        target["k" * draw(st.integers(254, 20_000))] = "v"
    elif breaker == "long value":
        target["k"] = "v" * draw(st.integers(1025, 20_000))
    elif breaker == "negative cpu":
        cpu = draw(st.floats(max_value=-1e-300, allow_nan=False))
    else:
        memory = draw(st.integers(-(2**63), -1))
    capacity = pb.Resources(cpu=cpu, memory_bytes=memory)
    return _register(capacity=capacity, labels=labels, facts=facts), breaker


@AGENT
@given(
    bad=bad_registers(),
    then=st.lists(st.builds(lambda h: pb.AgentMessage(heartbeat=h), heartbeats), max_size=2),
)
def test_invalid_registrations_are_refused(
    plane: Plane, bad: tuple[pb.AgentMessage, str], then: list[pb.AgentMessage]
) -> None:
    register, breaker = bad
    wait_disconnected(plane)
    before = etcd_prefix(plane.etcd, PREFIX)
    kinds, error = stream(plane, "agent: invalid register", [register, *then])
    assert error is not None, f"accepted a registration with {breaker}"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, breaker  # type: ignore[attr-defined]
    assert kinds == []
    assert etcd_prefix(plane.etcd, PREFIX) == before, breaker


@AGENT
@given(
    labels=st.dictionaries(TEXT, TEXT, max_size=70),
    facts=st.dictionaries(TEXT, st.text(max_size=1100), max_size=8),
    cpu=FINITE,
    memory=I64,
)
def test_random_registrations(
    plane: Plane, labels: dict[str, str], facts: dict[str, str], cpu: float, memory: int
) -> None:
    """Random maps and capacities: registered, or refused with a clean error."""
    wait_disconnected(plane)
    register = _register(
        capacity=pb.Resources(cpu=cpu, memory_bytes=memory), labels=labels, facts=facts
    )
    kinds, error = stream(plane, "agent: random register", [register])
    if error is None:
        assert kinds[:1] == ["registered"], kinds
    assert_etcd_unchanged(plane)


@AGENT
@given(
    batches=st.lists(
        st.one_of(
            st.builds(lambda h: pb.AgentMessage(heartbeat=h), heartbeats),
            st.builds(
                lambda e: pb.AgentMessage(events=pb.EventBatch(events=e)),
                st.lists(events, max_size=5),
            ),
        ),
        max_size=4,
    ),
    last=heartbeats,
    tail=st.sampled_from(["none", "register", "empty", "too many events"]),
)
def test_heartbeats_with_random_statuses(
    plane: Plane, batches: list[pb.AgentMessage], last: pb.Heartbeat, tail: str
) -> None:
    """A valid registration, then random heartbeats and events; while the stream is open,
    the API still answers reads over what was reported; a wrong message after them is
    refused."""
    wait_disconnected(plane)
    reads: list[str] = []

    def messages() -> Iterator[pb.AgentMessage]:
        yield _register()
        yield from batches
        yield pb.AgentMessage(heartbeat=last)
        deadline = time.monotonic() + 5
        while not etcd_prefix(plane.etcd, f"{PREFIX}status/{HOST}"):
            if time.monotonic() > deadline:
                reads.append("no status was stored")
                return
            time.sleep(0.01)
        for method in ("GetContainers", "GetApps", "GetHosts"):
            try:
                getattr(plane.api, method)(pb.GetRequest(), timeout=CALL_TIMEOUT)
            except grpc.RpcError as error:
                reads.append(f"{method}: {error.code()}: {error.details()}")  # type: ignore[attr-defined]
        if tail == "register":
            yield _register()
        elif tail == "empty":
            yield pb.AgentMessage()
        elif tail == "too many events":
            yield pb.AgentMessage(events=pb.EventBatch(events=[pb.Event(kind="x")] * 501))

    kinds, error = stream(plane, f"agent: heartbeats then {tail}", messages())
    assert reads == [], reads
    assert kinds[:1] == ["registered"], kinds
    if tail == "none":
        assert error is None, error.details()  # type: ignore[attr-defined]
    else:
        assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, tail  # type: ignore[attr-defined]
    assert_etcd_unchanged(plane)


# ---------------------------------------------------------------- oversized messages

BIG = "x" * (5 << 20)  # above the server's 4 MiB receive limit


def test_oversized_messages_are_refused(plane: Plane) -> None:
    rpcs: dict[str, Callable[[], object]] = {
        "Apply": lambda: plane.api.Apply(pb.ApplyRequest(specs_json=[BIG]), timeout=CALL_TIMEOUT),
        "Scale": lambda: plane.api.Scale(pb.ScaleRequest(name=BIG), timeout=CALL_TIMEOUT),
        "DeleteApp": lambda: plane.api.DeleteApp(
            pb.DeleteAppRequest(name=BIG), timeout=CALL_TIMEOUT
        ),
        "GetApps": lambda: plane.api.GetApps(pb.GetRequest(host=BIG), timeout=CALL_TIMEOUT),
    }
    for what, rpc in rpcs.items():
        error = call("oversized", rpc)
        assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, what  # type: ignore[attr-defined]
    wait_disconnected(plane)
    kinds, error = stream(plane, "oversized register", [_register(labels={"k": BIG})])
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, kinds  # type: ignore[attr-defined]
    wait_disconnected(plane)
    huge = pb.AgentMessage(heartbeat=pb.Heartbeat(containers=[pb.ContainerStatus(message=BIG)]))
    kinds, error = stream(plane, "oversized heartbeat", [_register(), huge])
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, kinds  # type: ignore[attr-defined]
    assert_still_serving(plane)
    assert_etcd_unchanged(plane)


# ------------------------------------------------------------ bugs the fuzzing found, since fixed

LONG = "x" * 100_000


def _long_inputs(plane: Plane) -> dict[str, tuple[grpc.StatusCode, Callable[[], object]]]:
    unknown_field = json.dumps({**VALID, "k" * 100_000: 1})
    many_unknown = json.dumps({**VALID, **{f"k{i}": 1 for i in range(50_000)}})
    return {
        "Scale name": (
            grpc.StatusCode.INVALID_ARGUMENT,
            lambda: plane.api.Scale(pb.ScaleRequest(name=LONG), timeout=CALL_TIMEOUT),
        ),
        "GetHosts name": (
            grpc.StatusCode.NOT_FOUND,
            lambda: plane.api.GetHosts(pb.GetRequest(name=LONG), timeout=CALL_TIMEOUT),
        ),
        "Apply unknown field": (
            grpc.StatusCode.INVALID_ARGUMENT,
            lambda: plane.api.Apply(pb.ApplyRequest(specs_json=[unknown_field]), timeout=30),
        ),
        "Apply many problems": (
            grpc.StatusCode.INVALID_ARGUMENT,
            lambda: plane.api.Apply(pb.ApplyRequest(specs_json=[many_unknown]), timeout=30),
        ),
        "Register host id": (
            grpc.StatusCode.PERMISSION_DENIED,
            lambda: list(
                plane.agent.Connect(iter([_register(host_id=LONG)]), timeout=CALL_TIMEOUT)
            ),
        ),
    }


@pytest.mark.parametrize(
    "what",
    [
        "Scale name",
        "GetHosts name",
        "Apply unknown field",
        "Apply many problems",
        "Register host id",
    ],
)
def test_long_inputs_get_their_own_refusal(plane: Plane, what: str) -> None:
    expected, rpc = _long_inputs(plane)[what]
    wait_disconnected(plane)
    with pytest.raises(grpc.RpcError) as raised:
        rpc()
    code, details = raised.value.code(), raised.value.details()  # type: ignore[attr-defined]
    assert_etcd_unchanged(plane)
    assert code == expected, details[:200]
    assert not details.startswith(TRANSPORT_STAND_INS), details[:200]


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x02\xff\xfe"], ids=["corrupt", "utf8"])
def test_malformed_protobuf_is_invalid_argument(plane: Plane, body: bytes) -> None:
    rpc = plane.raw.unary_unary("/fleet.v1.FleetService/Apply")
    with pytest.raises(grpc.RpcError) as raised:
        rpc(body, timeout=CALL_TIMEOUT)
    assert_etcd_unchanged(plane)
    check_refusal(raised.value)


NAN_HOST = "fuzznan"


@pytest.mark.parametrize("cpu", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_capacity_is_refused(plane: Plane, cpu: float) -> None:
    channel = Transport(plane.pki.agent(NAN_HOST)).channel(plane.server.address)
    key = f"{PREFIX}hosts/{NAN_HOST}".encode()
    try:
        register = _register(host_id=NAN_HOST, capacity=pb.Resources(cpu=cpu))
        _, error = stream(
            plane, "agent: non-finite capacity", [register], pb_grpc.AgentServiceStub(channel)
        )
        assert error is not None, (
            f"registered with cpu={cpu}: {etcd_prefix(plane.etcd, key.decode())}"
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    finally:
        channel.close()
        wait_disconnected(plane, NAN_HOST)
        etcd_post(plane.etcd, "/v3/kv/deleterange", {"key": b64(key)})  # what the bug wrote
        assert_etcd_unchanged(plane)


def test_non_finite_usage_is_refused(plane: Plane) -> None:
    wait_disconnected(plane)
    heartbeat = pb.AgentMessage(heartbeat=pb.Heartbeat(usage=pb.Resources(cpu=float("nan"))))
    kinds, error = stream(plane, "agent: non-finite usage", [_register(), heartbeat])
    assert_etcd_unchanged(plane)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, kinds  # type: ignore[attr-defined]


def test_oversized_report_is_refused_cleanly(plane: Plane) -> None:
    wait_disconnected(plane)
    containers = [pb.ContainerStatus(app="a", name="n" * 1500, container_id="c" * 1500)] * 1000
    heartbeat = pb.AgentMessage(heartbeat=pb.Heartbeat(containers=containers))
    assert 2 << 20 < heartbeat.ByteSize() < 4 << 20
    kinds, error = stream(plane, "agent: oversized report", [_register(), heartbeat])
    assert error is not None, kinds


def test_an_event_with_markup_and_escapes_is_stored_and_shown_as_text(plane: Plane) -> None:
    """One agent event with `[/boom]` in it crashed `fleet events` for every user, and
    escape sequences reached operators' terminals: the server stores the text without
    the sequences, and the CLI prints it as text."""
    wait_disconnected(plane)
    hostile = pb.Event(
        kind="die\x1b[2J", message="[/boom] \x1b]0;evil\x07\x1b[31mred\x1b[0m [bold]"
    )
    batch = pb.AgentMessage(events=pb.EventBatch(events=[hostile]))
    kinds, error = stream(plane, "agent: hostile event", [_register(), batch])
    assert error is None and kinds[:1] == ["registered"], kinds

    def stored() -> list[dict[str, Any]]:
        found = []
        for raw in etcd_prefix(plane.etcd, f"{PREFIX}events/").values():
            batch = json.loads(raw)
            found += [e for e in batch if "[/boom]" in e.get("message", "")]
        return found

    [event] = wait_until(stored, 10, what="the hostile event to be stored")
    assert (event["kind"], event["message"]) == ("die", "[/boom] red [bold]")
    result = plane.server.cli("events", "--host", HOST)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    [line] = [line for line in result.stdout.splitlines() if "[/boom]" in line]
    assert line.endswith(" die                [/boom] red [bold]"), line


def test_the_server_survived_and_etcd_is_unchanged(plane: Plane) -> None:
    """Last in the module: still running, still answering, nothing but HOST's keys moved."""
    wait_disconnected(plane)
    assert_still_serving(plane)
    hosts = plane.api.GetHosts(pb.GetRequest(), timeout=CALL_TIMEOUT).hosts
    assert {h.host_id for h in hosts} <= {HOST}  # registered (and since gone) by the fuzzing
    assert not any(h.connected for h in hosts)
    assert_etcd_unchanged(plane)
    assert {family: STATS[f"{family}: accepted"] for family in MUST_REFUSE} == dict.fromkeys(
        MUST_REFUSE, 0
    )
