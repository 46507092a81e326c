"""Tests of fleet.controlplane.appchanges: what an apply or a scale writes, and when the
generation and the revision rise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet._time import iso_at
from fleet.controlplane.appchanges import plan_apply, plan_scale
from fleet.controlplane.revisions import REVISION_HISTORY
from fleet.spec import AppSpec, load_documents
from fleet.store.records import AppRecord

BASE = """\
name: web
image: img:v1
replicas: 2
env: {GREETING: hello}
ports: ["8080"]
resources: {cpu: 0.5, memory: 64Mi}
constraints: [role=edge]
"""

NOW = 1_800_000_000.0  # the time the decisions are made at
STAMP = iso_at(NOW)  # the stamp they write


def app(text: str = BASE, **changes: str) -> AppSpec:
    """The spec of ``text`` with some top-level lines replaced (``replicas="3"``)."""
    lines = dict(line.split(": ", 1) for line in text.splitlines())
    lines.update(changes)
    [spec] = load_documents("\n".join(f"{k}: {v}" for k, v in lines.items()) + "\n", "app.yaml")
    return spec


def stored(spec: AppSpec | None = None, *, generation: int = 4, revision: int = 3) -> AppRecord:
    return AppRecord(
        spec=spec or app(),
        generation=generation,
        revision=revision,
        created_at="t0",
        updated_at="t1",
    )


def test_new_app_is_created_at_generation_and_revision_1() -> None:
    """A first apply writes generation 1, revision 1 and the revision record of its template."""
    spec = app()
    plan = plan_apply(None, spec, NOW)
    assert plan.action == "created"
    assert plan.record == AppRecord(
        spec=spec, generation=1, revision=1, created_at=STAMP, updated_at=STAMP
    )
    assert plan.fields == tuple(AppSpec.model_fields)
    assert plan.new_revision is not None
    assert plan.new_revision.app == "web"
    assert plan.new_revision.revision == 1
    assert plan.new_revision.template_hash == spec.template_hash()
    assert plan.new_revision.spec == spec
    assert plan.new_revision.created_at == STAMP
    assert plan.prune_revisions == ()


def test_same_spec_is_unchanged() -> None:
    """Applying the stored spec again writes nothing: same record, no revision, no fields."""
    old = stored()
    plan = plan_apply(old, app(), NOW, kept_revisions=range(1, 20))
    assert plan.action == "unchanged"
    assert plan.record == old
    assert plan.fields == ()
    assert plan.new_revision is None
    assert plan.prune_revisions == ()


def test_same_spec_written_differently_is_unchanged() -> None:
    """Equal after parsing is equal: "64Mi" and 67108864 are one memory size."""
    written = BASE.replace("64Mi", "67108864").replace('["8080"]', "[8080]")
    assert plan_apply(stored(), app(written), NOW).action == "unchanged"


def test_replicas_alone_bumps_generation_not_revision() -> None:
    """A change of replicas is a new generation of the same template."""
    old = stored()
    plan = plan_apply(old, app(replicas="5"), NOW, kept_revisions=[1, 2, 3])
    assert plan.action == "changed"
    assert plan.fields == ("replicas",)
    assert plan.record.generation == old.generation + 1
    assert plan.record.revision == old.revision
    assert plan.record.spec.replicas == 5
    assert (plan.record.created_at, plan.record.updated_at) == ("t0", STAMP)
    assert plan.new_revision is None
    assert plan.prune_revisions == ()


def test_constraints_alone_bumps_generation_not_revision() -> None:
    """Where replicas may run is no part of the container template either."""
    plan = plan_apply(stored(), app(constraints="[role=core]"), NOW)
    assert plan.fields == ("constraints",)
    assert (plan.record.generation, plan.record.revision) == (5, 3)
    assert plan.new_revision is None


def test_env_change_bumps_generation_and_revision() -> None:
    """A change of the template makes a new revision record, numbered after the last."""
    old = stored()
    spec = app(env="{GREETING: bonjour}")
    plan = plan_apply(old, spec, NOW, kept_revisions=[1, 2, 3])
    assert plan.action == "changed"
    assert plan.fields == ("env",)
    assert (plan.record.generation, plan.record.revision) == (5, 4)
    assert plan.new_revision is not None
    assert plan.new_revision.revision == 4
    assert plan.new_revision.spec == spec
    assert plan.new_revision.template_hash == spec.template_hash() != old.spec.template_hash()
    assert plan.new_revision.created_at == STAMP
    assert plan.record.created_at == "t0"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"image": "img:v2"}, "image"),
        ({"command": "[sleep, '1']"}, "command"),
        ({"ports": '["9090"]'}, "ports"),
        ({"resources": "{cpu: 1, memory: 64Mi}"}, "resources"),
        ({"restart": "on-failure:3"}, "restart"),
        ({"labels": "{team: web}"}, "labels"),
        ({"stop_grace_period": "30s"}, "stop_grace_period"),
    ],
)
def test_every_template_field_makes_a_revision(change: dict[str, str], field: str) -> None:
    """Each field of the container template, changed alone, makes a new revision."""
    plan = plan_apply(stored(), app(**change), NOW)
    assert plan.fields == (field,)
    assert plan.record.revision == 4
    assert plan.new_revision is not None


def test_fields_lists_every_changed_top_level_field_in_spec_order() -> None:
    """``fields`` names the changed top-level fields, in the order the spec declares them."""
    plan = plan_apply(stored(), app(resources="{cpu: 2}", replicas="9", image="img:v2"), NOW)
    assert plan.fields == ("image", "replicas", "resources")
    assert plan.record.revision == 4


def test_revision_history_is_pruned_to_the_newest() -> None:
    """With the default history, the oldest revisions go so that at most 10 stay."""
    plan = plan_apply(stored(revision=10), app(image="img:v2"), NOW, kept_revisions=range(1, 11))
    assert plan.record.revision == 11
    assert plan.prune_revisions == (1,)
    assert REVISION_HISTORY == 10


def test_pruning_catches_up_on_an_overlong_history() -> None:
    """Revisions kept beyond the history (say, after a lower setting) all go at once."""
    plan = plan_apply(
        stored(revision=12), app(image="img:v2"), NOW, kept_revisions=range(1, 13), history=10
    )
    assert plan.prune_revisions == (1, 2, 3)


def test_pruning_with_gaps_keeps_the_newest() -> None:
    """Kept revision numbers need not be contiguous; the lowest numbers go first."""
    plan = plan_apply(stored(revision=9), app(image="img:v2"), NOW, [9, 2, 5], history=2)
    assert plan.record.revision == 10
    assert plan.prune_revisions == (2, 5)


def test_short_history_is_not_pruned() -> None:
    """Nothing is pruned while the history has room."""
    plan = plan_apply(stored(revision=3), app(image="img:v2"), NOW, [1, 2, 3], history=10)
    assert plan.prune_revisions == ()


def test_no_pruning_without_a_new_revision() -> None:
    """A change that makes no revision prunes nothing, however long the history."""
    plan = plan_apply(stored(), app(replicas="7"), NOW, range(1, 30), history=2)
    assert plan.prune_revisions == ()


@settings(max_examples=100, deadline=None)
@given(
    st.sets(st.integers(1, 50), max_size=30),
    st.integers(1, 12),
)
def test_property_pruning_keeps_at_most_history(kept: set[int], history: int) -> None:
    """Pruning removes the oldest revisions beyond ``history``, never the new one nor the
    app's current one (its replicas run it until the rollout replaces them)."""
    last = max(kept, default=0)
    plan = plan_apply(stored(revision=last), app(image="img:v2"), NOW, kept, history)
    assert plan.new_revision is not None
    new = plan.new_revision.revision
    assert new == last + 1
    numbers = sorted(kept | {new})
    excess = numbers[: max(0, len(numbers) - history)]
    assert list(plan.prune_revisions) == [n for n in excess if n != last]
    assert set(plan.prune_revisions) <= kept


