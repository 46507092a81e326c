"""Bind mount sources: their form (pure), what they lead to on this host's filesystem (in
a temporary folder), and the agent refusing a folder swapped for a symlink between its
check and Docker's create (a simulated runtime)."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fleet.agent import Agent, AgentConfig
from fleet.hostpaths import form_problem, symlink_problem
from fleet.policy import Policy, Privileges, host_violations, prefix_warnings, violations
from fleet.proto import fleet_pb2 as pb
from fleet.testing.hollow import HollowRuntime
from fleet.transport import Transport


def test_form_problems_say_what_to_write_instead() -> None:
    assert form_problem("/srv/data/app") is None
    assert form_problem("/") is None
    assert form_problem("srv/data") == "is not an absolute path: start it with /"
    assert form_problem("/srv/data/../../etc") == "contains '..': name the folder itself"
    for path in ("/srv//data", "//srv/data", "/srv/./data", "/srv/data/", "/srv/data/."):
        assert form_problem(path) == (
            "is not in normal form (no '.', '//' or trailing '/'): write /srv/data"
        )
    assert form_problem("/srv/da\0ta") == "contains a NUL character"


@given(st.lists(st.sampled_from(["a", "b.c", ".", "..", "", "..."]), max_size=6))
def test_a_path_has_no_form_problem_exactly_when_each_part_names_a_folder(
    parts: list[str],
) -> None:
    path = "/" + "/".join(parts)
    plain = all(part not in ("", ".", "..") for part in parts)
    assert (form_problem(path) is None) == (plain or path == "/")
    if form_problem(path) is None:  # and Docker, which cleans it, mounts that very path
        assert posixpath.normpath(path) == path


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    root = Path(os.path.realpath(tmp_path))
    (root / "data").mkdir()
    (root / "outside").mkdir()
    return root / "data", root / "outside"


def test_a_path_without_symlinks_is_its_own_real_path(tmp_path: Path) -> None:
    allowed, _ = _folders(tmp_path)
    (allowed / "app").mkdir()
    (allowed / "app" / "file").write_text("x")
    assert symlink_problem(str(allowed / "app")) is None
    assert symlink_problem(str(allowed / "app" / "file")) is None
    # Missing parts are made by Docker as folders: what exists above them was checked.
    assert symlink_problem(str(allowed / "new" / "sub")) is None


def test_the_first_symlink_in_a_path_is_named_with_where_it_leads(tmp_path: Path) -> None:
    allowed, outside = _folders(tmp_path)
    (allowed / "escape").symlink_to("/")
    (allowed / "near").symlink_to("../outside")
    (allowed / "dangling").symlink_to(outside / "not-yet")
    assert symlink_problem(f"{allowed}/escape") == "it is a symlink to /"
    assert symlink_problem(f"{allowed}/escape/etc") == f"{allowed}/escape is a symlink to /"
    assert symlink_problem(f"{allowed}/near") == f"it is a symlink to {outside}"
    assert symlink_problem(f"{allowed}/dangling") == f"it is a symlink to {outside}/not-yet"


def test_the_agent_refuses_a_symlink_the_words_of_the_policy_allow(tmp_path: Path) -> None:
    allowed, _ = _folders(tmp_path)
    (allowed / "escape").symlink_to("/")
    (allowed / "ok").mkdir()
    policy = Policy(allow_bind_mounts=[str(allowed)])
    asked = Privileges(bind_mounts=(f"{allowed}/escape", f"{allowed}/ok", "/etc"))
    assert violations(asked, policy) == ["bind mount of /etc"]
    assert host_violations(asked, policy) == [
        "bind mount of /etc",
        f"bind mount of {allowed}/escape (it is a symlink to /; "
        "bind its target explicitly if that is allowed)",
    ]


def test_a_path_out_of_normal_form_is_refused_whatever_its_prefix() -> None:
    # A compromised control plane may send what apply refuses; Docker would clean it to /etc.
    asked = Privileges(bind_mounts=("/srv/data/../../etc",))
    assert violations(asked, Policy(allow_bind_mounts=["/srv/data"])) == [
        "bind mount of /srv/data/../../etc (it contains '..': name the folder itself)"
    ]


def test_a_prefix_that_is_a_symlink_allows_nothing_and_the_agent_says_so(tmp_path: Path) -> None:
    allowed, _ = _folders(tmp_path)
    link = allowed.parent / "link"
    link.symlink_to(allowed)
    policy = Policy(allow_bind_mounts=[str(link), f"{allowed}/", "/srv/../etc"])
    assert prefix_warnings(policy) == [
        f"--allow-bind {link} allows nothing: it is a symlink to {allowed}; allow its real path",
        "--allow-bind /srv/../etc allows nothing: it contains '..': name the folder itself",
    ]
    assert host_violations(Privileges(bind_mounts=(f"{link}/app",)), policy) == [
        f"bind mount of {link}/app ({link} is a symlink to {allowed}; "
        "bind its target explicitly if that is allowed)"
    ]


class _SwappingRuntime(HollowRuntime):
    """Someone who can write in the allowed folder swaps the mounted folder for a symlink
    between the agent's first check and Docker's create."""

    folder: Path | None = None
    target: Path | None = None

    def create(self, spec: pb.ContainerSpec) -> str:
        assert self.folder is not None and self.target is not None
        self.folder.rename(self.folder.with_name("moved"))
        self.folder.symlink_to(self.target)
        container_id = super().create(spec)
        self.recorded = {container_id: tuple(v.split(":")[0] for v in spec.volumes)}
        return container_id

    def bind_sources(self, container_id: str) -> tuple[str, ...]:
        return self.recorded[container_id]


async def test_a_swap_after_the_check_is_caught_before_the_start(tmp_path: Path) -> None:
    allowed, outside = _folders(tmp_path)
    (allowed / "ok").mkdir()
    runtime = _SwappingRuntime(start_delay=0.0)
    runtime.folder, runtime.target = allowed / "ok", outside
    config = AgentConfig(
        servers=["127.0.0.1:1"],
        host_id="h1",
        transport=Transport(None),
        policy=Policy(allow_bind_mounts=[str(allowed)]),
    )
    agent = Agent(config, runtime)
    spec = pb.ContainerSpec(
        app="keeper", slot=0, revision=1, spec_hash="abc", image="img", restart="always"
    )
    spec.volumes.append(f"{allowed}/ok:/ok")
    agent.state.desired = [spec]
    await agent.reconciler.reconcile_once()
    assert runtime.list_containers() == []  # created, then removed before any start
    held = agent.state.held.replicas[("keeper", 0, 1)]
    assert (held.state, held.message) == (
        "refused",
        f"refused by this host's policy: bind mount of {allowed}/ok (it is a symlink to "
        f"{outside}; bind its target explicitly if that is allowed)",
    )
