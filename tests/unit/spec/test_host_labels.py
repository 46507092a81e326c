"""Who steers placement: the labels admins set against what a host claims of itself.

``fleet.hostlabels`` (what constraints see of a host, kubectl label's rules), the
registration as stored (a claimed capacity capped, unknown facts dropped, no admin label
in it), the scheduler's reasons for hosts that only claim a label, and the CLI's reading
of ``KEY=VALUE`` and ``KEY-``.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from fleet.cli.connection import Connection
from fleet.cli.hosts import label_changes
from fleet.cli.main import app
from fleet.controlplane.planner import plan_replicas
from fleet.controlplane.registration import HostLimits, host_record
from fleet.errors import FailedPrecondition, InvalidArgument
from fleet.hostlabels import AGENT_PREFIX, agent_claim, edit_labels, selectable
from fleet.proto import fleet_pb2 as pb
from fleet.scheduler import HostView, ReplicaRequest, Snapshot, schedule
from fleet.scheduler._cluster import Cluster
from fleet.scheduler._filters import Constraints
from fleet.spec import Constraint
from fleet.store import ClusterState, Versioned
from fleet.store.records import HostDrain, HostRecord, LiveRecord, ResourceAmounts
from tests.unit.cli.builders import HOSTILE, SHOWN, assert_clean
from tests.unit.controlplane.builders import NOW, add_app, add_host, spec

runner = CliRunner()

Gi = 1 << 30
Ti = 1 << 40


# ---------------------------------------------------------------- what constraints see


def test_selectable_labels_put_the_agents_own_under_agent() -> None:
    """Admin labels by name, the agent's as agent.<key>, facts fleet knows by name; an
    agent's label or an unknown fact never takes an admin label's name."""
    labels = selectable(
        admin={"tier": "secure"},
        agent={"tier": "public", "role": "edge", "os": "custom"},
        facts={"os": "linux", "arch": "x86_64", "tier": "secure", "gpu": "a100"},
    )
    assert labels == {
        "tier": "secure",
        "agent.tier": "public",
        "agent.role": "edge",
        "agent.os": "custom",
        "os": "linux",
        "arch": "x86_64",
    }
    assert selectable({}, {"tier": "secure"}, {"tier": "secure"}) == {"agent.tier": "secure"}


@pytest.mark.parametrize(
    ("constraint", "claim"),
    [
        ("role=edge", "agent.role=edge"),
        ("gpu", "agent.gpu"),
        ("role!=edge", None),  # a missing label meets it already
        ("agent.role=edge", None),  # on the claim itself
        ("arch=arm64", None),  # a fact
    ],
)
def test_agent_claim_of_a_constraint(constraint: str, claim: str | None) -> None:
    found = agent_claim(Constraint.model_validate(constraint))
    assert (str(found) if found else None) == claim


# ---------------------------------------------------------------- kubectl label's rules


def test_edit_sets_and_removes_labels() -> None:
    labels = edit_labels({"a": "1", "b": "2"}, {"c": "3"}, ["b"], overwrite=False, host="h1")
    assert labels == {"a": "1", "c": "3"}
    # Setting a label to the value it has, or removing one that is not there: no change.
    assert edit_labels(labels, {"a": "1"}, ["zz"], overwrite=False, host="h1") == labels
    assert edit_labels(labels, {"flag": ""}, [], overwrite=False, host="h1")["flag"] == ""


def test_changing_a_label_needs_overwrite() -> None:
    with pytest.raises(FailedPrecondition, match=r"h1 already has label tier=secure; --overwrite"):
        edit_labels({"tier": "secure"}, {"tier": "public"}, [], overwrite=False, host="h1")
    changed = edit_labels({"tier": "secure"}, {"tier": "public"}, [], overwrite=True, host="h1")
    assert changed == {"tier": "public"}


@pytest.mark.parametrize(
    ("put", "remove", "message"),
    [
        ({"agent.role": "edge"}, [], "keys starting with agent. are what hosts claim"),
        ({"arch": "arm64"}, [], "arch is a fact its agent reports"),
        ({"a b": "c"}, [], "expected KEY=VALUE"),
        ({"role": "a=b"}, [], "expected KEY=VALUE"),
        ({"role": "x y"}, [], "printable|expected KEY=VALUE"),
        ({"role": "\x1b[31mred"}, [], "printable"),
        ({"role": "v" * 254}, [], "at most 253"),
        ({"-role": "edge"}, [], "expected KEY=VALUE"),
        ({"role": "edge"}, ["role"], "both set and removed"),
        ({f"k{i}": "v" for i in range(65)}, [], "at most 64 labels"),
    ],
)
def test_labels_an_admin_may_not_set(put: dict[str, str], remove: list[str], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        edit_labels({}, put, remove, overwrite=True, host="h1")


def test_cli_reads_sets_and_removals() -> None:
    assert label_changes(["tier=secure", "disk-", "flag=", "url=a=b"]) == (
        {"tier": "secure", "flag": "", "url": "a=b"},
        ["disk"],
    )
    for bad in ("tier", "-", "=x"):
        with pytest.raises(InvalidArgument, match="KEY=VALUE to set a label, KEY- to remove"):
            label_changes([bad])


# ---------------------------------------------------------------- the registration


def register(cpu: float, memory: int, **labels: str) -> pb.Register:
    return pb.Register(
        host_id="h1",
        capacity=pb.Resources(cpu=cpu, memory_bytes=memory),
        labels=labels,
        facts={"os": "linux", "arch": "x86_64", "tier": "secure"},
    )


def test_a_claimed_capacity_is_capped_and_kept_beside() -> None:
    """Placement counts the claim capped to --max-host-cpus/--max-host-memory; the claim
    is kept to be shown; each limit applies alone; without limits the claim counts."""
    claim = register(1000, Ti, tier="secure")
    capped = host_record(claim, None, HostLimits(cpus=8, memory=16 * Gi))
    assert capped.capacity == ResourceAmounts(cpu=8, memory=16 * Gi)
    assert capped.reported == ResourceAmounts(cpu=1000, memory=Ti)
    small = host_record(register(2, Gi), None, HostLimits(cpus=8, memory=16 * Gi))
    assert small.capacity == small.reported == ResourceAmounts(cpu=2, memory=Gi)
    assert host_record(claim, None, HostLimits(cpus=8)).capacity == ResourceAmounts(
        cpu=8, memory=Ti
    )
    assert host_record(claim, None).capacity == ResourceAmounts(cpu=1000, memory=Ti)


def test_a_registration_holds_the_agents_claims_only() -> None:
    """Its labels are the agent's own (selected as agent.*), unknown facts are dropped,
    and the operator's state survives (admin labels have a key of their own)."""
    old = HostRecord(
        host_id="h1", capacity=ResourceAmounts(cpu=1), state="cordoned", registered_at="t0"
    )
    record = host_record(register(2, Gi, tier="secure"), old)
    assert record.labels == {"tier": "secure"}
    assert record.facts == {"os": "linux", "arch": "x86_64"}
    assert record.state == "cordoned"