def test_revisions_in_use_are_never_pruned() -> None:
    """A revision a replica still runs, or a rollback would return to, is kept."""
    plan = plan_apply(
        stored(revision=5), app(image="img:v2"), NOW, [1, 2, 3, 4, 5], history=2, in_use=[2]
    )
    assert plan.prune_revisions == (1, 3, 4)


def test_new_revision_numbers_follow_every_kept_one() -> None:
    """After an undo to revision 2, the next change is revision 6, not 3 again."""
    plan = plan_apply(stored(revision=2), app(image="img:v9"), NOW, [1, 2, 3, 4, 5])
    assert plan.new_revision is not None
    assert (plan.new_revision.revision, plan.record.revision) == (6, 6)
    assert plan.new_revision.cause == "fleet apply"


def test_plan_scale_keeps_template_and_revision() -> None:
    """Scaling changes only replicas: generation + 1, revision and template unchanged."""
    old = stored()
    record = plan_scale(old, 7, NOW)
    assert record.spec == app(replicas="7")
    assert record.spec.template_hash() == old.spec.template_hash()
    assert (record.generation, record.revision) == (old.generation + 1, old.revision)
    assert (record.created_at, record.updated_at) == ("t0", STAMP)
    assert old.spec.replicas == 2  # the stored record is not changed


def test_plan_scale_to_zero() -> None:
    """Scaling to zero is a scale like any other."""
    record = plan_scale(stored(), 0, NOW)
    assert record.spec.replicas == 0
    assert record.generation == 5


def test_scale_then_apply_of_the_scaled_spec_is_unchanged() -> None:
    """After ``fleet scale``, applying a file with the same count changes nothing."""
    scaled = plan_scale(stored(), 7, NOW)
    assert plan_apply(scaled, app(replicas="7"), NOW + 60).action == "unchanged"
