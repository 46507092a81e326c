"""Secret scopes, the pure parts: which apps may use a secret, the refusal at apply (each
at its line), and the desired set that holds a replica outside a scope instead of
sending it the value; the agent makes no container of a held replica."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.reconcile import Create, plan
from fleet.agent.restarts import RestartBook
from fleet.controlplane.availability import trouble
from fleet.controlplane.desired import SpecCache, desired_containers
from fleet.errors import REQUEST, InvalidArgument, SpecProblem
from fleet.proto import fleet_pb2 as pb
from fleet.secrets import (
    MAX_SCOPE_APPS,
    SecretBox,
    scope_from,
    scope_refusals,
    withheld,
)
from fleet.spec import AppFile, load_documents
from fleet.store import ClusterState, Versioned
from fleet.store.records import ContainerReport, SecretRecord, SecretScope
from tests.unit.agent.builders import container
from tests.unit.controlplane.builders import add_app, add_replica, cluster

BOX = SecretBox(b"k" * 32)
APP = """\
name: {name}
image: img:v1
env:
  USER: billing
  DB_PASSWORD: {{secret: db}}
"""


class _CountingBox(SecretBox):
    """A secret box that counts what it opened."""

    def __init__(self) -> None:
        super().__init__(b"k" * 32)
        self.opened: list[str] = []

    def open(self, name: str, nonce: str, ciphertext: str) -> bytes:
        self.opened.append(name)
        return super().open(name, nonce, ciphertext)


def secret(
    name: str = "db", value: bytes = b"pw", scope: SecretScope | None = None
) -> SecretRecord:
    nonce, sealed = BOX.seal(name, value)
    return SecretRecord(
        name=name,
        key_id=BOX.key_id,
        nonce=nonce,
        ciphertext=sealed,
        version=1,
        created_at="t",
        updated_at="t",
        scope=scope,
    )


def billing_state(*apps: str, scope: SecretScope | None, mod: int = 30) -> ClusterState:
    """Apps (each one replica on h1) that use secret db, scoped by ``scope``."""
    state = cluster(("h1", 4, 8 << 30))
    for name in apps:
        [spec] = load_documents(APP.format(name=name), f"{name}.yaml")
        add_app(state, spec)
        add_replica(state, name, 0, "h1")
    state.secrets["db"] = Versioned(secret(scope=scope), mod)
    return state


# ------------------------------------------------------------------ the scope itself


def test_a_record_from_before_scopes_reads_and_lets_every_app_use_it() -> None:
    record = SecretRecord.model_validate_json(secret().model_dump_json(exclude={"scope"}))
    assert record.scope is None
    assert record.allows("anything")
    assert SecretRecord.model_validate_json(record.dump()) == record


def test_a_scope_allows_the_apps_it_names_or_all() -> None:
    scoped = secret(scope=SecretScope(apps=["a", "b"]))
    assert scoped.allows("a") and scoped.allows("b") and not scoped.allows("c")
    assert secret(scope=SecretScope(all_apps=True)).allows("c")


def test_an_asked_scope_is_checked_and_kept_sorted() -> None:
    assert scope_from(["b", "a", "b"], False) == SecretScope(apps=["a", "b"])
    assert scope_from([], True) == SecretScope(all_apps=True)
    with pytest.raises(InvalidArgument, match="--apps APP"):
        scope_from([], False)
    with pytest.raises(InvalidArgument, match="not both"):
        scope_from(["a"], True)
    with pytest.raises(InvalidArgument, match="app name"):
        scope_from(["../x"], False)
    with pytest.raises(InvalidArgument, match=f"at most {MAX_SCOPE_APPS}"):
        scope_from([f"a{i}" for i in range(MAX_SCOPE_APPS + 1)], False)


# ------------------------------------------------------------------ at apply


def test_apply_refuses_each_env_field_whose_secret_is_not_for_the_app() -> None:
    state = billing_state(scope=SecretScope(apps=["a"]))
    text = APP.format(name="b") + "  OTHER: {secret: db}\n"
    loaded = AppFile.parse(text, "b.yaml")
    [spec] = loaded.specs
    refused = scope_refusals(spec, state)
    assert [field for field, _ in refused] == ["env.DB_PASSWORD", "env.OTHER"]
    message = refused[0][1]
    assert message.startswith("app 'b': secret 'db' is not for this app (its scope: app a)")
    assert message.endswith("`fleet secrets scope db --apps a,b`")
    # The client puts each at its line, as it does the policy's refusals.
    problems = [SpecProblem(REQUEST, 1, field, None, m) for field, m in refused]
    assert [(p.source, p.line) for p in loaded.located(problems)] == [("b.yaml", 5), ("b.yaml", 6)]

    [allowed] = load_documents(APP.format(name="a"), "a.yaml")
    assert scope_refusals(allowed, state) == []
    for everyone in (None, SecretScope(all_apps=True)):
        assert scope_refusals(spec, billing_state(scope=everyone)) == []
    # A secret that does not exist is apply's NotFound, not a scope refusal.
    assert scope_refusals(spec, cluster()) == []


# ------------------------------------------------------------------ the desired set


def test_an_app_in_scope_gets_the_value_and_one_outside_is_held_without_it() -> None:
    state = billing_state("a", "b", scope=SecretScope(apps=["a"]))
    box = _CountingBox()
    a, b = desired_containers(state, "h1", box)
    assert (a.app, dict(a.env), a.held) == ("a", {"USER": "billing", "DB_PASSWORD": "pw"}, "")
    assert (b.app, dict(b.env)) == ("b", {"USER": "billing"})
    assert b.held.startswith("secret db is not for app 'b' (its scope: app a)")
    assert box.opened == ["db"]  # for a alone: never opened for an app outside its scope


def test_a_scope_narrowed_after_the_apply_holds_the_next_set() -> None:
    specs = SpecCache(BOX)
    state = billing_state("a", scope=SecretScope(apps=["a"]))
    [before] = desired_containers(state, "h1", BOX, specs)
    assert before.env["DB_PASSWORD"] == "pw" and not before.held
    # The admin narrows it: the record is written again, at a new mod revision.
    narrowed = secret(scope=SecretScope(apps=["other"]))
    state.secrets["db"] = Versioned(narrowed, 31)
    assert withheld(state.apps["a"].value.spec, state) is not None
    [after] = desired_containers(state, "h1", BOX, specs)
    assert "DB_PASSWORD" not in after.env and "not for app 'a'" in after.held
    # The same template: a container that runs keeps running (the agent matches on it).
    assert after.spec_hash == before.spec_hash


def test_a_missing_secret_holds_the_replica_too() -> None:
    state = billing_state("a", scope=None)
    del state.secrets["db"]
    [held] = desired_containers(state, "h1", BOX)
    assert held.held == "app 'a': secret 'db' not found"
    assert "DB_PASSWORD" not in held.env


# ------------------------------------------------------------------ the agent


def _spec(held: str = "") -> pb.ContainerSpec:
    return pb.ContainerSpec(
        app="web", slot=0, revision=1, spec_hash="aaaa1111", restart="always", held=held
    )


def test_the_agent_keeps_a_held_container_and_makes_none() -> None:
    for observed in ([], [container()]):
        result = plan([_spec("no")], observed, RestartBook(), 0.0)
        assert (result.tasks, result.look_again) == ([], None)
    assert plan([_spec()], [], RestartBook(), 0.0).tasks == [Create(_spec())]


@given(st.lists(st.booleans(), max_size=6), st.lists(st.booleans(), max_size=6))
def test_no_plan_creates_a_held_replica(held: list[bool], present: list[bool]) -> None:
    desired = [
        pb.ContainerSpec(app="web", slot=i, revision=1, spec_hash="h", held="x" if h else "")
        for i, h in enumerate(held)
    ]
    observed = [container(slot=i, spec_hash="h") for i, p in enumerate(present) if p]
    tasks = plan(desired, observed, RestartBook(), 0.0).tasks
    assert not [t for t in tasks if isinstance(t, Create) and t.spec.held]


def test_a_held_report_says_why() -> None:
    report = ContainerReport(
        app="b",
        slot=0,
        revision=1,
        spec_hash="",
        container_id="",
        name="",
        state="held",
        reason="held",
        message="secret db is not for",
    )
    assert trouble(report) == ("held", "replica 0 is held: secret db is not for")