def test_a_drain_in_progress_survives_its_agent_reconnecting() -> None:
    """A draining host's record holds its drain (deadline, --force): an agent that
    reconnected mid-drain used to drop it, and the host was then never found drained."""
    drain = HostDrain(started_at="t0", deadline_at="t9", force=True)
    old = HostRecord(
        host_id="h1",
        capacity=ResourceAmounts(cpu=1),
        state="draining",
        registered_at="t0",
        drain=drain,
    )
    record = host_record(register(2, Gi), old)
    assert (record.state, record.drain) == ("draining", drain)


def test_a_host_claiming_a_label_and_a_huge_capacity_attracts_nothing() -> None:
    """The attack of issue #17: a host registers with tier=secure and 1,000 cpus / 1 TiB.
    An app constrained to tier=secure stays pending with a reason naming the label and
    how to set it; one asking 500 cpus does not fit the capped capacity; once an admin
    labels the host, the secure app is placed there."""
    state = ClusterState(revision=1)
    record = host_record(register(1000, Ti, tier="secure"), None, HostLimits(8, 32 * Gi))
    state.hosts["h1"] = Versioned(record, 10)
    state.alive["h1"] = Versioned(LiveRecord(server="cp1", connected_at="t0"), 11)
    add_app(state, spec("constraints: [tier=secure]\n"))
    plan = plan_replicas(state, "web", NOW)
    assert plan.put == []
    assert plan.pending == {
        0: "0/1 hosts fit: 1 lack label tier=secure (their own --label is agent.tier; "
        "an admin sets tier with `fleet label host`)"
    }

    big = ClusterState(revision=1, hosts=dict(state.hosts), alive=dict(state.alive))
    add_app(big, spec("resources: {cpu: 500}\n"))
    assert plan_replicas(big, "web", NOW).pending == {0: "0/1 hosts fit: 1 insufficient cpu"}

    add_host(state, "h1", cpu=8, memory=32 * Gi, admin_labels={"tier": "secure"})
    [placed] = [r for r, _ in plan_replicas(state, "web", NOW).put]
    assert placed.host == "h1"


