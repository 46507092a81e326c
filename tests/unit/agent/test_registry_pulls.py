"""How the Docker runtime pulls (fleet.registries' rules), against a fake docker-py
client that records the calls: a login goes in as auth_config, a Docker Hub image
goes through the mirror first and keeps its own name, and Docker Hub is the fallback
when the mirror fails, with both failures in the message. (The real pulls are in
tests/integration/test_private_registries.py; Docker Hub is unreachable there, and
its DNS lookup takes 20 s to fail, so the fallback is shown here.)"""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest

from fleet.agent.dockerruntime import DockerRuntime
from fleet.errors import PullFailed
from fleet.proto import fleet_pb2 as pb


class _Images:
    def __init__(self, present: set[str], missing: set[str]) -> None:
        self.present, self.missing = present, missing
        self.pulls: list[tuple[str, str, Any]] = []

    def get(self, ref: str) -> object:
        if ref in self.present:
            return object()
        raise docker.errors.ImageNotFound(f"No such image: {ref}")

    def pull(self, repository: str, tag: str, auth_config: Any = None) -> None:
        self.pulls.append((repository, tag, auth_config))
        if f"{repository}:{tag}" in self.missing:
            raise docker.errors.NotFound("manifest unknown", explanation="manifest unknown")


class _Api:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def tag(self, image: str, repository: str, tag: str) -> bool:
        self.calls.append(("tag", image, repository, tag))
        return True

    def remove_image(self, image: str, noprune: bool = False) -> None:
        self.calls.append(("untag", image, str(noprune)))


class _Client:
    def __init__(self, present: set[str] = frozenset(), missing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.images = _Images(set(present), set(missing))
        self.api = _Api()


def runtime(client: _Client) -> DockerRuntime:
    made = DockerRuntime("unix:///nowhere")
    made._client = client  # type: ignore[assignment]
    return made


def test_a_login_is_the_pulls_auth_config() -> None:
    client = _Client()
    auth = pb.RegistryAuth(registry="r:5000", username="u", password="p")
    assert runtime(client).ensure_image("r:5000/team/app:v1", auth, mirror="m:5000")
    # (An image naming its registry never goes through the mirror.)
    assert client.images.pulls == [("r:5000/team/app", "v1", {"username": "u", "password": "p"})]


def test_an_image_present_is_not_pulled() -> None:
    client = _Client(present={"busybox:1.36"})
    assert not runtime(client).ensure_image("busybox:1.36", None, "m:5000")
    assert client.images.pulls == []


def test_a_hub_image_comes_through_the_mirror_under_its_own_name() -> None:
    client = _Client()
    assert runtime(client).ensure_image("busybox:1.36", None, "m:5000")
    assert client.images.pulls == [("m:5000/library/busybox", "1.36", None)]
    assert client.api.calls == [
        ("tag", "m:5000/library/busybox:1.36", "busybox", "1.36"),
        ("untag", "m:5000/library/busybox:1.36", "True"),
    ]


def test_docker_hub_is_the_fallback_and_a_double_failure_names_both() -> None:
    client = _Client(missing={"m:5000/user/app:v1"})
    assert runtime(client).ensure_image("user/app:v1", None, "m:5000")
    assert [p[0] for p in client.images.pulls] == ["m:5000/user/app", "user/app"]

    both = _Client(missing={"m:5000/user/app:v1", "user/app:v1"})
    with pytest.raises(PullFailed) as failed:
        runtime(both).ensure_image("user/app:v1", None, "m:5000")
    assert failed.value.reason == "image-not-found"
    assert "image user/app:v1 not found" in str(failed.value)
    assert "the mirror m:5000 failed first: image m:5000/user/app:v1 not found" in str(failed.value)
