"""Registry logins and the mirror, the pure parts: which registry an image names (as
Docker reads it), where a login is kept, which desired containers carry it (only
those of apps whose image names the registry, and that its scope allows), that it is
never an env value, and where a Docker Hub image is pulled from first."""

from __future__ import annotations

import pytest

from fleet.controlplane.desired import desired_containers, desired_inputs
from fleet.errors import InvalidArgument
from fleet.registries import (
    check_mirror,
    check_registry,
    is_registry_secret,
    mirror_reference,
    registry_of,
    secret_name,
)
from fleet.secrets import SecretBox, scope_refusals, withheld
from fleet.spec import load_documents
from fleet.store import ClusterState, Versioned
from fleet.store.records import RegistryMirrorRecord, SecretRecord, SecretScope
from tests.unit.controlplane.builders import add_app, add_replica, cluster

BOX = SecretBox(b"k" * 32)
REGISTRY = "registry.example.com:5000"


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("busybox", "docker.io"),
        ("busybox:1.36", "docker.io"),
        ("library/busybox", "docker.io"),
        ("user/app:v1", "docker.io"),
        ("docker.io/user/app", "docker.io"),
        ("index.docker.io/user/app", "docker.io"),
        ("localhost/app", "localhost"),
        ("localhost:5000/app:v1", "localhost:5000"),
        ("10.0.0.5:5000/team/app@sha256:" + "a" * 64, "10.0.0.5:5000"),
        ("ghcr.io/org/app:v2", "ghcr.io"),
        ("Registry.Example.com/app", "registry.example.com"),
    ],
)
def test_the_registry_of_an_image_is_dockers(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_a_registry_address_is_checked_and_normalised() -> None:
    assert check_registry("https://Registry.Example.com:5000/") == REGISTRY
    assert check_registry("https://index.docker.io/v1/") == "docker.io"
    assert check_registry("docker.io") == "docker.io"
    for bad in ("", "registry.example.com/path", "user@host", "a b", "http://"):
        with pytest.raises(InvalidArgument, match="HOST\\[:PORT\\]"):
            check_registry(bad)
    assert check_mirror("http://10.0.0.9:5000") == "10.0.0.9:5000"
    with pytest.raises(InvalidArgument, match="another registry than Docker Hub"):
        check_mirror("registry-1.docker.io")


def test_a_login_has_a_reserved_secret_name() -> None:
    name = secret_name(REGISTRY)
    assert is_registry_secret(name) and name != secret_name("other:5000")
    assert not is_registry_secret("registry-db") and not is_registry_secret("db")


@pytest.mark.parametrize(
    ("image", "pulled"),
    [
        ("busybox:1.36", "m:5000/library/busybox:1.36"),
        ("busybox", "m:5000/library/busybox"),
        ("user/app:v1", "m:5000/user/app:v1"),
        ("docker.io/user/app:v1", "m:5000/user/app:v1"),
        ("docker.io/busybox", "m:5000/library/busybox"),
        ("ghcr.io/org/app:v2", None),  # names its registry: pulled from it
        ("busybox@sha256:" + "a" * 64, None),  # a digest cannot be re-tagged
    ],
)
def test_only_docker_hub_images_go_through_the_mirror(image: str, pulled: str | None) -> None:
    assert mirror_reference(image, "m:5000") == pulled
    assert mirror_reference(image, "") is None


# ------------------------------------------------------------------ desired sets


def login(registry: str = REGISTRY, scope: SecretScope | None = None) -> SecretRecord:
    name = secret_name(registry)
    nonce, sealed = BOX.seal(name, b"hunter2")
    return SecretRecord(
        name=name,
        key_id=BOX.key_id,
        nonce=nonce,
        ciphertext=sealed,
        version=1,
        created_at="t",
        updated_at="t",
        scope=scope or SecretScope(all_apps=True),
        registry=registry,
        username="deploy",
    )


def pool(scope: SecretScope | None = None) -> ClusterState:
    """private (h1) and other (h1) pull from REGISTRY, hub (h2) from Docker Hub."""
    state = cluster(("h1", 4, 8 << 30), ("h2", 4, 8 << 30))
    for name, image, host in (
        ("private", f"{REGISTRY}/team/app:v1", "h1"),
        ("other", f"{REGISTRY}/team/other:v1", "h1"),
        ("hub", "busybox:1.36", "h2"),
    ):
        [spec] = load_documents(f"name: {name}\nimage: {image}\n", f"{name}.yaml")
        add_app(state, spec)
        add_replica(state, name, 0, host)
    record = login(scope=scope)
    state.secrets[record.name] = Versioned(record, 40)
    return state


def _auth(state: ClusterState, host: str) -> dict[str, tuple[str, str, str]]:
    return {
        c.app: (c.registry_auth.registry, c.registry_auth.username, c.registry_auth.password)
        for c in desired_containers(state, host, BOX)
        if c.HasField("registry_auth")
    }


def test_only_the_containers_pulling_from_the_registry_carry_its_login() -> None:
    state = pool()
    expected = (REGISTRY, "deploy", "hunter2")
    assert _auth(state, "h1") == {"private": expected, "other": expected}
    assert _auth(state, "h2") == {}  # runs nothing from that registry: never sent it
    assert all(not c.env for c in desired_containers(state, "h1", BOX))


def test_a_login_scoped_to_apps_is_sent_only_with_theirs() -> None:
    state = pool(SecretScope(apps=["private"]))
    assert list(_auth(state, "h1")) == ["private"]


def test_a_login_changing_changes_the_inputs_of_the_hosts_set() -> None:
    state = pool()
    before = desired_inputs(state, "h1")
    stored = state.secrets[secret_name(REGISTRY)]
    state.secrets[secret_name(REGISTRY)] = Versioned(stored.value, 41)
    assert desired_inputs(state, "h1") != before
    mirrored = desired_inputs(state, "h2")
    state.registry_mirror = Versioned(RegistryMirrorRecord(mirror="m:5000", set_at="t"), 50)
    assert desired_inputs(state, "h2") != mirrored


def test_a_login_is_never_an_env_value() -> None:
    state = pool()
    name = secret_name(REGISTRY)
    [spec] = load_documents(
        f"name: leak\nimage: busybox\nenv: {{P: {{secret: {name}}}}}\n", "leak.yaml"
    )
    [(field, message)] = scope_refusals(spec, state)
    assert field == "env.P" and "used for pulls only" in message
    assert withheld(spec, state) is not None  # held, had it been stored before the login