# ---------------------------------------------------------------- the scheduler


def request(*constraints: str) -> ReplicaRequest:
    return ReplicaRequest(
        "web", 0, 0.0, 0, constraints=tuple(Constraint.model_validate(c) for c in constraints)
    )


def test_constraints_tell_hosts_that_only_claim_a_label_apart() -> None:
    """A host whose agent claims role=edge (agent.role) fails role=edge with its own
    reason, counted before the plain one; agent.role=edge selects on the claim."""
    hosts = (
        HostView("a", 4, Gi, {"role": "edge"}),  # an admin's label
        HostView("b", 4, Gi, {f"{AGENT_PREFIX}role": "edge"}),  # its own claim
        HostView("c", 4, Gi, {f"{AGENT_PREFIX}role": "core"}),
        HostView("d", 4, Gi, {}),
    )
    rejections = Constraints().reject(Cluster(Snapshot(hosts), []), request("role=edge"))
    claimed = (
        "lack label role=edge (their own --label is agent.role; an admin sets role with "
        "`fleet label host`)"
    )
    assert [(reason, mask.tolist()) for reason, mask in rejections] == [
        (claimed, [False, True, False, False]),
        ("constraint role=edge not met", [False, True, True, True]),
    ]
    plan = schedule(Snapshot(hosts[1:]), [request("role=edge")])
    assert plan.explain("web", 0, 3) == (
        f"0/3 hosts fit: 2 constraint role=edge not met, 1 {claimed}"
    )
    assert [p.host for p in schedule(Snapshot(hosts), [request("role=edge")]).placements] == ["a"]
    on_claim = schedule(Snapshot(hosts), [request("agent.role=edge")])
    assert [p.host for p in on_claim.placements] == ["b"]


# ---------------------------------------------------------------- what the CLI shows


class LabelingClient:
    """A stand-in client: one host with an admin label, a hostile claim of its agent and
    a capped capacity; ``label_host`` records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, str], list[str], bool]] = []
        self.info = pb.HostInfo(
            host_id="h1",
            state="ready",
            connected=True,
            capacity=pb.Resources(cpu=8, memory_bytes=16 * Gi),
            reported_capacity=pb.Resources(cpu=1000, memory_bytes=Ti),
            labels={"tier": "secure"},
            agent_labels={"role": HOSTILE},
        )

    def __enter__(self) -> LabelingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def hosts(self, name: str = "") -> list[pb.HostInfo]:
        return [self.info]

    def host_list(self, name: str = "") -> pb.HostList:
        return pb.HostList(hosts=self.hosts(name))

    def events(self, **kwargs: Any) -> list[pb.Event]:
        return []

    def containers(self, **kwargs: Any) -> list[pb.ContainerInfo]:
        return []

    def label_host(
        self, host: str, labels: dict[str, str], remove: list[str], *, overwrite: bool
    ) -> pb.HostInfo:
        self.asked.append((host, labels, remove, overwrite))
        return self.info


def test_cli_shows_admin_and_agent_labels_apart_and_a_capped_claim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = LabelingClient()
    monkeypatch.setattr(Connection, "client", lambda self: client)
    result = runner.invoke(app, ["label", "host", "h1", "tier=secure", "disk-", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert client.asked == [("h1", {"tier": "secure"}, ["disk"], True)]
    assert_clean(result.stdout)
    assert result.stdout == f"host/h1 labeled: tier=secure (its agent claims agent.role={SHOWN})\n"

    wide = runner.invoke(app, ["get", "hosts", "-o", "wide"])
    assert wide.exit_code == 0, wide.output
    assert_clean(wide.stdout)
    header, row = wide.stdout.splitlines()
    assert "CLAIMED (CAPPED)" in header
    assert f"tier=secure,agent.role={SHOWN}" in row and "1000/1Ti" in row

    described = runner.invoke(app, ["describe", "host", "h1"])
    assert described.exit_code == 0, described.output
    assert_clean(described.stdout)
    assert "labels (set by admins, `fleet label host`): tier=secure\n" in described.stdout
    assert f"labels its agent claims (--label): agent.role={SHOWN}\n" in described.stdout
    assert "capacity: 8 cpus, 16Gi counted; its agent claims 1000 cpus, 1Ti" in described.stdout


def test_cli_label_refuses_what_it_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    client = LabelingClient()
    monkeypatch.setattr(Connection, "client", lambda self: client)
    for args in (["label", "app", "h1", "a=b"], ["label", "host", "h1", "tier"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
    assert client.asked == []
