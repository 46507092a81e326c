"""Tests of the revision a container is reported as (``fleet.agent.report``): two
revisions of an app may share a template, and a container kept for its template must
count as the revision the desired set places it as (the soak found a move that never
finished: a container labelled revision 9 kept for a slot placed at revision 7)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fleet.agent.events import EventQueue
from fleet.agent.health import Prober
from fleet.agent.held import HeldReplicas
from fleet.agent.report import containers_digest, desired_revisions, heartbeat, reported_revision
from fleet.agent.restarts import Backoff, RestartBook
from fleet.agent.runtime import ObservedContainer
from fleet.agent.state import HostState
from fleet.proto import fleet_pb2 as pb
from tests.unit.agent.builders import NOW, container, spec


def _spec(revision: int, spec_hash: str = "aaaa1111", slot: int = 0) -> pb.ContainerSpec:
    made = spec(slot=slot, spec_hash=spec_hash)
    made.revision = revision
    return made


def _labelled(revision: int, spec_hash: str = "aaaa1111") -> ObservedContainer:
    return dataclasses.replace(container(spec_hash=spec_hash), revision=revision)


def test_a_container_kept_for_its_template_is_reported_as_the_placed_revision() -> None:
    wanted = desired_revisions([_spec(7)])
    assert reported_revision(_labelled(9), wanted) == 7


def test_its_own_revision_when_nothing_wants_its_template() -> None:
    assert reported_revision(_labelled(9), desired_revisions([_spec(7, "bbbb2222")])) == 9
    assert reported_revision(_labelled(9), desired_revisions(None)) == 9


def test_the_newest_wanted_revision_of_its_template() -> None:
    assert reported_revision(_labelled(9), desired_revisions([_spec(7), _spec(9)])) == 9
    # A move from 8 to 12 of one template, its replacement on this same host: the one
    # container counts as the replacement, or the move never finishes.
    assert reported_revision(_labelled(8), desired_revisions([_spec(8), _spec(12)])) == 12


@given(st.integers(1, 50), st.sets(st.integers(1, 50), max_size=4))
def test_always_a_wanted_revision_of_its_template_when_there_is_one(
    label: int, revisions: set[int]
) -> None:
    wanted = desired_revisions([_spec(r) for r in revisions])
    got = reported_revision(_labelled(label), wanted)
    assert got == (max(revisions) if revisions else label)


def _status(**fields: object) -> pb.ContainerStatus:
    base: dict[str, object] = {
        "app": "web",
        "slot": 1,
        "revision": 2,
        "container_id": "c1",
        "state": "running",
        "cpu": 0.5,
        "memory_bytes": 100,
    }
    return pb.ContainerStatus(**{**base, **fields})  # type: ignore[arg-type]


def test_the_containers_digest_leaves_the_live_usage_out() -> None:
    busy, idle = _status(cpu=3.0, memory_bytes=9 << 20), _status(cpu=0.0, memory_bytes=0)
    assert containers_digest([busy]) == containers_digest([idle])
    assert (busy.cpu, busy.memory_bytes) == (3.0, 9 << 20)  # put back
    assert len(containers_digest([busy])) == 16


@given(
    st.sampled_from(
        [
            {"state": "exited"},
            {"health": "healthy"},
            {"ready_since": "2026-01-02T03:04:05Z"},
            {"restarts": 1},
            {"memory_limit": 1 << 30},
            {"revision": 3},
            {"message": "x"},
        ]
    )
)
def test_the_containers_digest_changes_with_anything_else(change: dict[str, object]) -> None:
    assert containers_digest([_status()]) != containers_digest([_status(**change)])


def test_the_containers_digest_tells_lists_apart() -> None:
    one, two = _status(slot=1), _status(slot=2)
    digests = {
        containers_digest(found) for found in ([], [one], [two], [one, two], [two, one], [one, one])
    }
    assert len(digests) == 6


def test_a_heartbeat_carries_the_digest_of_its_containers() -> None:
    state = HostState(events=EventQueue(), held=HeldReplicas(EventQueue()), restarts=RestartBook())
    state.observed = [
        container("web", 0, started_epoch=NOW),
        container("api", 1, state="exited", finished_at=NOW),
    ]
    state.usage.per_container["web-0-aaaa1111-running"] = (0.5, 100 << 20, 1 << 30)
    prober = Prober(lambda: None)
    beat = heartbeat(state, prober, Backoff(), NOW).heartbeat
    assert len(beat.containers) == 2 and beat.containers[0].cpu == 0.5
    assert beat.containers_digest == containers_digest(beat.containers)
    state.usage.per_container["web-0-aaaa1111-running"] = (1.5, 200 << 20, 1 << 30)
    busier = heartbeat(state, prober, Backoff(), NOW + 5).heartbeat
    assert busier.containers_digest == beat.containers_digest  # the usage alone changed
    state.observed[1] = container("api", 1, started_epoch=NOW + 4)
    assert heartbeat(state, prober, Backoff(), NOW + 6).heartbeat.containers_digest not in (
        beat.containers_digest,
        b"",
    )


def test_a_container_running_again_after_restarts_is_reported_with_the_exit_it_restarted_from(
    tmp_path: Path,
) -> None:
    """Docker clears the exit code when it starts a container again: a crash loop caught
    while the container is up would read "exit code 0" (CI saw a rollback's cause say so
    of a command that exits 1)."""
    book = RestartBook()
    crashed = container("web", 0, state="exited", exit_code=1, finished_at=NOW)
    book.record(crashed, Backoff())
    state = HostState(events=EventQueue(), held=HeldReplicas(EventQueue()), restarts=book)
    up_again = dataclasses.replace(crashed, state="running", exit_code=0, started_epoch=NOW + 1)
    never_restarted = container("api", 0, started_epoch=NOW)
    state.observed = [up_again, never_restarted]
    beat = heartbeat(state, Prober(lambda: None), Backoff(), NOW + 2).heartbeat
    assert [(c.restarts, c.exit_code) for c in beat.containers] == [(1, 1), (0, 0)]
    # Stopped again, Docker's own exit code stands.
    state.observed = [dataclasses.replace(crashed, exit_code=2)]
    beat = heartbeat(state, Prober(lambda: None), Backoff(), NOW + 3).heartbeat
    assert beat.containers[0].exit_code == 2
    # The exit survives an agent restart with the counts; an older agent's file has none.
    path = tmp_path / "restarts.json"
    book.save(path)
    assert RestartBook.load(path).last_exit(crashed.container_id) == 1
    path.write_text(json.dumps({"counts": {crashed.container_id: 1}, "streaks": {}}))
    assert RestartBook.load(path).last_exit(crashed.container_id) == 0
    book.forget_except([])
    assert book.last_exit(crashed.container_id) == 0
